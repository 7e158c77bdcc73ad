"""Resend-shaped endpoints on the sandbox, mounted at /resend: the same paths, bodies, Bearer
auth and error bodies (`{"statusCode", "name", "message"}`) as Resend's API reference.

- `POST /emails`: a send, once per `Idempotency-Key` (the same key and body answer the first
  id again; the same key with another body is 409 `invalid_idempotent_request`).
- `GET /emails`, `GET /emails/receiving`: newest first, `limit` (1..100) and `after` (an id of
  the list), `has_more`.
- `GET /emails/receiving/{email_id}`: one received email with its text.

Calls count on the sandbox state as provider "email" (kinds "send" and "list"), so the faults
armed there apply: `rate_limit` answers Resend's 429, `error` its 500, `reset` drops the
connection, `hang` waits. `lose_answers(n)` on this module's state makes the next n sends take
effect and then drop the connection before answering: a send whose answer is lost.
"""

from __future__ import annotations

import asyncio
import hmac
import threading
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from app.sandbox.data import email_history, iso
from app.sandbox.state import SandboxState

NAMESPACE = uuid.UUID("6f1c1f52-8e0e-4f55-9d43-0b6c8d7f3a10")
SANDBOX_INBOX = "inbox@sandbox.example"


class ResendState:
    """What the sandbox's Resend remembers: sent emails by idempotency key, and the inbox."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: list[dict[str, Any]] = []  # oldest first
        self.by_key: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.received: list[dict[str, Any]] = []  # oldest first
        self.lose = 0

    def lose_answers(self, times: int = 1) -> None:
        """The next `times` sends take effect, then lose their answer (the connection drops)."""
        with self._lock:
            self.lose += times

    def take_lost(self) -> bool:
        with self._lock:
            if self.lose:
                self.lose -= 1
                return True
            return False

    def receive(
        self, sender: str, subject: str, text: str, *, to: str = SANDBOX_INBOX, at: datetime
    ) -> dict[str, Any]:
        """An email arriving at the inbox; returns it (its `id` is what `email.received`
        names)."""
        with self._lock:
            seed = f"received:{sender}:{len(self.received)}:{subject}:{text}"
            email = {
                "object": "email",
                "id": str(uuid.uuid5(NAMESPACE, seed)),
                "to": [to],
                "from": sender,
                "subject": subject,
                "message_id": f"<{uuid.uuid5(NAMESPACE, 'mid:' + seed)}@sandbox.example>",
                "bcc": None,
                "cc": None,
                "reply_to": None,
                "html": None,
                "text": text,
                "headers": {},
                "created_at": iso(at),
                "attachments": [],
            }
            self.received.append(email)
            return email

    def seed(self, addresses: list[str]) -> None:
        """Each address's synthetic thread: its inbound lines as received emails."""
        for address in addresses:
            for entry in email_history(address):
                if entry["direction"] == "inbound":
                    moment = datetime.fromisoformat(entry["sent_at"].replace("Z", "+00:00"))
                    self.receive(address, entry["subject"], entry["text"], at=moment)

    def send(self, key: str | None, body: dict[str, Any]) -> dict[str, Any] | None:
        """Record a send; with a key used before, the first email (None: another body)."""
        with self._lock:
            if key is not None and key in self.by_key:
                first_body, email = self.by_key[key]
                return email if first_body == body else None
            seed = key if key is not None else uuid.uuid4().hex
            to = body["to"] if isinstance(body["to"], list) else [body["to"]]
            email = {
                "object": "email",
                "id": str(uuid.uuid5(NAMESPACE, f"sent:{seed}")),
                "to": to,
                "from": body["from"],
                "created_at": iso(datetime.now(UTC)),
                "subject": body["subject"],
                "html": body.get("html"),
                "text": body.get("text"),
                "bcc": [],
                "cc": [],
                "reply_to": [],
                "last_event": "delivered",
            }
            self.sent.append(email)
            if key is not None:
                self.by_key[key] = (body, email)
            return email

    def sent_to(self, address: str) -> list[dict[str, Any]]:
        with self._lock:
            return [email for email in self.sent if address in email["to"]]

    def snapshot(self, which: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.sent if which == "sent" else self.received)


_STATES_LOCK = threading.Lock()


def resend_state(state: SandboxState) -> ResendState:
    """The Resend part of a sandbox's state (made on first use)."""
    with _STATES_LOCK:
        found = getattr(state, "resend", None)
        if found is None:
            found = ResendState()
            state.resend = found  # type: ignore[attr-defined]
        return found


class ResendError(HTTPException):
    def __init__(self, status: int, name: str, message: str, headers: dict | None = None) -> None:
        super().__init__(status, message, headers)
        self.name = name


def _error(status: int, name: str, message: str, headers: dict | None = None) -> Response:
    body = {"statusCode": status, "name": name, "message": message}
    return JSONResponse(body, status_code=status, headers=headers)


