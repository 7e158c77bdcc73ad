"""Outbound HTTP clients for the SMS, email and AI providers; no database, no queue."""

from app.providers.ai import AiClient, Score
from app.providers.email import EmailClient, EmailPage, EmailReply
from app.providers.errors import (
    MalformedResponse,
    Permanent,
    ProviderError,
    RateLimited,
    Transient,
)
from app.providers.http import parse_retry_after, request_json
from app.providers.sms import SmsClient, SmsMessage, SmsPage, SmsProvider

__all__ = [
    "AiClient",
    "EmailClient",
    "EmailPage",
    "EmailReply",
    "MalformedResponse",
    "Permanent",
    "ProviderError",
    "RateLimited",
    "Score",
    "SmsClient",
    "SmsMessage",
    "SmsPage",
    "SmsProvider",
    "Transient",
    "parse_retry_after",
    "request_json",
]
