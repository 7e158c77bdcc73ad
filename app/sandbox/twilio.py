"""Twilio's Messages resource, as the sandbox serves it at /twilio: the same paths, basic auth,
JSON shapes (the Message resource, the list envelope with `next_page_uri`) and error bodies
(`code`, `message`, `more_info`, `status`) as api.twilio.com, so the Twilio adapter runs
against it unchanged (TWILIO_API_URL=<sandbox>/twilio).

Every number has a synthetic history (the same conversations as the generic SMS API, between
the number and SANDBOX_NUMBER); what is sent is added to it. Faults armed on the sandbox state
for provider "sms" apply here too (kinds "list" and "send"); `accept_then_hang` takes a send and
then never answers, the lost answer a retried send must recover from.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import secrets
import threading
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from app.sandbox.data import sms_history
from app.sandbox.state import SandboxState

# The sandbox account's own number: the other end of every synthetic conversation.
SANDBOX_NUMBER = "+15005550006"
API_VERSION = "2010-04-01"
MAX_PAGE_SIZE = 1000


def _date(moment: datetime) -> str:
    """A date as Twilio writes it (RFC 2822, GMT): `Thu, 24 Aug 2023 05:01:45 +0000`."""
    return format_datetime(moment.astimezone(UTC)).replace("-0000", "+0000")


def _iso_to_date(value: str) -> str:
    return _date(datetime.fromisoformat(value.replace("Z", "+00:00")))


class TwilioFault(HTTPException):
    """An error answered in Twilio's shape."""

    def __init__(self, status: int, code: int, message: str, headers: dict | None = None):
        super().__init__(status, message, headers)
        self.twilio_code = code


def _error_body(status: int, code: int, message: str) -> dict:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class TwilioMessages:
    """What the sandbox's Twilio accounts hold: the messages sent through them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: dict[str, list[dict]] = {}

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()

    def record(self, account_sid: str, message: dict) -> None:
        with self._lock:
            self.sent.setdefault(account_sid, []).append(message)

    def sent_to(self, account_sid: str, number: str) -> list[dict]:
        with self._lock:
            return [m for m in self.sent.get(account_sid, []) if m["to"] == number]

    def of(self, account_sid: str) -> list[dict]:
        with self._lock:
            return list(self.sent.get(account_sid, []))


def _message(account_sid: str, sid: str, **fields: object) -> dict:
    """A Message resource with every field Twilio returns."""
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": fields.get("body"),
        "date_created": fields.get("date_created"),
        "date_sent": fields.get("date_sent"),
        "date_updated": fields.get("date_created"),
        "direction": fields.get("direction"),
        "error_code": None,
        "error_message": None,
        "from": fields.get("from"),
        "messaging_service_sid": fields.get("messaging_service_sid"),
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": fields.get("status"),
        "subresource_uris": {
            "media": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json"
        },
        "to": fields.get("to"),
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}.json",
    }


def synthetic(account_sid: str, number: str) -> list[dict]:
    """The number's synthetic conversation with SANDBOX_NUMBER, as Message resources."""
    out = []
    for entry in sms_history(number):
        inbound = entry["direction"] == "inbound"
        digest = binascii.hexlify(entry["id"].encode()).decode()[-32:].rjust(32, "0")
        when = _iso_to_date(entry["sent_at"])
        out.append(
            _message(
                account_sid,
                f"SM{digest}",
                body=entry["body"],
                date_created=when,
                date_sent=when,
                direction="inbound" if inbound else "outbound-api",
                status="received" if inbound else "delivered",
                to=SANDBOX_NUMBER if inbound else number,
                **{"from": number if inbound else SANDBOX_NUMBER},
            )
        )
    return out


