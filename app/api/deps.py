"""Request dependencies: settings, the database, and bearer auth.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, which costs
more than everything else these do.

Who is calling is decided once, before the body is read (`app.api.body.guarded_router`, so an
unknown caller costs no upload): the API token, compared in constant time without the
database, or a live client key, found by its SHA-256 with one indexed lookup (no cache, so a
revoked key is refused by the next request). The guard puts the `Caller` on the request; the
dependencies below then only hand it to routes and put the security schemes (the Authorize
button) into /openapi.json.

Two guards: `api_router()` lets the API token and client keys in, `admin_router()` the API
token alone (a client key answers 403, or 404 `unknown_client` when the path names a client
that is not the key's: another client's id is answered exactly as one that does not exist).
"""

from __future__ import annotations

import hashlib
import hmac
import re
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


def bearer_token(request: Request) -> str:
    """The token of `Authorization: Bearer <token>`, or "" without one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def bearer_matches(request: Request, secret: str) -> bool:
    """Constant-time check of `Authorization: Bearer <secret>`."""
    return hmac.compare_digest(bearer_token(request).encode(), secret.encode())


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "A valid bearer token is required.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def not_configured(name: str) -> ApiError:
    # Fail closed: an unset secret never means "open".
    return ApiError(503, "not_configured", f"{name} is not set on this server.")


def unknown_client() -> ApiError:
    """What a client id that is not there answers, and so also one that is not the caller's."""
    return ApiError(404, "unknown_client", "No client with this id.")


# A client key: `hk_` and 32 random bytes in base64url (secrets.token_urlsafe(32)).
CLIENT_KEY_PREFIX = "hk_"
CLIENT_KEY_SHAPE = re.compile(r"hk_[A-Za-z0-9_-]{43}")
# One indexed lookup on every request made with a key, on the pool's connection rather than
# through Core: measured at about a quarter of Core's time (BEGIN and ROLLBACK round trips).
FIND_LIVE_KEY = "SELECT id, client_id FROM client_keys WHERE hash = $1 AND revoked_at IS NULL"


def client_key_hash(key: str) -> str:
    """What is stored of a key: its SHA-256, hex (why a fast hash: alembic 0005_client_keys)."""
    return hashlib.sha256(key.encode()).hexdigest()


async def authenticate(request: Request) -> Caller:
    """The API token (constant time, no database) or a live client key (one lookup); else 401.

    Only a token shaped like a key reaches the database, so a wrong token costs no query.
    With the database down a key answers 503 `database_unavailable` (app.api.errors).
    """
    api_token = request.app.state.settings.api_token
    if not api_token:
        raise not_configured("API_TOKEN")
    token = bearer_token(request)
    if hmac.compare_digest(token.encode(), api_token.encode()):
        return Caller()
    if CLIENT_KEY_SHAPE.fullmatch(token):
        async with request.app.state.db.acquire() as conn:
            key = await conn.fetchrow(FIND_LIVE_KEY, client_key_hash(token))
        if key is not None:
            return Caller(client_id=key["client_id"], key_id=key["id"])
    raise unauthorized()


async def check_caller(request: Request) -> None:
    """api_router's guard: the API token or a client key."""
    request.state.caller = await authenticate(request)


async def check_admin(request: Request) -> None:
    """admin_router's guard: the API token alone."""
    caller = await authenticate(request)
    if not caller.is_admin:
        named = request.path_params.get("client_id")
        if named is not None and named != caller.client_id:
            raise unknown_client()
        raise ApiError(403, "forbidden", "Only the API token may call this route.")
    request.state.caller = caller


async def check_cron_secret(request: Request) -> None:
    secret = request.app.state.settings.cron_secret
    if not secret:
        raise not_configured("CRON_SECRET")
    if not bearer_matches(request, secret):
        raise unauthorized()


# auto_error=False: the guards answer in the contract's error shape. These only document who
# may call a route; the guard has already decided before any dependency runs.
api_token_scheme = HTTPBearer(
    scheme_name="ApiToken", description="`Authorization: Bearer <API_TOKEN>`", auto_error=False
)
client_key_scheme = HTTPBearer(
    scheme_name="ClientKey",
    description="`Authorization: Bearer hk_…`, a client key: that client's data only",
    auto_error=False,
)
cron_secret_scheme = HTTPBearer(
    scheme_name="CronSecret",
    description="`Authorization: Bearer <CRON_SECRET>`, as Vercel Cron sends it",
    auto_error=False,
)
Credentials = HTTPAuthorizationCredentials | None


def _guarded(request: Request) -> None:
    # Fail closed should a route ever run without its guard.
    if getattr(request.state, "caller", None) is None:
        raise unauthorized()


async def api_token_or_client_key(
    request: Request,
    _token: Annotated[Credentials, Depends(api_token_scheme)],
    _key: Annotated[Credentials, Depends(client_key_scheme)],
) -> None:
    _guarded(request)


async def api_token_only(
    request: Request, _: Annotated[Credentials, Depends(api_token_scheme)]
) -> None:
    _guarded(request)


async def require_cron_secret(
    request: Request, _: Annotated[Credentials, Depends(cron_secret_scheme)]
) -> None:
    await check_cron_secret(request)


CronAuth = Depends(require_cron_secret)


def error(description: str) -> dict[str, Any]:
    """An OpenAPI response entry in the contract's error shape."""
    return {"model": ErrorOut, "description": description}


Responses = dict[int | str, dict[str, Any]]
AUTH_ERRORS: Responses = {
    401: error("The bearer token is missing or wrong, or a client key was revoked."),
    503: error(
        "The token is not configured on this server (`not_configured`), or the database "
        "cannot be reached (`database_unavailable`, with Retry-After)."
    ),
}
ADMIN_ERRORS: Responses = {
    403: error("A client key was sent: only the API token may call this route (`forbidden`)."),
}
INVALID_PARAMS: Responses = {422: error("A path or query parameter is invalid.")}
BODY_ERRORS: Responses = {
    408: error("The body did not arrive in time."),
    413: error("The body is over the route's limit (1 MiB unless documented otherwise)."),
    422: error("The body is not JSON or does not fit the schema."),
}


def api_router(**kwargs: Any) -> APIRouter:
    """A router for the API token and client keys; the caller is known before any body is read.

    Its routes scope what they read and change by `CallerDep`: another client's things answer
    404, exactly as things that do not exist."""
    return guarded_router(
        check_caller,
        dependencies=[Depends(api_token_or_client_key)],
        responses=AUTH_ERRORS,
        **kwargs,
    )


def admin_router(**kwargs: Any) -> APIRouter:
    """A router for routes only the API token may call (a client key answers 403 or 404)."""
    return guarded_router(
        check_admin,
        dependencies=[Depends(api_token_only)],
        responses={**AUTH_ERRORS, **ADMIN_ERRORS},
        **kwargs,
    )


def cron_router(**kwargs: Any) -> APIRouter:
    """A router for CRON_SECRET routes (Vercel Cron's)."""
    return guarded_router(
        check_cron_secret, dependencies=[CronAuth], responses=AUTH_ERRORS, **kwargs
    )