class _Dropped(Response):
    """No answer: the connection is closed once the request has been handled."""

    async def __call__(self, scope, receive, send) -> None:
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if transport is None:
            raise ConnectionResetError("the sandbox dropped the connection")
        transport.abort()
        for _ in range(3):
            await asyncio.sleep(0)


class SendEmail(BaseModel):
    """The part of Resend's SendEmailRequest the sandbox reads."""

    from_: str = Field(alias="from", min_length=1)
    to: str | list[str] = Field(min_length=1)
    subject: str
    text: str | None = None
    html: str | None = None


def _page(items: list[dict[str, Any]], limit: int, after: str | None) -> dict[str, Any]:
    newest_first = list(reversed(items))
    start = 0
    if after is not None:
        ids = [item["id"] for item in newest_first]
        if after not in ids:
            raise ResendError(422, "validation_error", "The `after` cursor is not an id here.")
        start = ids.index(after) + 1
    page = newest_first[start : start + limit]
    return {"object": "list", "has_more": start + limit < len(newest_first), "data": page}


def _listed(email: dict[str, Any]) -> dict[str, Any]:
    """A received email as the list shows it: without its body and headers."""
    return {k: v for k, v in email.items() if k not in ("html", "text", "headers", "object")}


def create_resend_app(state: SandboxState, key: str | None) -> FastAPI:
    """Resend's API over the sandbox state, admitting `Authorization: Bearer <key>`."""
    resend = resend_state(state)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        name = getattr(exc, "name", None) or ("not_found" if exc.status_code == 404 else "error")
        return _error(exc.status_code, name, str(exc.detail), exc.headers)

    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = ", ".join(
            ".".join(str(part) for part in error["loc"][1:]) or "body" for error in exc.errors()
        )
        return _error(422, "validation_error", f"Invalid fields: {fields}.")

    async def bearer(authorization: Annotated[str | None, Header()] = None) -> None:
        if key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ResendError(401, "missing_api_key", "Missing API key in the header.")
        if not hmac.compare_digest(token.encode(), key.encode()):
            raise ResendError(403, "invalid_api_key", "API key is invalid.")

    app = FastAPI(
        title="sandbox Resend",
        dependencies=[Depends(bearer)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers={HTTPException: http_error, RequestValidationError: invalid},
    )

    async def faulted(kind: str) -> Response | None:
        fault = state.begin_call("email", kind)
        if fault is None:
            return None
        if fault.mode == "rate_limit":
            headers = {
                "retry-after": str(fault.retry_after),
                "ratelimit-limit": "2",
                "ratelimit-remaining": "0",
                "ratelimit-reset": str(fault.retry_after),
            }
            return _error(429, "rate_limit_exceeded", "Too many requests.", headers)
        if fault.mode == "error":
            return _error(500, "internal_server_error", "An unexpected error occurred.")
        if fault.mode == "garbage":
            return Response(b"not json{", media_type="application/json")
        if fault.mode == "reset":
            return _Dropped()
        if fault.mode == "hang":
            await asyncio.sleep(fault.hang_s)
        return None

    @app.post("/emails")
    async def send_email(
        email: SendEmail,
        request: Request,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Response:
        if (answer := await faulted("send")) is not None:
            return answer
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= 256:
            raise ResendError(400, "invalid_idempotency_key", "The key must be 1-256 chars.")
        if not email.text and not email.html:
            raise ResendError(422, "missing_required_field", "Give `text` or `html`.")
        body = await request.json()
        sent = resend.send(idempotency_key, body)
        if sent is None:
            raise ResendError(
                409,
                "invalid_idempotent_request",
                "Same idempotency key used with a different request payload.",
            )
        if resend.take_lost():
            return _Dropped()
        return JSONResponse({"id": sent["id"]})

    @app.get("/emails")
    async def list_sent(
        limit: Annotated[int, Query(ge=1, le=100)] = 20, after: str | None = None
    ) -> Response:
        if (answer := await faulted("list")) is not None:
            return answer
        return JSONResponse(_page(resend.snapshot("sent"), limit, after))

    @app.get("/emails/receiving")
    async def list_received(
        limit: Annotated[int, Query(ge=1, le=100)] = 20, after: str | None = None
    ) -> Response:
        if (answer := await faulted("list")) is not None:
            return answer
        page = _page(resend.snapshot("received"), limit, after)
        page["data"] = [_listed(email) for email in page["data"]]
        return JSONResponse(page)

    @app.get("/emails/receiving/{email_id}")
    async def get_received(email_id: str) -> Response:
        if (answer := await faulted("list")) is not None:
            return answer
        for email in resend.snapshot("received"):
            if email["id"] == email_id:
                return JSONResponse(email)
        raise ResendError(404, "not_found", "Email not found.")

    return app


__all__ = ["ResendState", "create_resend_app", "resend_state"]
