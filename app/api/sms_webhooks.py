"""POST /webhooks/sms: Twilio's incoming-message webhook (form-encoded, X-Twilio-Signature).

Twilio signs each request with the auth token of the account the number belongs to: HMAC-SHA1
over the URL it called (PUBLIC_URL + the path and query here) followed by every form field,
sorted by name, as name then value; base64. The signature is compared in constant time before
any field is read. A verified message is answered with empty TwiML (`<Response/>`, text/xml:
no reply is sent) and enqueued as `sms_inbound`, keyed by its MessageSid, forever: a redelivery
is answered alike and changes nothing.

Which client a message belongs to:
- `/webhooks/sms/{client_id}`: that client. Verified with the auth token of the client's own
  Twilio account, or, for a client without an SMS account of its own (it texts through the
  global account), with TWILIO_AUTH_TOKEN. A client whose SMS account is of another kind, or
  no such client: refused as a wrong signature is.
- `/webhooks/sms`: verified with TWILIO_AUTH_TOKEN (the global account). The client is the one
  whose own Twilio account, being the global account (same AccountSid), sends from the `To`
  number; else the one client that texts through the global account and has a lead with the
  `From` number. Neither, or more than one: 422 `unknown_recipient` (point the number at the
  client's own route).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy import and_, select

from app.accounts import AccountUnreadable, load_account
from app.api.body import read_capped
from app.api.deps import DbDep, SettingsDep, error
from app.api.errors import ApiError
from app.db import Database
from app.metrics import WEBHOOK_REJECTIONS
from app.models import Id, clients, leads
from app.models.tables import provider_accounts
from app.queue import enqueue
from app.settings import E164, Settings
from app.storable import StorableStr

log = logging.getLogger("handoff.api.sms_webhooks")

router = APIRouter(tags=["webhooks"])

# An SMS delivery is a few fields and at most 1,600 characters of text; MMS adds media links.
MAX_BODY = 64 * 1024
SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
# Checked against when the client has no token that could sign: nobody's, so the answer is
# the same as for a wrong signature.
NOBODYS_TOKEN = secrets.token_urlsafe(32)
FIELD = Annotated[StorableStr, StringConstraints(max_length=64)]


class IncomingSms(BaseModel):
    """The fields of Twilio's incoming-message webhook that are kept; the rest are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    message_sid: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{2,64}$")] = Field(
        alias="MessageSid"
    )
    account_sid: FIELD = Field("", alias="AccountSid")
    sender: Annotated[str, StringConstraints(pattern=E164.pattern)] = Field(alias="From")
    to: FIELD = Field("", alias="To")
    # Twilio caps an SMS at 1,600 characters; the delivery itself is capped at MAX_BODY.
    body: StorableStr = Field("", alias="Body")


def twilio_signature(token: str, url: str, fields: list[tuple[str, str]]) -> str:
    """Twilio's signature of a request: base64 HMAC-SHA1, keyed by the auth token, of the URL
    followed by each form field's name and value, sorted by name (then value)."""
    signed = url + "".join(name + value for name, value in sorted(fields))
    digest = hmac.new(token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signature_valid(token: str, url: str, fields: list[tuple[str, str]], given: str) -> bool:
    """Whether `given` is the request's signature (compared in constant time)."""
    expected = twilio_signature(token, url, fields)
    return hmac.compare_digest(expected.encode(), given.encode())


def invalid_signature() -> ApiError:
    return ApiError(401, "invalid_signature", "The X-Twilio-Signature is missing or wrong.")


def public_url(settings: Settings, request: Request) -> str:
    """The URL Twilio called, as it signed it: PUBLIC_URL, this path, and the query if any."""
    if not settings.public_url:
        raise ApiError(503, "not_configured", "PUBLIC_URL is not set on this server.")
    query = request.url.query
    return settings.public_url + request.url.path + (f"?{query}" if query else "")


def form_fields(body: bytes) -> list[tuple[str, str]]:
    """The form's fields, in order, repeats kept (every one is signed)."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise invalid_signature() from None


async def verified(request: Request, url: str, token: str) -> list[tuple[str, str]]:
    """The request's form fields once its signature checks out with `token` (401 if not)."""
    given = request.headers.get(SIGNATURE_HEADER, "")
    if not given:  # refused before a byte of the body is read
        raise invalid_signature()
    fields = form_fields(await read_capped(request, MAX_BODY))
    if not signature_valid(token, url, fields, given):
        raise invalid_signature()
    return fields


def incoming(fields: list[tuple[str, str]]) -> IncomingSms:
    """The verified form as an incoming message, or 422 naming the field (never its value)."""
    try:
        return IncomingSms.model_validate(dict(fields))
    except ValidationError as exc:
        names = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
        raise ApiError(
            422, "validation_error", f"Missing or malformed field(s): {names or 'the form'}."
        ) from None


async def accept(db: Database, client_id: str, sms: IncomingSms) -> Response:
    """Enqueue the message's storing, once per MessageSid, and answer empty TwiML."""
    payload = {
        "client_id": client_id,
        "message_sid": sms.message_sid,
        "from": sms.sender,
        "body": sms.body,
        "received_at": datetime.now(UTC).isoformat(),
    }
    async with db.acquire() as conn:
        await enqueue(conn, "sms_inbound", (sms.message_sid,), client_id=client_id, payload=payload)
    return Response(TWIML_EMPTY, media_type="text/xml")


def _form_doc() -> dict[str, Any]:
    return {
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "Base64 HMAC-SHA1 of PUBLIC_URL + path (+ query) and the sorted "
                "form fields, keyed by the account's auth token.",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["MessageSid", "From"],
                        "properties": {
                            name: {"type": "string"}
                            for name in ("MessageSid", "AccountSid", "From", "To", "Body")
                        },
                    },
                    "example": {
                        "MessageSid": "SM" + "0" * 32,
                        "AccountSid": "AC" + "0" * 32,
                        "From": "+15550104242",
                        "To": "+15005550006",
                        "Body": "Thursday works for me.",
                    },
                }
            },
        },
    }


