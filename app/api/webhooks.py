"""POST /webhooks/email: Standard Webhooks (and Svix-named) deliveries of received email.

`/webhooks/email` is verified with WEBHOOK_SECRET; `/webhooks/email/{client_id}` with the
`webhook_secret` of that client's email account, so each client's provider signs with its own.

Two shapes of `email.received` are accepted: the contract's (the email's text in `data`) and
Resend's own (`data.email_id` and the addresses, no text: its job fetches the email from
Resend). A Resend event names no client: on a client's route it is that client's; on the global
route it belongs to the client whose Resend account's `from_address` is an address the email was
sent to, else the one whose `from_address` domain is that address's domain, else (the global
account being Resend's) the one client with a lead at the sender's address; none, or several,
is a 422 (such a client uses its own route).
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import re
import secrets
from email.utils import parseaddr
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.accounts import AccountUnreadable, load_account
from app.api.body import parse_json, read_capped
from app.api.deps import DbDep, SettingsDep, error
from app.api.errors import ApiError, describe_validation_error
from app.db import Database
from app.metrics import WEBHOOK_REJECTIONS
from app.models import EnqueuedResponse, Id, InboundEmail
from app.models.tables import leads, provider_accounts
from app.queue import enqueue
from app.settings import Settings

log = logging.getLogger("handoff.api.webhooks")

router = APIRouter(tags=["webhooks"])

MAX_BODY = 1024 * 1024
MAX_DELIVERY_ID = 255
SIGNATURE_BYTES = 32
HANDLED_TYPE = "email.received"
DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)+")
# What a delivery for a client without a signing secret is checked against: a key nobody has,
# so it is refused exactly as a wrong signature is (no telling which clients have one).
NOBODYS_SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


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


class ResendReceived(BaseModel):
    """Resend's `email.received` data: the parts used here (the rest is ignored)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    email_id: str = Field(min_length=1, max_length=255)
    from_: str = Field(alias="from", min_length=3, max_length=320)
    to: list[Annotated[str, Field(max_length=320)]] = Field(default_factory=list, max_length=100)


def address_of(value: str) -> str:
    """The bare, lower-cased address in `Name <a@b.c>` or `a@b.c`."""
    return parseaddr(value)[1].lower()


def parse_delivery(
    body: bytes, headers: dict[str, str], secret: str, client_id: str | None = None
) -> InboundEmail | ResendReceived | None:
    """The verified delivery's email, or None for an event type we do not handle.

    With `client_id` (the client's own route) the delivery's `data.client_id` may be left out,
    and when given must be that client. A `data.email_id` marks Resend's own shape."""
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
    data = event.get("data")
    if isinstance(data, dict) and "email_id" in data:
        try:
            return ResendReceived.model_validate(data)
        except ValidationError as error:
            details = "; ".join(f"data.{describe_validation_error(e)}" for e in error.errors()[:5])
            raise ApiError(422, "validation_error", details) from None
    if client_id is not None and isinstance(data, dict):
        data = of_client(data, client_id)
    try:
        return InboundEmail.model_validate(data)
    except ValidationError as error:
        details = "; ".join(f"data.{describe_validation_error(e)}" for e in error.errors()[:5])
        raise ApiError(422, "validation_error", details) from None


def of_client(data: dict[str, Any], client_id: str) -> dict[str, Any]:
    """The delivery's data for the client the path names: its `client_id` that one or none."""
    if data.get("client_id", client_id) != client_id:
        raise ApiError(422, "validation_error", "data.client_id: must be the client the path names")
    return {**data, "client_id": client_id}


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
        422: error(
            "Signed, but not JSON or missing fields; or Resend's shape, and no one client's "
            "Resend account receives at its `to` addresses (`unknown_recipient`, "
            "`ambiguous_recipient`)."
        ),
        503: error("WEBHOOK_SECRET is not set, or the database cannot be reached."),
    },
)
async def email_webhook(request: Request, db: DbDep, settings: SettingsDep) -> Any:
    """Accept a signed email delivery and enqueue its processing.

    Besides the contract's shape, Resend's own `email.received` event (`data.email_id`, no
    text) is accepted: its job fetches the email from the client's Resend account. Its client
    is the one whose Resend `from_address` is, or shares the domain of, a `to` address."""
    try:
        if not settings.webhook_secret:
            raise ApiError(503, "not_configured", "WEBHOOK_SECRET is not set on this server.")
        body = await read_capped(request, MAX_BODY)
        headers = signature_headers(request)
        data = parse_delivery(body, headers, settings.webhook_secret)
    except ApiError as refused:
        WEBHOOK_REJECTIONS.labels(refused.error).inc()
        raise
    if isinstance(data, ResendReceived):
        try:
            client_id = await resend_client_of(db, data, settings.email_provider_kind)
        except ApiError as refused:
            WEBHOOK_REJECTIONS.labels(refused.error).inc()
            raise
        return await accept_resend(db, client_id, data)
    return await accept(db, (headers["webhook-id"],), data)


