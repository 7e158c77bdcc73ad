"""`alembic upgrade head` (the CLI, as the Docker image runs it on every start) with only a
pooled DATABASE_URL: run again, and run by several containers starting at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from app.db import asyncpg_dsn
from app.migrations import alembic_config
from tests.pooled.bouncer import Bouncer
from tests.support import swap_database

ROOT = Path(__file__).resolve().parents[2]
ALEMBIC = Path(sys.executable).parent / "alembic"
AT_ONCE = 4


@pytest.fixture
async def empty_database(admin_url: str) -> AsyncIterator[str]:
    """A database with no schema at all (the tests' usual ones are migrated clones)."""
    name = f"handoff_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield swap_database(admin_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


async def upgrade_through(pgbouncer: Bouncer, database_url: str) -> subprocess.CompletedProcess:
    """`alembic upgrade head` as a container runs it, with only the pooled URL."""
    env = {
        "PATH": f"{ALEMBIC.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DATABASE_URL": pgbouncer.url(database_url),
        "DATABASE_POOLED": "true",
    }
    process = await asyncio.create_subprocess_exec(
        str(ALEMBIC),
        "upgrade",
        "head",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return subprocess.CompletedProcess(["alembic"], process.returncode, output.decode())


async def assert_at_head(database_url: str) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        assert await conn.fetch("SELECT version_num FROM alembic_version") == [(head,)]
        assert await conn.fetchval("SELECT to_regclass('public.jobs') IS NOT NULL")
    finally:
        await conn.close()


async def test_upgrade_through_pgbouncer_runs_again_and_again(pgbouncer, empty_database):
    for _ in range(3):
        run = await upgrade_through(pgbouncer, empty_database)
        assert run.returncode == 0, run.stdout
    await assert_at_head(empty_database)


async def test_upgrades_started_together_through_pgbouncer_apply_once(pgbouncer, empty_database):
    runs = await asyncio.gather(
        *(upgrade_through(pgbouncer, empty_database) for _ in range(AT_ONCE))
    )
    assert [r.returncode for r in runs] == [0] * AT_ONCE, [r.stdout for r in runs]
    await assert_at_head(empty_database)
