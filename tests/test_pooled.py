"""Pooled Postgres (PgBouncer transaction mode): no prepared-statement caching anywhere."""

from __future__ import annotations

from sqlalchemy import text

from app.db import Database
from app.settings import Settings


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


def test_pooled_mode_is_detected_from_neon_pooler_hosts_and_can_be_forced():
    pooler = "postgresql://u:p@ep-cool-name-123-pooler.eu-central-1.aws.neon.tech/db"
    direct = "postgresql://u:p@ep-cool-name-123.eu-central-1.aws.neon.tech/db"
    assert settings(database_url=pooler).pooled is True
    assert settings(database_url=direct).pooled is False
    assert settings(database_url=direct, database_pooled=True).pooled is True
    assert settings(database_url=pooler, database_pooled=False).pooled is False
    # Migrations and LISTEN go to the direct host when one is given.
    assert settings(database_url=pooler, database_direct_url=direct).direct_url == direct
    assert settings(database_url=pooler).direct_url == pooler


async def test_pooled_engine_and_pool_cache_no_statements(database_url, db):
    pooled = await Database.open(database_url, pooled=True)
    plain = await Database.open(database_url)
    try:
        assert pooled.pool._connect_kwargs["statement_cache_size"] == 0
        assert plain.pool._connect_kwargs["statement_cache_size"] > 0
        # And it works: statements run unprepared-cached on both the pool and the engine.
        async with pooled.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM jobs") == 0
            assert conn._stmt_cache.get_max_size() == 0
        async with pooled.engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1
            adapted = (await conn.get_raw_connection()).dbapi_connection
            assert adapted._prepared_statement_cache is None  # SQLAlchemy's own cache
            assert adapted._connection._stmt_cache.get_max_size() == 0  # asyncpg's
    finally:
        await pooled.close()
        await plain.close()
