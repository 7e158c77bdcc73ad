"""Alembic environment: async engine, URL from DATABASE_URL (or the caller's config).

With only a pooled DATABASE_URL (PgBouncer in transaction mode, `Settings.pooled`), the engine
keeps no prepared statement. Migrations run in one transaction that first takes an advisory
lock, so containers that all migrate as they start apply them once, one after the other.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from alembic import context
from app.db import async_url, pooled_connect_args
from app.models import SQLModel
from app.settings import load_settings

config = context.config
target_metadata = SQLModel.metadata

# Any bigint no other advisory lock on the database uses: "handoff" in ASCII.
MIGRATION_LOCK_KEY = 0x68616E646F6666


def _target() -> tuple[str, bool]:
    """The URL to migrate and whether it goes through a transaction-mode pooler."""
    url = config.attributes.get("database_url")
    if url:
        # The local run and the tests pass their server's own address.
        return async_url(url), False
    settings = load_settings()
    if not settings.direct_url:
        raise SystemExit("handoff: set DATABASE_URL (or DATABASE_DIRECT_URL) to run migrations")
    # DATABASE_DIRECT_URL, when set, bypasses the pooler; DATABASE_URL may go through it.
    pooled = settings.pooled and not settings.database_direct_url
    return async_url(settings.direct_url), pooled


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, compare_server_default=True
    )
    with context.begin_transaction():
        # Held until this transaction ends, so a runner that waited for it reads the version
        # the first one committed and finds nothing left to do. A session-level lock would
        # outlive the transaction on a pooled server connection that other clients then get,
        # and its unlock could reach another server connection: the transaction-level one is
        # safe behind a transaction-mode pooler and direct alike.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        context.run_migrations()


async def _run_async() -> None:
    url, pooled = _target()
    engine = create_async_engine(
        url, poolclass=NullPool, connect_args=pooled_connect_args() if pooled else {}
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    context.configure(
        url=_target()[0],
        target_metadata=target_metadata,
        literal_binds=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
