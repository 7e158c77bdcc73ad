"""The app's connections behind a real PgBouncer in transaction mode: no prepared statement
kept or named, asyncpg's type lookups off the request path and in one transaction, and no
session state left on a server connection that other clients get next."""

from __future__ import annotations

import re
from collections import Counter

import httpx
from sqlalchemy import text

from app.db import ARRAY_TYPES, Database, driver_connection
from app.queue.sql import QUERIES
from tests.pooled.bouncer import direct_session, leftovers, server_sessions
from tests.support import gather_limited, seed

SYNCS = 500
IN_FLIGHT = 100
LEADS = 50


def test_every_array_type_of_the_queue_is_learnt_up_front():
    used = {m.lower() for sql in QUERIES.values() for m in re.findall(r"::(\w+)\[\]", sql)}
    # text[] is built into asyncpg; int is int4's alias in SQL.
    spelled = {"int": "int4", "bigint": "int8", "boolean": "bool"}
    assert {spelled.get(t, t) for t in used} - {"text"} <= set(ARRAY_TYPES)


async def test_pooled_engine_and_pool_keep_no_statements_direct_ones_do(database_url, db):
    pooled = await Database.open(database_url, pooled=True)
    plain = await Database.open(database_url)
    try:
        assert pooled.pool._connect_kwargs["statement_cache_size"] == 0
        assert plain.pool._connect_kwargs["statement_cache_size"] > 0
        async with pooled.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
            assert conn._stmt_cache.get_max_size() == 0
        async with pooled.engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
            adapted = (await conn.get_raw_connection()).dbapi_connection
            assert adapted._prepared_statement_cache is None  # SQLAlchemy's own cache
            assert adapted._connection._stmt_cache.get_max_size() == 0  # asyncpg's
        # Direct connections are as they were: both caches on, nothing looked up up front.
        async with plain.engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
            adapted = (await conn.get_raw_connection()).dbapi_connection
            assert adapted._prepared_statement_cache is not None
            assert adapted._connection._stmt_cache.get_max_size() > 0
        assert plain.pool._init is None
    finally:
        await pooled.close()
        await plain.close()


async def test_the_engine_and_pool_leave_no_statement_and_no_setting_behind(
    pooled_url, database_url, slow_jit
):
    start = await direct_session(database_url)
    assert (start.jit, start.jit_source, start.prepared, start.listening) == (
        "on",
        "database",
        0,
        0,
    )
    await server_sessions(pooled_url)  # every server connection open, so transactions spread
    # Two apps' worth of connections: had they named statements as asyncpg numbers them
    # (from __asyncpg_stmt_1__ in every process), they would collide on a server connection.
    databases = [await Database.open(pooled_url, pooled=True) for _ in range(2)]
    try:
        for database in databases:
            for _ in range(10):
                async with database.engine.begin() as conn:
                    assert await conn.scalar(text("SELECT count(*) FROM jobs")) == 0
                    raw = await driver_connection(conn)
                    assert await raw.fetchval("SELECT $1::float8[]", [0.5]) == [0.5]
                async with database.acquire() as conn:
                    assert await conn.fetchval("SELECT $1::int8[]", [1, 2]) == [1, 2]
    finally:
        for database in databases:
            await database.close()
    assert leftovers(await server_sessions(pooled_url), start) == []


async def test_a_cold_pool_answers_every_sync_through_pgbouncer(
    start_process_service, pooled_url, database_url, slow_jit
):
    """500 syncs against a freshly started app: each new pooled connection looks up the queue's
    array types before its first statement, in one transaction. asyncpg's own lookup, spread
    over server connections, ran with JIT on past the request deadline now and then (503s), and
    left jit=off on server connections; afterwards none may carry a setting, a prepared
    statement or a LISTEN."""
    start = await direct_session(database_url)
    await server_sessions(pooled_url)
    service = await start_process_service(database_url=pooled_url, database_pooled=True)
    leads = await seed(service, leads=LEADS)
    # Connections idle for a second are not reused: never one uvicorn is closing after its 5 s
    # keep-alive, which a starved test machine can reach mid-burst.
    limits = httpx.Limits(max_connections=IN_FLIGHT, keepalive_expiry=1)
    async with httpx.AsyncClient(
        base_url=service.base_url, headers=service.api.headers, limits=limits, timeout=60
    ) as client:
        responses = await gather_limited(
            IN_FLIGHT,
            [
                client.post("/sync", json={"client_id": "acme", "lead_id": leads[i % LEADS]})
                for i in range(SYNCS)
            ],
        )
    statuses = Counter(r.status_code for r in responses)
    left = leftovers(await server_sessions(pooled_url), start)
    assert statuses == {202: SYNCS} and left == [], (statuses, left)
