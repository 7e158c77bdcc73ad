"""The built-in fake providers in one FastAPI app: SMS under /sms, email /email, AI /ai."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from app.sandbox.data import ai_score, email_history, iso, sms_history
from app.sandbox.resend import create_resend_app
from app.sandbox.state import SandboxState
from app.sandbox.twilio import create_twilio_app

SMS_PAGE_SIZE = 5
EMAIL_PAGE_SIZE = 4
DRIP_INTERVAL_S = 0.5

_CHALLENGE = {"WWW-Authenticate": "Bearer"}

IdempotencyKey = Annotated[str | None, Header()]


class SandboxError(HTTPException):
    """An error answer with the contract's `{"error", "detail"}` body."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None) -> None:
        super().__init__(status, detail, headers)
        self.code = code


class SmsSend(BaseModel):
    """What an SMS send carries."""

    contact_id: str = Field(min_length=1)
    body: str = Field(min_length=1)


class EmailSend(BaseModel):
    """What an email send carries."""

    lead_id: str = Field(min_length=1)
    subject: str = ""
    text: str = Field(min_length=1)


class ChatMessage(BaseModel):
    """One message of an OpenAI-style conversation."""

    role: str
    content: str


class ChatRequest(BaseModel):
    """The part of an OpenAI chat completions request the sandbox reads."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    # `{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}` or json_object;
    # the sandbox's reply (a score and a reason) fits the project's schema either way.
    response_format: dict | None = None


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    """A JSON error answer."""
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def _require_bearer(key: str) -> Callable[..., object]:
    """A dependency that admits only `Authorization: Bearer <key>`."""

    async def require(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), key.encode()):
            raise SandboxError(401, "unauthorized", "A valid bearer token is required.", _CHALLENGE)

    return require


async def _drip(body: bytes) -> AsyncIterator[bytes]:
    """Yield a body one byte at a time, slowly enough to outlast per-read timeouts."""
    for index in range(len(body)):
        if index:
            await asyncio.sleep(DRIP_INTERVAL_S)
        yield body[index : index + 1]


class _ConnectionReset(Response):
    """No answer at all: the connection is dropped as soon as the request has arrived."""

    async def __call__(self, scope, receive, send) -> None:
        # `receive` is the server's own (uvicorn's request cycle), whose transport is the
        # connection; aborting it closes the socket before a status line is written.
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if transport is None:
            raise ConnectionResetError("the sandbox dropped the connection")
        transport.abort()
        # Let the server see the connection lost, so it does not complain about a response
        # that was never started.
        for _ in range(3):
            await asyncio.sleep(0)


async def _serve(
    state: SandboxState, provider: str, kind: str, produce: Callable[[], dict]
) -> Response:
    """Answer a call with `produce()`, unless a fault armed for it says otherwise."""
    fault = state.begin_call(provider, kind)
    if fault is None:
        return JSONResponse(produce())
    mode = fault.mode
    if mode == "rate_limit":
        headers = {"Retry-After": str(fault.retry_after)}
        return _error(429, "rate_limited", "Too many requests; retry later.", headers)
    if mode == "error":
        return _error(500, "internal_error", "The provider failed to handle the request.")
    if mode == "garbage":
        return Response(b"not json{", media_type="application/json")
    if mode == "reset":
        return _ConnectionReset()
    if mode == "hang":
        await asyncio.sleep(fault.hang_s)
    answer = JSONResponse(produce())
    if mode == "accept_then_hang":
        await asyncio.sleep(fault.hang_s)
    if mode == "drip":
        return StreamingResponse(_drip(answer.body), media_type="application/json")
    return answer


def _encode_cursor(offset: int) -> str:
    """An opaque cursor for the page starting at `offset`."""
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    """The offset inside a cursor made by `_encode_cursor`."""
    try:
        label, _, offset = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if label == "offset" and offset.isdigit():
            return int(offset)
    except (binascii.Error, UnicodeError, ValueError):
        pass
    raise SandboxError(400, "invalid_cursor", "The cursor is not one this provider issued.")


def _send(state: SandboxState, provider: str, key: str | None, target: str, content: dict) -> dict:
    """Record a send once per idempotency key and answer its id."""
    if not key:
        raise SandboxError(400, "missing_idempotency_key", "Idempotency-Key is required.")
    message_id = state.record_send(provider, key, target, content, iso(datetime.now(UTC)))
    if message_id is None:
        raise SandboxError(409, "idempotency_conflict", "Key reused for a different request.")
    return {"id": message_id}


def _completion(request: ChatRequest) -> dict:
    """A chat.completion whose content is a score derived from the last user message."""
    user = [message.content for message in request.messages if message.role == "user"]
    if not user:
        raise SandboxError(422, "invalid_request", "At least one user message is required.")
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": json.dumps(ai_score(user[-1])),
                    "refusal": None,
                },
                "finish_reason": "stop",
            }
        ],
    }


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Render HTTP errors, ours and the router's own 404/405, in the contract's shape."""
    phrase = HTTPStatus(exc.status_code).phrase
    code = getattr(exc, "code", None) or phrase.lower().replace(" ", "_")
    return _error(exc.status_code, code, str(exc.detail), exc.headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    """Render validation failures without echoing the offending input."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    )
    return _error(422, "invalid_request", f"Invalid request ({problems}).")


def create_sandbox_app(state: SandboxState | None = None, key: str | None = None) -> FastAPI:
    """Build the sandbox providers, sharing `state` with whoever holds it."""
    state = state if state is not None else SandboxState()
    app = FastAPI(
        title="handoff sandbox providers",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(_require_bearer(key))] if key else None,
        exception_handlers={HTTPException: _http_error, RequestValidationError: _invalid_request},
    )
    app.state.sandbox = state
    app.mount("/resend", create_resend_app(state, key))

    @app.get("/sms/contacts/{contact_id}/messages")
    async def list_sms(contact_id: str, cursor: str | None = None) -> Response:
        """List one page of a contact's SMS history."""

        def page() -> dict:
            history = sms_history(contact_id) + state.extra_history("sms", contact_id)
            start = _decode_cursor(cursor) if cursor else 0
            end = start + SMS_PAGE_SIZE
            next_cursor = _encode_cursor(end) if end < len(history) else None
            return {"messages": history[start:end], "next_cursor": next_cursor}

        return await _serve(state, "sms", "list", page)

    @app.post("/sms/messages")
    async def send_sms(message: SmsSend, idempotency_key: IdempotencyKey = None) -> Response:
        """Send an SMS, once per Idempotency-Key."""
        content = {"body": message.body}
        return await _serve(
            state,
            "sms",
            "send",
            lambda: _send(state, "sms", idempotency_key, message.contact_id, content),
        )

    @app.get("/email/leads/{email_lead_id}/replies")
    async def list_email(email_lead_id: str, page: Annotated[int, Query(ge=1)] = 1) -> Response:
        """List one page (from 1) of a lead's email thread."""

        def replies() -> dict:
            history = email_history(email_lead_id) + state.extra_history("email", email_lead_id)
            end = page * EMAIL_PAGE_SIZE
            next_page = page + 1 if end < len(history) else None
            return {"replies": history[end - EMAIL_PAGE_SIZE : end], "next_page": next_page}

        return await _serve(state, "email", "list", replies)

    @app.post("/email/replies")
    async def send_email(reply: EmailSend, idempotency_key: IdempotencyKey = None) -> Response:
        """Send an email to a lead, once per Idempotency-Key."""
        content = {"subject": reply.subject, "text": reply.text}
        return await _serve(
            state,
            "email",
            "send",
            lambda: _send(state, "email", idempotency_key, reply.lead_id, content),
        )

    @app.post("/ai/chat/completions")
    async def chat_completions(request: ChatRequest) -> Response:
        """Score the last user message, deterministically, in OpenAI's chat.completion shape."""
        return await _serve(state, "ai", "score", lambda: _completion(request))

    app.mount("/twilio", create_twilio_app(state, key))
    return app