TWIML_ANSWER = {
    "description": "Accepted (or a redelivery): empty TwiML, no reply sent.",
    "content": {"text/xml": {"example": TWIML_EMPTY}},
}


@router.post(
    "/webhooks/sms",
    response_class=Response,
    openapi_extra=_form_doc(),
    responses={
        200: TWIML_ANSWER,
        401: error("The signature is missing or wrong."),
        413: error("The body is over 64 KiB."),
        422: error("Signed, but a field is missing or malformed, or no single client is its."),
        503: error("TWILIO_AUTH_TOKEN or PUBLIC_URL is not set, or the database is down."),
    },
)
async def sms_webhook(request: Request, db: DbDep, settings: SettingsDep) -> Response:
    """Accept a message Twilio received on the global account's number."""
    try:
        if not settings.twilio_auth_token:
            raise ApiError(503, "not_configured", "TWILIO_AUTH_TOKEN is not set on this server.")
        url = public_url(settings, request)
        sms = incoming(await verified(request, url, settings.twilio_auth_token))
        client_id = await client_of(db, settings, sms)
    except ApiError as refused:
        WEBHOOK_REJECTIONS.labels(refused.error).inc()
        raise
    return await accept(db, client_id, sms)


async def client_of(db: Database, settings: Settings, sms: IncomingSms) -> str:
    """The client a message to the global account is for (see the module's docstring)."""
    global_sid = settings.twilio_account_sid
    by_number: list[str] = []
    async with db.engine.connect() as conn:
        if global_sid and sms.account_sid == global_sid:
            by_number = list(
                await conn.scalars(
                    select(provider_accounts.c.client_id)
                    .where(
                        provider_accounts.c.channel == "sms",
                        provider_accounts.c.kind == "twilio",
                        provider_accounts.c.settings["sender"].astext == sms.to,
                        provider_accounts.c.settings["account_sid"].astext == global_sid,
                    )
                    .limit(2)
                )
            )
        if len(by_number) == 1:
            return by_number[0]
        own_sms = select(provider_accounts.c.client_id).where(provider_accounts.c.channel == "sms")
        by_lead = list(
            await conn.scalars(
                select(leads.c.client_id)
                .distinct()
                .where(and_(leads.c.phone == sms.sender, leads.c.client_id.not_in(own_sms)))
                .limit(2)
            )
        )
    if len(by_number) == 0 and len(by_lead) == 1:
        return by_lead[0]
    raise ApiError(
        422,
        "unknown_recipient",
        "No single client could be told for this message: point the number's webhook at "
        "/webhooks/sms/{client_id}.",
    )


async def client_token(db: Database, settings: Settings, client_id: str) -> str | None:
    """The auth token that signs deliveries for this client (see the module's docstring)."""
    async with db.engine.connect() as conn:
        try:
            account = await load_account(conn, settings.encryption, client_id, "sms")
        except AccountUnreadable:
            log.warning(
                "a client's sms account cannot be read to verify a delivery",
                extra={"client_id": client_id},
            )
            return None
        if account is not None:
            return account.values.signing_secret() if account.kind == "twilio" else None
        known = await conn.scalar(select(clients.c.id).where(clients.c.id == client_id))
    return settings.twilio_auth_token if known is not None else None


@router.post(
    "/webhooks/sms/{client_id}",
    response_class=Response,
    openapi_extra=_form_doc(),
    responses={
        200: TWIML_ANSWER,
        401: error(
            "The signature is missing or wrong, or the client has no token that signs (or does "
            "not exist): the same answer for each."
        ),
        413: error("The body is over 64 KiB."),
        422: error("Signed, but a field is missing or malformed."),
        503: error("PUBLIC_URL or ENCRYPTION_KEYS is not set, or the database is down."),
    },
)
async def client_sms_webhook(
    client_id: Annotated[Id, Path()], request: Request, db: DbDep, settings: SettingsDep
) -> Response:
    """Accept a message Twilio received on one client's number."""
    try:
        if settings.encryption is None:
            raise ApiError(
                503,
                "not_configured",
                "ENCRYPTION_KEYS is not set on this server, so no client's auth token can be read.",
            )
        url = public_url(settings, request)
        token = await client_token(db, settings, client_id)
        sms = incoming(await verified(request, url, token or NOBODYS_TOKEN))
    except ApiError as refused:
        WEBHOOK_REJECTIONS.labels(refused.error).inc()
        raise
    return await accept(db, client_id, sms)
