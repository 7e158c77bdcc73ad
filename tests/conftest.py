"""A real PostgreSQL for every test: one migrated template, one fresh database per test.

The server is HANDOFF_TEST_DATABASE_URL when set (an admin URL of any Postgres), else the
embedded one under .data/test-pg. Apps under test run in a real uvicorn on loopback, in a
thread of their own, and so do the sandbox providers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from app.db import async_url, start_embedded
from app.migrations import upgrade_to_head
from app.sandbox import SandboxState, create_sandbox_app
from app.settings import Settings
from tests.support import (
    API_TOKEN,
    CRON_SECRET,
    EMAIL_SHAPED,
    ENCRYPTION_KEY,
    PUBLIC_URL,
    ROOT,
    SANDBOX_KEY,
    SECRETS,
    TWILIO_SID,
    WEBHOOK_SECRET,
    LogCapture,
    ProcessLogs,
    ServerThread,
    Service,
    free_port,
    spawn,
    swap_database,
    wait_until_serving,
)

__all__ = ["API_TOKEN", "CRON_SECRET", "ROOT", "SANDBOX_KEY", "WEBHOOK_SECRET"]


@pytest.fixture(scope="session")
def admin_url() -> str:
    url = os.environ.get("HANDOFF_TEST_DATABASE_URL")
    return url or start_embedded(ROOT / ".data" / "test-pg")


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    name = f"handoff_tpl_{os.getpid()}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(async_url(admin_url).replace("+asyncpg", ""))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name}"))
    asyncio.run(admin(f"CREATE DATABASE {name}"))
    upgrade_to_head(swap_database(admin_url, name))
    yield name
    asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
async def database_url(admin_url: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"handoff_t_{uuid.uuid4().hex[:12]}"
    plain = async_url(admin_url).replace("+asyncpg", "")
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await conn.close()
    yield swap_database(admin_url, name)
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain asyncpg connection to the test's database, for setting up and asserting."""
    conn = await asyncpg.connect(async_url(database_url).replace("+asyncpg", ""))
    yield conn
    await conn.close()


@pytest.fixture
def sandbox() -> Iterator[tuple[SandboxState, str]]:
    state = SandboxState()
    with ServerThread(create_sandbox_app(state, key=SANDBOX_KEY)) as server:
        yield state, server.base_url


@pytest.fixture
def make_settings(database_url: str, sandbox) -> Callable[..., Settings]:
    _, base = sandbox

    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "database_url": database_url,
            "api_token": API_TOKEN,
            "cron_secret": CRON_SECRET,
            "webhook_secret": WEBHOOK_SECRET,
            "sms_provider_url": f"{base}/sms",
            "sms_provider_key": SANDBOX_KEY,
            "email_provider_url": f"{base}/email",
            "email_provider_key": SANDBOX_KEY,
            "ai_provider_url": f"{base}/ai",
            "ai_provider_key": SANDBOX_KEY,
            "provider_timeout_s": 5,
            "encryption_keys": ENCRYPTION_KEY,
            "twilio_account_sid": TWILIO_SID,
            "twilio_auth_token": SANDBOX_KEY,
            "twilio_from": "+15005550006",
            "twilio_api_url": f"{base}/twilio",
            "public_url": PUBLIC_URL,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
async def start_service(make_settings) -> AsyncIterator[Callable[..., Service]]:
    """Start the app on loopback with these setting overrides; stopped after the test."""
    from app.main import create_app

    running: list[tuple[ServerThread, Service]] = []

    def start(**overrides: object) -> Service:
        server = ServerThread(create_app(make_settings(**overrides))).start()
        service = Service(server.base_url)
        running.append((server, service))
        return service

    yield start
    for server, service in running:
        await service.aclose()
        await asyncio.to_thread(server.stop)


@pytest.fixture
def process_logs() -> Iterator[ProcessLogs]:
    with tempfile.TemporaryDirectory(prefix="handoff-proc-logs-") as directory:
        yield ProcessLogs(Path(directory))


@pytest.fixture
async def start_process_service(
    make_settings, process_logs
) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    """Like start_service, but in a process of its own (uvicorn app.main:app, settings in its
    environment, log lines kept in `process_logs`): for crashes, and for load that should not
    share the tests' interpreter."""
    running: list[tuple[subprocess.Popen, Service]] = []

    async def start(**overrides: object) -> Service:
        port = free_port()
        process = spawn(
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
def start_worker(make_settings, process_logs) -> Iterator[Callable[..., subprocess.Popen]]:
    """`python -m app.worker` with these setting overrides, log lines kept in `process_logs`;
    killed after the test if alive."""
    running: list[subprocess.Popen] = []

    def start(**overrides: object) -> subprocess.Popen:
        process = spawn(["-m", "app.worker"], make_settings(**overrides), process_logs, "worker")
        running.append(process)
        return process

    yield start
    for process in running:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@pytest.fixture
async def service(start_service) -> Service:
    return start_service()


@pytest.fixture(autouse=True)
def logs(process_logs) -> Iterator[LogCapture]:
    """Every test's log lines, and those of every process it started, checked afterwards: no
    secret and no email address in any."""
    capture = LogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    previous = root.level
    root.setLevel(logging.INFO)
    yield capture
    root.removeHandler(capture)
    root.setLevel(previous)
    for line in capture.lines + process_logs.lines() + process_logs.stderr().splitlines():
        assert not any(secret in line for secret in SECRETS), f"a secret in a log line: {line}"
        assert not EMAIL_SHAPED.search(line), f"an email address in a log line: {line}"
