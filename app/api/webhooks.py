"""POST /webhooks/email: Standard Webhooks (and Svix-named) deliveries of received email."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.api.deps import DbDep, SettingsDep
from app.api.errors import ApiError, describe_validation_error
from app.metrics import WEBHOOK_REJECTIONS
from app.models import EnqueuedResponse, InboundEmail
from app.queue import enqueue

router = APIRouter(tags=["webhooks"])

MAX_BODY = 1024 * 1024
MAX_DELIVERY_ID = 255
HANDLED_TYPE = "email.received"


async def read_body(request: Request) -> bytes:
    """The body, refused with 413 past 1 MiB whether declared or only seen arriving."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise ApiError(413, "payload_too_large", "The body is over 1 MiB.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, "payload_too_large", "The body is over 1 MiB.")
    return bytes(body)


def signature_headers(request: Request) -> dict[str, str]:
    """webhook-* headers, falling back to the svix-* names some senders use."""
    found = {}
    for part in ("id", "timestamp", "signature"):
        value = request.headers.get(f"webhook-{part}") or request.headers.get(f"svix-{part}")
        if value:
            found[f"webhook-{part}"] = value
    return found


def verify(secret: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    # The library raises more than its own error on malformed input: bad base64 or a
    # signature without a comma (ValueError), a body that is not UTF-8 (UnicodeDecodeError),
    # an absurd timestamp (OverflowError). Each is an unverifiable delivery.
    except (WebhookVerificationError, ValueError, TypeError, OverflowError):
        raise ApiError(
            401, "invalid_signature", "The webhook signature is missing, invalid or too old."
        ) from None


def parse_delivery(body: bytes, headers: dict[str, str], secret: str) -> InboundEmail | None:
    """The verified delivery's email, or None for an event type we do not handle."""
    verify(secret, body, headers)
    if len(headers["webhook-id"]) > MAX_DELIVERY_ID:
        raise ApiError(422, "validation_error", "webhook-id is longer than 255 characters.")
    try:
        event = json.loads(body)
    except ValueError:
        raise ApiError(422, "invalid_json", "The body is not JSON.") from None
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ApiError(422, "validation_error", "type: a string event type is required")
    if event["type"] != HANDLED_TYPE:
        return None
    try:
        return InboundEmail.model_validate(event.get("data"))
    except ValidationError as error:
        details = "; ".join(f"data.{describe_validation_error(e)}" for e in error.errors()[:5])
        raise ApiError(422, "validation_error", details) from None


@router.post("/webhooks/email", status_code=202, response_model=EnqueuedResponse | dict[str, bool])
async def email_webhook(request: Request, db: DbDep, settings: SettingsDep) -> Any:
    """Accept a signed email delivery and enqueue its processing."""
    try:
        if not settings.webhook_secret:
            raise ApiError(503, "not_configured", "WEBHOOK_SECRET is not set on this server.")
        body = await read_body(request)
        headers = signature_headers(request)
        data = parse_delivery(body, headers, settings.webhook_secret)
    except ApiError as refused:
        WEBHOOK_REJECTIONS.labels(refused.error).inc()
        raise
    if data is None:
        return {"ignored": True}
    async with db.acquire() as conn:
        job = await enqueue(
            conn,
            "email_inbound",
            headers["webhook-id"],
            client_id=data.client_id,
            payload=data.model_dump(mode="json", by_alias=True),
        )
    return EnqueuedResponse(job_id=job.id, deduplicated=job.deduplicated)
