"""Liveness and readiness."""

from __future__ import annotations

import logging
from functools import lru_cache

from alembic.script import ScriptDirectory
from fastapi import APIRouter
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from app.api.deps import EngineDep
from app.api.errors import RETRY_AFTER_S, error_response
from app.migrations import MigrationsNotFound, alembic_config

router = APIRouter(tags=["health"])
log = logging.getLogger("handoff.api")


@lru_cache
def schema_head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
async def readyz(engine: EngineDep):
    """The database is reachable and its schema is at head."""
    try:
        head = schema_head()
    except MigrationsNotFound as exc:
        # A deployment without alembic.ini and alembic/ cannot tell what head is: not ready.
        log.error(str(exc))
        return error_response(
            503, "migrations_not_found", "The migration scripts were not deployed with the app."
        )
    try:
        async with engine.connect() as conn:
            current = await conn.scalar(text("SELECT version_num FROM alembic_version"))
    except ProgrammingError:  # no alembic_version table: never migrated
        current = None
    if current != head:
        return error_response(
            503,
            "schema_not_current",
            "The database schema is not at the latest migration.",
            {"Retry-After": RETRY_AFTER_S},
        )
    return {"status": "ready", "schema": current}