async def resend_client_of(db: Database, data: ResendReceived, global_kind: str) -> str:
    """The client a Resend event on the global route belongs to (see the module's docstring)."""
    recipients = {address_of(to) for to in data.to} - {""}
    domains = {address.rpartition("@")[2] for address in recipients}
    domains = {domain for domain in domains if DOMAIN.fullmatch(domain)}
    if not domains:
        raise ApiError(422, "validation_error", "data.to: no recipient address")
    found: dict[str, str] = {}
    async with db.engine.connect() as conn:
        for domain in domains:
            pattern = f"%@{domain}%"  # only [a-z0-9.-]: nothing to escape
            rows = await conn.execute(
                select(
                    provider_accounts.c.client_id,
                    provider_accounts.c.settings["from_address"].astext,
                ).where(
                    provider_accounts.c.channel == "email",
                    provider_accounts.c.kind == "resend",
                    func.lower(provider_accounts.c.settings["from_address"].astext).like(pattern),
                )
            )
            for client_id, from_address in rows:
                found[client_id] = address_of(from_address or "")
    exact = {client for client, address in found.items() if address in recipients}
    by_domain = {
        client for client, address in found.items() if address.rpartition("@")[2] in domains
    }
    matches = exact or by_domain
    if not matches and global_kind == "resend":
        # The global Resend account receives for every client: the sender's lead says whose.
        matches = await clients_with_lead(db, address_of(data.from_))
    if len(matches) == 1:
        return matches.pop()
    if not matches:
        raise ApiError(
            422,
            "unknown_recipient",
            "No client's Resend account sends from the address or domain this email was sent "
            "to (nor, with a global Resend account, has a lead at its sender's address); "
            "deliver it to /webhooks/email/{client_id}.",
        )
    raise ApiError(
        422,
        "ambiguous_recipient",
        "Several clients' Resend accounts use the domain this email was sent to (or, with a "
        "global Resend account, have a lead at its sender's address); deliver it to "
        "/webhooks/email/{client_id}.",
    )


async def clients_with_lead(db: Database, address: str) -> set[str]:
    """The clients with a lead at this address (two at most: more says no more)."""
    if not address:
        return set()
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            select(leads.c.client_id)
            # The predicate of leads_client_email, so that index serves it.
            .where(leads.c.email.is_not(None), func.lower(leads.c.email) == address)
            .distinct()
            .limit(2)
        )
        return {row.client_id for row in rows}


async def accept_resend(db: Database, client_id: str, data: ResendReceived) -> Any:
    """Enqueue the fetch of a Resend email, keyed by its email id: a redelivery, or the same
    email on the other route, is deduplicated."""
    async with db.acquire() as conn:
        job = await enqueue(
            conn,
            "resend_inbound",
            ("resend", client_id, data.email_id),
            client_id=client_id,
            payload={"client_id": client_id, "email_id": data.email_id},
        )
    return EnqueuedResponse(job_id=job.id, deduplicated=job.deduplicated)


async def accept(db: Database, key: tuple[str, ...], data: InboundEmail | None) -> Any:
    """Enqueue a verified delivery's processing (or say it was ignored); `key` names the
    delivery: its webhook id, with the client in front on a client's own route (two clients'
    senders may well number their deliveries alike)."""
    if data is None:
        return {"ignored": True}
    async with db.acquire() as conn:
        job = await enqueue(
            conn,
            "email_inbound",
            key,
            client_id=data.client_id,
            payload=data.model_dump(mode="json", by_alias=True),
        )
    return EnqueuedResponse(job_id=job.id, deduplicated=job.deduplicated)


async def client_signing_secret(db: Database, settings: Settings, client_id: str) -> str | None:
    """The signing secret of the client's email account; None when it has none (or there is
    no such client, or its account cannot be read)."""
    async with db.engine.connect() as conn:
        try:
            account = await load_account(conn, settings.encryption, client_id, "email")
        except AccountUnreadable:
            log.warning(
                "a client's email account cannot be read to verify a delivery",
                extra={"client_id": client_id},
            )
            return None
    return None if account is None else account.values.signing_secret()


def _client_route_doc() -> dict[str, Any]:
    """The global route's document, with `data.client_id` optional (the path names it)."""
    doc = copy.deepcopy(OPENAPI)
    content = doc["requestBody"]["content"]["application/json"]
    data = content["schema"]["properties"]["data"]
    data["required"] = [name for name in data["required"] if name != "client_id"]
    del content["example"]["data"]["client_id"]
    return doc


@router.post(
    "/webhooks/email/{client_id}",
    status_code=202,
    response_model=EnqueuedResponse | dict[str, bool],
    openapi_extra=_client_route_doc(),
    responses={
        202: {"description": 'Enqueued, deduplicated, or `{"ignored": true}` for other types.'},
        401: error(
            "The signature is missing, malformed, wrong or too old, or the client has no "
            "signing secret (or does not exist): the same answer for each."
        ),
        413: error("The body is over 1 MiB."),
        422: error("Signed, but not JSON, missing fields, or `data.client_id` is another client."),
        503: error("ENCRYPTION_KEYS is not set, or the database cannot be reached."),
    },
)
async def client_email_webhook(
    client_id: Annotated[Id, Path()], request: Request, db: DbDep, settings: SettingsDep
) -> Any:
    """Accept a delivery for one client, signed with its email account's `webhook_secret`;
    Resend's own `email.received` event is accepted here too (its job fetches the email)."""
    try:
        if settings.encryption is None:
            raise ApiError(
                503,
                "not_configured",
                "ENCRYPTION_KEYS is not set on this server, so no client's signing secret can "
                "be read.",
            )
        body = await read_capped(request, MAX_BODY)
        headers = signature_headers(request)
        secret = await client_signing_secret(db, settings, client_id)
        data = parse_delivery(body, headers, secret or NOBODYS_SECRET, client_id)
    except ApiError as refused:
        WEBHOOK_REJECTIONS.labels(refused.error).inc()
        raise
    if isinstance(data, ResendReceived):
        return await accept_resend(db, client_id, data)
    return await accept(db, (client_id, headers["webhook-id"]), data)