def create_twilio_app(state: SandboxState, key: str | None = None) -> FastAPI:
    """The Twilio-shaped endpoints; `key`, when given, is every account's auth token."""
    messages = TwilioMessages()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.twilio = messages

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        code = getattr(exc, "twilio_code", 20404 if exc.status_code == 404 else 20001)
        body = _error_body(exc.status_code, code, str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        names = ", ".join(str(e["loc"][-1]) for e in exc.errors())
        body = _error_body(400, 21602, f"A required parameter is missing or invalid: {names}")
        return JSONResponse(body, status_code=400)

    def authorize(account_sid: str, authorization: str | None) -> None:
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            user, password = "", ""
        token_ok = key is None or hmac.compare_digest(password.encode(), key.encode())
        if scheme.lower() != "basic" or user != account_sid or not token_ok:
            raise TwilioFault(
                401, 20003, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'}
            )

    async def faulted(kind: str) -> tuple[str | None, float]:
        """The armed fault's mode for this call (None: behave), answering the ones that
        replace the answer by raising or returning a response."""
        fault = state.begin_call("sms", kind)
        if fault is None:
            return None, 0.0
        if fault.mode == "rate_limit":
            raise TwilioFault(
                429, 20429, "Too Many Requests", {"Retry-After": str(fault.retry_after)}
            )
        if fault.mode == "error":
            raise TwilioFault(500, 20500, "Internal Server Error")
        if fault.mode == "hang":
            await asyncio.sleep(fault.hang_s)
        return fault.mode, fault.hang_s

    async def answer(mode: str | None, hang_s: float, body: dict, status: int = 200) -> Response:
        if mode == "garbage":
            return Response(b"not json{", media_type="application/json")
        if mode == "reset":
            from app.sandbox.app import _ConnectionReset

            return _ConnectionReset()
        if mode == "accept_then_hang":
            await asyncio.sleep(hang_s)
        return JSONResponse(body, status_code=status)

    base = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json"

    @app.get(base)
    async def list_messages(
        request: Request,
        account_sid: str,
        to: Annotated[str | None, Query(alias="To")] = None,
        sender: Annotated[str | None, Query(alias="From")] = None,
        date_sent: Annotated[str | None, Query(alias="DateSent")] = None,
        sent_before: Annotated[str | None, Query(alias="DateSent<")] = None,
        sent_after: Annotated[str | None, Query(alias="DateSent>")] = None,
        page_size: Annotated[int, Query(alias="PageSize", ge=1, le=MAX_PAGE_SIZE)] = 50,
        page: Annotated[int, Query(alias="Page", ge=0)] = 0,
        page_token: Annotated[str | None, Query(alias="PageToken")] = None,
    ) -> Response:
        """Messages of the account, newest first, filtered as Twilio filters them."""
        authorize(account_sid, request.headers.get("authorization"))
        mode, hang_s = await faulted("list")
        numbers = {n for n in (to, sender) if n}
        pool = [m for n in numbers for m in synthetic(account_sid, n)] + messages.of(account_sid)
        unique = {m["sid"]: m for m in pool}
        chosen = [
            m
            for m in unique.values()
            if (to is None or m["to"] == to)
            and (sender is None or m["from"] == sender)
            and _dated(m, date_sent, sent_before, sent_after)
        ]
        chosen.sort(key=_newest_first)
        start = _offset(page_token) if page_token else page * page_size
        window = chosen[start : start + page_size]
        filters = {k: v for k, v in (("To", to), ("From", sender)) if v}
        for name, value in (("DateSent", date_sent), ("DateSent<", sent_before)):
            if value:
                filters[name] = value
        if sent_after:
            filters["DateSent>"] = sent_after
        path = base.format(account_sid=account_sid)

        def link(number: int, offset: int | None) -> str:
            query = {**filters, "PageSize": page_size, "Page": number}
            if offset is not None:
                query["PageToken"] = f"PA{offset}"
            return f"{path}?{urlencode(query)}"

        more = start + page_size < len(chosen)
        body = {
            "messages": window,
            "end": start + len(window) - 1 if window else 0,
            "first_page_uri": link(0, None),
            "next_page_uri": link(page + 1, start + page_size) if more else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": link(page - 1, max(start - page_size, 0)) if page else None,
            "start": start,
            "uri": link(page, start if page_token else None),
        }
        return await answer(mode, hang_s, body)

    @app.post(base, status_code=201)
    async def create_message(request: Request, account_sid: str) -> Response:
        """Queue a message (the sandbox sends it at once); no idempotency key, as at Twilio.
        Form-encoded To, Body, and From or MessagingServiceSid."""
        authorize(account_sid, request.headers.get("authorization"))
        try:
            form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            form = {}
        to, body = form.get("To", ""), form.get("Body", "")
        sender, service = form.get("From"), form.get("MessagingServiceSid")
        if not body:
            raise TwilioFault(400, 21602, "Message body is required.")
        if not sender and not service:
            raise TwilioFault(400, 21603, "A 'From' or 'MessagingServiceSid' is required.")
        if not to.startswith("+") or not to[1:].isdigit():
            raise TwilioFault(400, 21211, "The 'To' number is not a valid phone number.")
        mode, hang_s = await faulted("send")
        now = _date(datetime.now(UTC))
        message = _message(
            account_sid,
            "SM" + secrets.token_hex(16),
            body=body,
            date_created=now,
            date_sent=now,
            direction="outbound-api",
            status="sent",
            to=to,
            messaging_service_sid=service,
            **{"from": sender or SANDBOX_NUMBER},
        )
        messages.record(account_sid, message)
        return await answer(mode, hang_s, message, 201)

    return app


def _newest_first(message: dict) -> tuple[float, str]:
    sent = message["date_sent"] or message["date_created"]
    moment = datetime.strptime(sent, "%a, %d %b %Y %H:%M:%S %z")
    return (-moment.timestamp(), message["sid"])


def _dated(message: dict, on: str | None, before: str | None, after: str | None) -> bool:
    """Twilio's DateSent filters: `DateSent` a day, `DateSent<` / `DateSent>` bounds (a day or
    an instant) inclusive. A message not sent yet matches none of them."""
    if not (on or before or after):
        return True
    if not message["date_sent"]:
        return False
    sent = datetime.strptime(message["date_sent"], "%a, %d %b %Y %H:%M:%S %z")
    if on and sent.date().isoformat() != on[:10]:
        return False
    if before and sent > _bound(before):
        return False
    return not (after and sent < _bound(after))


def _bound(value: str) -> datetime:
    text = value.replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(text if "T" in text else f"{text}T00:00:00+00:00")
    except ValueError:
        raise TwilioFault(400, 20001, "Invalid DateSent.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _offset(token: str) -> int:
    if token.startswith("PA") and token[2:].isdigit():
        return int(token[2:])
    raise TwilioFault(400, 20001, "Invalid PageToken.")
