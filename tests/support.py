"""Test helpers: the tests' secrets, a uvicorn server in a thread, a service and its clients,
processes and their logs, URL tweaks, data builders, signed webhooks."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import uvicorn
from standardwebhooks.webhooks import Webhook

from app.settings import Settings
from app.telemetry import JsonFormatter

ROOT = Path(__file__).resolve().parents[1]
API_TOKEN = "test-api-token-0123456789"
CRON_SECRET = "test-cron-secret-0123456789"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SANDBOX_KEY = "sandbox-key-0123456789"
# The global Twilio account of the tests (its auth token is SANDBOX_KEY, as the sandbox's
# Twilio endpoints take), and the public URL Twilio-signed deliveries are checked against.
TWILIO_SID = "AC" + "0123456789abcdef" * 2
PUBLIC_URL = "https://handoff.test"
# A Fernet key (32 bytes, url-safe base64) for provider accounts' secrets.
ENCRYPTION_KEY = "aGFuZG9mZi10ZXN0LWVuY3J5cHRpb24ta2V5LTAwMDE="

SECRETS = (
    API_TOKEN,
    CRON_SECRET,
    WEBHOOK_SECRET,
    WEBHOOK_SECRET.removeprefix("whsec_"),
    SANDBOX_KEY,
    ENCRYPTION_KEY,
)
EMAIL_SHAPED = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}")


class ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1 (a free port) from a thread of its own."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError("the server failed to start")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("the server did not start within 10 s")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def swap_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def gather_limited(limit: int, coros: list) -> list:
    """Run coroutines with at most `limit` in flight."""
    gate = asyncio.Semaphore(limit)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


def signed(
    secret: str, body: bytes, *, msg_id: str, at: datetime | None = None, prefix: str = "webhook"
) -> dict[str, str]:
    """Standard Webhooks headers for this body, as a sender would make them."""
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": signature,
        "content-type": "application/json",
    }


async def seed(service, client_id: str = "acme", leads: int = 3, **lead_fields: Any) -> list[str]:
    """A client and `leads` leads with an SMS and an email identity each; returns lead ids."""
    response = await service.api.post("/api/clients", json={"id": client_id, "name": "Acme"})
    assert response.status_code == 200, response.text
    ids = [f"{client_id}-lead-{i}" for i in range(leads)]
    if not ids:
        return ids
    body = {
        "client_id": client_id,
        "leads": [
            {
                "id": lid,
                "name": f"Lead {i}",
                "sms_contact_id": f"c-{lid}",
                "email_lead_id": f"e-{lid}",
                **lead_fields,
            }
            for i, lid in enumerate(ids)
        ],
    }
    response = await service.api.post("/api/leads", json=body)
    assert response.status_code == 200, response.text
    return ids


def has_route(path: str) -> bool:
    """Whether the app's OpenAPI document has this path (as declared: `/api/jobs/{job_id}`)."""
    from app.main import create_app

    settings = Settings(_env_file=None, database_url="postgresql://handoff@127.0.0.1/handoff")
    return path in create_app(settings).openapi()["paths"]


def assert_error(response: Any, status: int, code: str | None = None) -> dict:
    """The status and the contract's error body, {"error": str, "detail": str}, with no trace."""
    assert response.status_code == status, (str(response.request.url), response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"] == code, body
    return body


async def wait_until_serving(service: Any, process: Any, why_exited: Any = None) -> None:
    """Poll a service process's /healthz until it answers; fail if the process exits first."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if (await service.anon.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, why_exited() if why_exited else "the service process exited"
        assert time.monotonic() < deadline, "the service process did not start"
        await asyncio.sleep(0.05)


async def eventually(predicate, within_s: float, step_s: float = 0.05, what: str = "condition"):
    """Poll an async predicate until it holds; fail naming `what` after `within_s`."""
    deadline = time.monotonic() + within_s
    while not (value := await predicate()):
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(step_s)
    return value


class Service:
    """A running app: its base URL and clients carrying the right bearer tokens."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        limits = httpx.Limits(max_connections=200)
        self.api = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {API_TOKEN}"},
            timeout=60,
            limits=limits,
        )
        self.cron = httpx.AsyncClient(
            base_url=base_url, headers={"Authorization": f"Bearer {CRON_SECRET}"}, timeout=60
        )
        self.anon = httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits)

    async def run_jobs(self, budget_s: float = 30) -> dict:
        response = await self.cron.post(
            f"/api/cron/background-jobs?budget_s={budget_s}", timeout=budget_s + 30
        )
        assert response.status_code == 200, response.text
        return response.json()

    async def aclose(self) -> None:
        for client in (self.api, self.cron, self.anon):
            await client.aclose()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a process these settings."""
    env = {"PATH": os.environ.get("PATH", "")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    return env


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


def spawn(args: list[str], settings: Settings, logs: ProcessLogs, name: str) -> subprocess.Popen:
    """`python <args>` with these settings in its environment, its output kept in `logs`."""
    out, err = logs.open(name)
    try:
        return subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=settings_env(settings), stdout=out, stderr=err
        )
    finally:
        out.close()
        err.close()


class LogCapture(logging.Handler):
    """Every log line as the service writes it (JSON), for assertions."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines]

    def errors(self) -> list[dict]:
        return [r for r in self.records() if r["level"] in ("error", "critical")]


