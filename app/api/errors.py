"""The one error shape, {"error": code, "detail": sentence}, for every failure a client sees."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import is_db_unavailable

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


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), exc.headers)


async def _storage(request: Request, exc: Exception) -> JSONResponse:
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


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    # Database trouble has several faces; each maps to 503 when it means "unreachable".
    for kind in (sa_exc.SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        app.add_exception_handler(kind, _storage)
    app.add_exception_handler(Exception, _storage)
