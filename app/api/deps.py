"""Request dependencies: settings, the database, and bearer auth.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, which costs
more than everything else these do.

Bearer checks run twice on a guarded route, and that is on purpose: first before the body is
read (`app.api.body.guarded_router`, so an unknown caller costs no upload), then as the
dependency below, which is what puts the security scheme (the Authorize button) into
/openapi.json.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.body import guarded_router
from app.api.errors import ApiError
from app.db import Database
from app.models.api import ErrorOut
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.db.engine


@dataclass(frozen=True)
class Caller:
    """Who is calling: the API token (every client's data) or a client key (one client's)."""

    client_id: str | None = None  # None: the API token
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.client_id is None

    def sees(self, client_id: str | None) -> bool:
        """Whether this caller may see (and change) what belongs to `client_id`."""
        return self.client_id is None or self.client_id == client_id


async def get_caller(request: Request) -> Caller:
    """The caller the route's guard authenticated (set before the body was read)."""
    return request.state.caller


SettingsDep = Annotated[Settings, Depends(get_settings)]
CallerDep = Annotated[Caller, Depends(get_caller)]
DbDep = Annotated[Database, Depends(get_db)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]


def bearer_matches(request: Request, secret: str) -> bool:
    """Constant-time check of `Authorization: Bearer <secret>`."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode(), secret.encode()
    )


def _require(request: Request, secret: str | None, name: str) -> None:
    if not secret:
        # Fail closed: an unset secret never means "open".
        raise ApiError(503, "not_configured", f"{name} is not set on this server.")
    if not bearer_matches(request, secret):
        raise ApiError(
            401,
            "unauthorized",
            "A valid bearer token is required.",
            headers={"WWW-Authenticate": "Bearer"},
        )


def check_api_token(request: Request) -> None:
    _require(request, request.app.state.settings.api_token, "API_TOKEN")
    request.state.caller = Caller()


def check_cron_secret(request: Request) -> None:
    _require(request, request.app.state.settings.cron_secret, "CRON_SECRET")


# auto_error=False: the checks above answer in the contract's error shape.
api_token_scheme = HTTPBearer(
    scheme_name="ApiToken", description="`Authorization: Bearer <API_TOKEN>`", auto_error=False
)
cron_secret_scheme = HTTPBearer(
    scheme_name="CronSecret",
    description="`Authorization: Bearer <CRON_SECRET>`, as Vercel Cron sends it",
    auto_error=False,
)
Credentials = HTTPAuthorizationCredentials | None


async def require_api_token(
    request: Request, _: Annotated[Credentials, Depends(api_token_scheme)]
) -> None:
    check_api_token(request)


async def require_cron_secret(
    request: Request, _: Annotated[Credentials, Depends(cron_secret_scheme)]
) -> None:
    check_cron_secret(request)


ApiAuth = Depends(require_api_token)
CronAuth = Depends(require_cron_secret)


def error(description: str) -> dict[str, Any]:
    """An OpenAPI response entry in the contract's error shape."""
    return {"model": ErrorOut, "description": description}


Responses = dict[int | str, dict[str, Any]]
AUTH_ERRORS: Responses = {
    401: error("The bearer token is missing or wrong."),
    503: error(
        "The token is not configured on this server (`not_configured`), or the database "
        "cannot be reached (`database_unavailable`, with Retry-After)."
    ),
}
INVALID_PARAMS: Responses = {422: error("A path or query parameter is invalid.")}
BODY_ERRORS: Responses = {
    408: error("The body did not arrive in time."),
    413: error("The body is over the route's limit (1 MiB unless documented otherwise)."),
    422: error("The body is not JSON or does not fit the schema."),
}


def api_router(**kwargs: Any) -> APIRouter:
    """A router for API_TOKEN routes: the token is checked before any body is read."""
    return guarded_router(check_api_token, dependencies=[ApiAuth], responses=AUTH_ERRORS, **kwargs)


def admin_router(**kwargs: Any) -> APIRouter:
    """A router for routes only the API token may call (never a client key)."""
    return guarded_router(check_api_token, dependencies=[ApiAuth], responses=AUTH_ERRORS, **kwargs)


def cron_router(**kwargs: Any) -> APIRouter:
    """A router for CRON_SECRET routes (Vercel Cron's)."""
    return guarded_router(
        check_cron_secret, dependencies=[CronAuth], responses=AUTH_ERRORS, **kwargs
    )