async def assert_enqueued(conn: Any, type: str, *, count: int = 1, **fields: Any) -> list[Any]:
    """Exactly `count` jobs of `type` whose columns equal `fields` (client_id=, lead_id=,
    status=, dedupe_key=, …); returns their rows, oldest first."""
    known = {"client_id", "lead_id", "status", "dedupe_key", "attempts", "max_attempts"}
    assert set(fields) <= known, f"assert_enqueued compares only {sorted(known)}"
    conditions = ["type = $1", *(f"{name} = ${n}" for n, name in enumerate(fields, start=2))]
    query = f"SELECT * FROM jobs WHERE {' AND '.join(conditions)} ORDER BY id"  # noqa: S608 (columns from the fixed set above)
    rows = await conn.fetch(query, type, *fields.values())
    assert len(rows) == count, f"{len(rows)} {type} jobs with {fields}, not {count}"
    return rows


async def run_job(
    database_url: str,
    type: str,
    key: str = "job",
    *,
    deps: Any = None,
    registry: Any = None,
    **enqueue_kw: Any,
) -> Any:
    """Enqueue one job and attempt it once with a real Runner, without an HTTP server; its row
    afterwards. The database must hold no other due job (each test has its own database)."""
    from app.db import Database
    from app.queue import Runner, enqueue
    from app.queue import registry as default_registry

    registry = registry or default_registry
    db = await Database.open(database_url, pool_size=2)
    try:
        async with db.acquire() as conn:
            job = await enqueue(conn, type, key, registry=registry, **enqueue_kw)
        runner = Runner(
            db, concurrency=1, job_timeout_s=30, lease_s=60, deps=deps, registry=registry
        )
        [claimed] = await runner.claim(1)
        assert str(claimed.id) == job.id, "another job was due"
        await runner.attempt(claimed)
        async with db.acquire() as conn:
            return await conn.fetchrow("SELECT * FROM jobs WHERE id = $1", claimed.id)
    finally:
        await db.close()


# --- client keys ---------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_client_key(service, client_id: str) -> dict:
    """A new key of the client, as POST /api/clients/{client_id}/keys answers it."""
    response = await service.api.post(f"/api/clients/{client_id}/keys")
    assert response.status_code == 201, response.text
    return response.json()


async def revoke_client_key(service, client_id: str, key_id: str) -> None:
    response = await service.api.delete(f"/api/clients/{client_id}/keys/{key_id}")
    assert response.status_code == 204, response.text
    assert response.content == b""


async def insert_job(conn: Any, client_id: str | None, status: str, key: str) -> str:
    """A conversation_sync row of `client_id` (None: of no client, as the cron ticks are) in
    `status` (pending ones due in an hour, so nothing runs them); its id."""
    job_id = await conn.fetchval(
        """
        INSERT INTO jobs (type, dedupe_key, dedupe_scope, client_id, lead_id, status, run_at,
                          finished_at)
        VALUES ('conversation_sync', $1, 'forever', $2::text, $3::text, $4,
                now() + interval '1 hour', CASE WHEN $4 = 'pending' THEN NULL ELSE now() END)
        RETURNING id
        """,
        f"test:{key}",
        client_id,
        f"{client_id}-lead-0" if client_id else None,
        status,
    )
    return str(job_id)
