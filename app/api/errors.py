"""The one error shape, {"error": code, "detail": sentence}, for every failure a client sees."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import is_db_unavailable, is_unstorable_text

log = logging.getLogger("handoff.api")

RETRY_AFTER_S = "5"


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail
        self.headers, self.extra = headers, extra


def error_response(
    status: int, error: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status, headers=headers)


def describe_validation_error(error: dict[str, Any]) -> str:
    # Field path and complaint only: echoing the input could put PII into a response or log.
    where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.detail, exc.headers, **exc.extra)


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = "; ".join(describe_validation_error(e) for e in exc.errors()[:5])
    return error_response(422, "validation_error", details or "the request is invalid")


_HTTP_CODES = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _storage(request: Request, exc: Exception) -> JSONResponse:
    if is_unstorable_text(exc):
        return error_response(
            422, "validation_error", "The request holds characters that cannot be stored."
        )
    if is_db_unavailable(exc):
        log.warning(
            "database unavailable",
            extra={"path": request.url.path, "error_type": type(exc).__name__},
        )
        return error_response(
            503,
            "database_unavailable",
            "The database cannot be reached; try again shortly.",
            {"Retry-After": RETRY_AFTER_S},
        )
    log.error("request failed", exc_info=exc, extra={"path": request.url.path})
    return error_response(500, "internal_error", "Something went wrong on our side.")


class RequestDeadline:
    """Answer when a request has not answered within `seconds`: 408 when it is still waiting
    for its body (a slow client), else 503 (a hung database).

    The request runs in a task of its own; past the deadline it is cancelled and left to
    unwind in the background (a connection stuck on a frozen server can take a while to let
    go) while the client gets its answer now. Paths in `exempt` (the runner, which keeps its
    own budget) are left alone, and so is a response already started.
    """

    def __init__(self, app: ASGIApp, seconds: float, exempt: tuple[str, ...]) -> None:
        self.app, self.seconds, self.exempt = app, seconds, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            return await self.app(scope, receive, send)
        started = abandoned = False
        awaiting_client = 0

        async def watch(message: Message) -> None:
            nonlocal started
            if abandoned:
                return  # the client already has its answer
            started = started or message["type"] == "http.response.start"
            await send(message)

        async def read(receive: Receive = receive) -> Message:
            nonlocal awaiting_client
            awaiting_client += 1
            try:
                return await receive()
            finally:
                awaiting_client -= 1

        request = asyncio.ensure_future(self.app(scope, read, watch))
        done, _ = await asyncio.wait({request}, timeout=self.seconds)
        if done or started:
            return await request
        abandoned = True
        slow_client = awaiting_client > 0
        request.cancel()
        request.add_done_callback(_quietly)
        log.warning(
            "request deadline passed",
            extra={"path": scope["path"], "waiting_for": "body" if slow_client else "server"},
        )
        if slow_client:
            response = error_response(
                408,
                "request_timeout",
                "The request body did not arrive in time.",
                {"Connection": "close"},
            )
        else:
            response = error_response(
                503,
                "database_unavailable",
                "The database did not answer in time; try again.",
                {"Retry-After": RETRY_AFTER_S},
            )
        await response(scope, receive, send)


def _quietly(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    # Database trouble has several faces; each maps to 503 when it means "unreachable".
    for kind in (
        sa_exc.SQLAlchemyError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        OSError,
        UnicodeEncodeError,
        asyncpg.exceptions.InternalClientError,
    ):
        app.add_exception_handler(kind, _storage)
    app.add_exception_handler(Exception, _storage)
