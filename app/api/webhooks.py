"""POST /webhooks/email: Standard Webhooks (and Svix-named) deliveries of received email."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.api.body import parse_json, read_capped
from app.api.deps import DbDep, SettingsDep, error
from app.api.errors import ApiError, describe_validation_error
from app.metrics import WEBHOOK_REJECTIONS
from app.models import EnqueuedResponse, InboundEmail
from app.queue import enqueue

router = APIRouter(tags=["webhooks"])

MAX_BODY = 1024 * 1024
MAX_DELIVERY_ID = 255
SIGNATURE_BYTES = 32
HANDLED_TYPE = "email.received"


def signature_headers(request: Request) -> dict[str, str]:
    """webhook-* headers, falling back to the svix-* names some senders use."""
    found = {}
    for part in ("id", "timestamp", "signature"):
        value = request.headers.get(f"webhook-{part}") or request.headers.get(f"svix-{part}")
        if value:
            found[f"webhook-{part}"] = value
    return found


def well_formed_signatures(value: str) -> str:
    """The header's v1 signatures whose base64 decodes strictly to an HMAC-SHA256 (32 bytes).

    The library decodes leniently (it skips characters outside the alphabet), which would
    accept a valid signature with junk around it."""
    kept = []
    for entry in value.split(" "):
        version, _, signature = entry.partition(",")
        if version != "v1":
            continue
        try:
            decoded = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == SIGNATURE_BYTES:
            kept.append(entry)
    return " ".join(kept)


def verify(secret: str, body: bytes, headers: dict[str, str]) -> None:
    signatures = well_formed_signatures(headers.get("webhook-signature", ""))
    try:
        if not signatures:
            raise WebhookVerificationError("no well-formed signature")
        Webhook(secret).verify(body, {**headers, "webhook-signature": signatures}, json_parse=False)
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
        event = parse_json(body)
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


def _signature_header(part: str, description: str) -> dict[str, Any]:
    return {
        "name": f"webhook-{part}",
        "in": "header",
        "required": False,
        "description": f"{description} (or `svix-{part}`).",
        "schema": {"type": "string"},
    }


# The route reads and verifies the raw body itself, so its shape is documented here.
OPENAPI = {
    "parameters": [
        _signature_header("id", "The delivery's id: the dedupe key, at most 255 characters"),
        _signature_header("timestamp", "Unix seconds; within 5 minutes of now"),
        _signature_header("signature", "`v1,<base64 HMAC-SHA256>` entries, space-separated"),
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["type", "data"],
                    "properties": {
                        "type": {"type": "string", "examples": [HANDLED_TYPE]},
                        "data": InboundEmail.model_json_schema(by_alias=True),
                    },
                },
                "example": {
                    "type": HANDLED_TYPE,
                    "data": {
                        "client_id": "acme",
                        "message_id": "msg_01HZX",
                        "email_lead_id": "e-42",
                        "from": "Ada <ada@example.com>",
                        "subject": "Re: the viewing",
                        "text": "Thursday works for me.",
                        "received_at": "2026-12-01T09:30:00Z",
                    },
                },
            }
        },
    },
}


@router.post(
    "/webhooks/email",
    status_code=202,
    response_model=EnqueuedResponse | dict[str, bool],
    openapi_extra=OPENAPI,
    responses={
        202: {"description": 'Enqueued, deduplicated, or `{"ignored": true}` for other types.'},
        401: error("The signature is missing, malformed, wrong or too old."),
        413: error("The body is over 1 MiB."),
        422: error("Signed, but not JSON or missing fields."),
        503: error("WEBHOOK_SECRET is not set, or the database cannot be reached."),
    },
)
async def email_webhook(request: Request, db: DbDep, settings: SettingsDep) -> Any:
    """Accept a signed email delivery and enqueue its processing."""
    try:
        if not settings.webhook_secret:
            raise ApiError(503, "not_configured", "WEBHOOK_SECRET is not set on this server.")
        body = await read_capped(request, MAX_BODY)
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
            (headers["webhook-id"],),
            client_id=data.client_id,
            payload=data.model_dump(mode="json", by_alias=True),
        )
    return EnqueuedResponse(job_id=job.id, deduplicated=job.deduplicated)
