"""Kinds of provider account: per channel, the fields an account holds and which are secret.

A kind is a pydantic model. Its `SecretStr` fields are the secret ones: encrypted at rest and
shown only by their last characters; the others are stored and shown as given. A kind also
builds the provider client its channel's jobs call. Another provider's API (its own client and
fields) is one more entry in KINDS.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from app.providers import AiClient, EmailClient, SmsClient
from app.providers.http import ProviderClient
from app.providers.resend import DEFAULT_API_URL as RESEND_API_URL
from app.providers.resend import ResendClient
from app.providers.twilio import DEFAULT_API_URL as TWILIO_API_URL
from app.providers.twilio import TwilioSms as TwilioSmsClient
from app.settings import check_email_address, check_twilio_sender, check_webhook_secret
from app.storable import StorableStr

ProviderChannel = Literal["sms", "email", "ai"]
PROVIDER_CHANNELS: tuple[ProviderChannel, ...] = get_args(ProviderChannel)

MAX_URL_CHARS = 2048
MAX_SECRET_CHARS = 4096


def _provider_url(value: str) -> str:
    # Messages never quote the value: a URL pasted with credentials in it is a secret.
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must be an http:// or https:// URL without spaces")
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != -1
    except ValueError:  # a malformed host or port
        valid = False
    if not valid:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (the key goes in `key`)")
    return value.rstrip("/")


def _bearer_safe(value: SecretStr) -> SecretStr:
    # It travels in an Authorization header: visible ASCII only.
    if not all("!" <= ch <= "~" for ch in value.get_secret_value()):
        raise ValueError("must be visible ASCII characters without spaces")
    return value


def _webhook_secret(value: SecretStr) -> SecretStr:
    check_webhook_secret(value.get_secret_value())
    return value


EmailAddress = Annotated[
    str,
    StringConstraints(min_length=3, max_length=320),
    AfterValidator(check_email_address),
]
ProviderUrl = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_URL_CHARS), AfterValidator(_provider_url)
]
Secret = Annotated[
    SecretStr, Field(min_length=1, max_length=MAX_SECRET_CHARS), AfterValidator(_bearer_safe)
]
WebhookSecret = Annotated[
    SecretStr, Field(min_length=1, max_length=MAX_SECRET_CHARS), AfterValidator(_webhook_secret)
]


def _holds_secret(annotation: Any) -> bool:
    """Whether a field's type is SecretStr, however wrapped (Annotated, Optional, a union)."""
    return annotation is SecretStr or any(_holds_secret(arg) for arg in get_args(annotation))


class AccountKind(BaseModel):
    """One kind of account: its fields, and the client its channel's jobs call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Calls a minute this account allows, shared by every runner and worker; unset: unlimited.
    rate_per_min: float | None = Field(None, gt=0, le=600_000)

    @abstractmethod
    def client(self, http: httpx.AsyncClient, timeout_s: float) -> ProviderClient:
        """The provider client for this account, on the process's shared HTTP client."""

    @classmethod
    def secret_names(cls) -> tuple[str, ...]:
        """The fields that are secret: those typed SecretStr (optional ones included)."""
        return tuple(
            name for name, field in cls.model_fields.items() if _holds_secret(field.annotation)
        )

    def signing_secret(self) -> str | None:
        """The secret that signs this client's webhook deliveries, if the kind has one."""
        return None

    def public_values(self) -> dict[str, Any]:
        """The non-secret fields that are set, as JSON."""
        return self.model_dump(mode="json", exclude=set(self.secret_names()), exclude_none=True)

    def secret_values(self) -> dict[str, str]:
        """The secret fields that are set, in the clear: only ever encrypted or sent on."""
        values = {name: getattr(self, name) for name in self.secret_names()}
        return {name: value.get_secret_value() for name, value in values.items() if value}


class GenericSms(AccountKind):
    """The contract's SMS API: `url` and a bearer `key`."""

    url: ProviderUrl
    key: Secret

    def client(self, http: httpx.AsyncClient, timeout_s: float) -> SmsClient:
        return SmsClient(http, self.url, self.key.get_secret_value(), timeout_s)


class TwilioSms(AccountKind):
    """A Twilio account: its `account_sid` and `auth_token` (which also signs its webhook
    deliveries to /webhooks/sms/{client_id}), the `sender` texts go out from (an E.164 number,
    or a Messaging Service SID `MG…`), and the API's `url` (Twilio's unless testing)."""

    account_sid: Annotated[str, StringConstraints(pattern=r"^AC[0-9a-fA-F]{32}$")]
    auth_token: Secret
    sender: Annotated[str, StringConstraints(max_length=64), AfterValidator(check_twilio_sender)]
    url: ProviderUrl = TWILIO_API_URL

    def client(self, http: httpx.AsyncClient, timeout_s: float) -> TwilioSmsClient:
        return TwilioSmsClient(
            http,
            self.url,
            self.account_sid,
            self.auth_token.get_secret_value(),
            self.sender,
            timeout_s,
        )

    def signing_secret(self) -> str | None:
        return self.auth_token.get_secret_value()


class GenericEmail(AccountKind):
    """The contract's email API: `url`, a bearer `key`, and the `webhook_secret` that signs
    this client's deliveries to /webhooks/email/{client_id}."""

    url: ProviderUrl
    key: Secret
    webhook_secret: WebhookSecret | None = None

    def client(self, http: httpx.AsyncClient, timeout_s: float) -> EmailClient:
        return EmailClient(http, self.url, self.key.get_secret_value(), timeout_s)

    def signing_secret(self) -> str | None:
        return None if self.webhook_secret is None else self.webhook_secret.get_secret_value()


class ResendEmail(AccountKind):
    """Resend: its API `key`, the `from_address` emails are sent from (an address, or
    `Name <address>`, on a domain verified at Resend; its domain also routes this client's
    received email on /webhooks/email), the `webhook_secret` Resend signs deliveries to
    /webhooks/email/{client_id} with, and the API `url` (Resend's own by default)."""

    key: Secret
    from_address: EmailAddress
    webhook_secret: WebhookSecret | None = None
    url: ProviderUrl = RESEND_API_URL

    def client(self, http: httpx.AsyncClient, timeout_s: float) -> ResendClient:
        return ResendClient(
            http, self.url, self.key.get_secret_value(), self.from_address, timeout_s
        )

    def signing_secret(self) -> str | None:
        return None if self.webhook_secret is None else self.webhook_secret.get_secret_value()


class GenericAi(AccountKind):
    """An OpenAI-compatible chat completions API: `url`, a bearer `key`, the `model`."""

    url: ProviderUrl
    key: Secret
    model: Annotated[StorableStr, StringConstraints(min_length=1, max_length=200)]

    def client(self, http: httpx.AsyncClient, timeout_s: float) -> AiClient:
        return AiClient(http, self.url, self.key.get_secret_value(), self.model, timeout_s)


KINDS: dict[ProviderChannel, dict[str, type[AccountKind]]] = {
    "sms": {"generic": GenericSms, "twilio": TwilioSms},
    "email": {"generic": GenericEmail, "resend": ResendEmail},
    "ai": {"generic": GenericAi},
}


def kind_for(channel: ProviderChannel, kind: str) -> type[AccountKind] | None:
    """The model of this channel's kind, or None when the channel has no such kind."""
    return KINDS[channel].get(kind)
