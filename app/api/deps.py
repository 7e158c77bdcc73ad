"""Request dependencies: settings, the database, and bearer auth.

All are `async def`: FastAPI runs a plain `def` dependency in a worker thread, which costs
more than everything else these do.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from app.api.errors import ApiError
from app.db import Database
from app.settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.db.engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
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


async def require_api_token(request: Request, settings: SettingsDep) -> None:
    _require(request, settings.api_token, "API_TOKEN")


async def require_cron_secret(request: Request, settings: SettingsDep) -> None:
    _require(request, settings.cron_secret, "CRON_SECRET")


ApiAuth = Depends(require_api_token)
CronAuth = Depends(require_cron_secret)
