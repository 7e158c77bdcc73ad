"""One real PgBouncer in transaction mode for the session, in front of the tests' PostgreSQL.

Its wildcard database passes every database name through, so a test reaches its own database
through the pooler at `pooled_url`. Without a pgbouncer binary the tests that need it are
skipped, except in CI (`CI=true`), where they fail.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.pooled.bouncer import Bouncer, find_pgbouncer
from tests.support import free_port


@pytest.fixture(scope="session")
def pgbouncer(admin_url: str) -> Iterator[Bouncer]:
    binary = find_pgbouncer()
    if binary is None:
        reason = "pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="handoff-pgbouncer-") as directory:
        bouncer = Bouncer(binary, admin_url, Path(directory), free_port())
        try:
            yield bouncer.start()
        finally:
            bouncer.stop()


@pytest.fixture
def pooled_url(pgbouncer: Bouncer, database_url: str) -> str:
    """The test's own database, through PgBouncer."""
    return pgbouncer.url(database_url)


@pytest.fixture
async def slow_jit(db: asyncpg.Connection, database_url: str) -> None:
    """JIT on for the test's database, compiling an expensive query at full optimisation: a
    catalog lookup run with JIT then takes seconds, as on the servers where asyncpg's type
    lookup was seen passing a request's deadline, while the queue's cheap statements stay
    below JIT's cost threshold. Server connections opened from now on start with it."""
    name = urlsplit(database_url).path.lstrip("/")
    for setting in ("jit = on", "jit_inline_above_cost = 0", "jit_optimize_above_cost = 0"):
        await db.execute(f"ALTER DATABASE {name} SET {setting}")
