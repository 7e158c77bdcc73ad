"""HTTP: B3 `http_sync` (`POST /sync` against `GET /healthz` on the same server) and the local
provider B5 (`drain_http`) calls.

B3 runs the real app under uvicorn in a subprocess, on a database of its own, and loads it with
wrk (64 connections). `/healthz` touches neither the database nor the queue, so
sync rps / healthz rps says what share of the server's plain request capacity an enqueue
keeps, whatever else the machine is doing at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from bench.common import (
    ROOT,
    Check,
    Row,
    Settings,
    apply_handoff_schema,
    checkpoint,
    drop_db,
    fetchval,
    per_round,
    recreate_db,
    rotated,
)

HTTP_DB = "bench_handoff_http"
TOKEN = "bench-token-0123456789"  # noqa: S105 - a throwaway token for a server bound to loopback
CONNECTIONS = 64
CLIENT = "bench"

# wrk's Lua: one JSON line with what the table needs. errors.status counts answers >= 400.
REPORT_LUA = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d,' ..
    ' "p50_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

SYNC_HEADERS = f"""
local headers = {{}}
headers["Authorization"] = "Bearer {TOKEN}"
headers["Content-Type"] = "application/json"
"""

# Every request for the same lead: both of its jobs are live, so each answer is a duplicate.
SYNC_DEDUP_LUA = (
    SYNC_HEADERS
    + f"""
local body = '{{"client_id": "{CLIENT}", "lead_id": "L0"}}'
function request()
  return wrk.format("POST", "/sync", headers, body)
end
"""
    + REPORT_LUA
)

# Every request for a lead never synced before: each creates two jobs. Each wrk thread walks
# its own stretch of lead ids, from BENCH_LEAD_BASE on.
SYNC_NEW_LUA = (
    SYNC_HEADERS
    + """
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  nextid = tonumber(os.getenv("BENCH_LEAD_BASE")) + tid * tonumber(os.getenv("BENCH_LEAD_STRIDE"))
end
function request()
  nextid = nextid + 1
"""
    + f"""  local body = '{{"client_id": "{CLIENT}", "lead_id": "L' .. nextid .. '"}}'
  return wrk.format("POST", "/sync", headers, body)
end
"""
    + REPORT_LUA
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_until_up(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def subprocess_server(args: list[str], env: dict[str, str], ready_url: str):  # noqa: ANN201
    """Run a server process until the block ends; its output is kept to explain a failed start."""
    with tempfile.TemporaryFile() as log:
        # Popen only forks; the waiting is done off the event loop below.
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)  # noqa: S603, ASYNC220
        try:
            try:
                await wait_until_up(ready_url)
            except RuntimeError:
                log.seek(0)
                raise RuntimeError(log.read().decode(errors="replace")[-2000:]) from None
            yield proc
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


# --- the local provider (B5, drain_http) ------------------------------------------------------


class _ProviderProtocol(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive server answering every request with a small JSON body.

    As cheap as a server can be, so the provider costs the machine as little as possible and
    the same for every system calling it.
    """

    RESPONSE = b""  # set by serve_provider

    @staticmethod
    def response(body: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            length = 0
            marker = head.find(b"content-length:")
            if marker >= 0:
                length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.transport.write(self.RESPONSE)  # type: ignore[attr-defined]


# What the provider answers by default: a send's result (B5).
SEND_BODY = b'{"id": "m-1", "status": "queued"}'
# An SMS history with no message in it, one page (B11, B12).
EMPTY_HISTORY_BODY = b'{"messages": [], "next_cursor": null}'
BODIES = {"send": SEND_BODY, "empty-history": EMPTY_HISTORY_BODY}


def serve_provider(port: int, body: bytes = SEND_BODY) -> None:
    _ProviderProtocol.RESPONSE = _ProviderProtocol.response(body)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_ProviderProtocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


@contextlib.asynccontextmanager
async def provider(body: str = "send", path: str = "/v1/messages") -> AsyncIterator[str]:
    """Start the provider in a process of its own, answering every request with one of
    BODIES; yield the URL of `path` on it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{path}"
    args = [sys.executable, "-m", "bench.http", "provider", str(port), body]
    async with subprocess_server(args, dict(os.environ), url):
        yield url


# --- B3: http_sync ----------------------------------------------------------------------------


def wrk_path() -> str:
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench: wrk not found (apt-get install wrk)")
    return found


def run_wrk(
    url: str, lua: str, seconds: float, env: dict[str, str] | None = None
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(lua)
        script = f.name
    args = [
        wrk_path(),
        "-t2",  # one per core: wrk shares the machine with the server and Postgres
        f"-c{CONNECTIONS}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        script,
        url,
    ]
    try:
        out = subprocess.run(  # noqa: S603
            args, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=True
        )
    finally:
        os.unlink(script)
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH "))
    result = json.loads(line.removeprefix("BENCH "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


async def seed(base: str, leads: int) -> None:
    """A client and its leads, through the API, 1,000 per request."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        r = await client.post("/api/clients", json={"id": CLIENT, "name": "Bench"})
        r.raise_for_status()
        for start in range(0, leads, 1000):
            batch = [
                {"id": f"L{n}", "sms_contact_id": f"s{n}", "email_lead_id": f"e{n}"}
                for n in range(start, min(leads, start + 1000))
            ]
            r = await client.post("/api/leads", json={"client_id": CLIENT, "leads": batch})
            r.raise_for_status()


@dataclass
class HttpSyncSetup:
    url: str  # the app's database
    base: str  # the app's address
    stride: int  # fresh lead ids per wrk thread per round


@dataclass
class HttpSyncFigures:
    samples: dict[str, list[float]]  # request kind -> req/s, one per round
    p99: dict[str, list[float]]  # request kind -> ms, one per round
    created: list[float]  # jobs created per "new" request, one per round


def lead_stride(cfg: Settings) -> int:
    # Each thread's stretch of fresh leads per round; far more than a round can use at the
    # rates seen here (a few thousand requests per second at most).
    return cfg.pick(6_000, 3_000)


@contextlib.asynccontextmanager
async def http_sync_setup(cfg: Settings) -> AsyncIterator[HttpSyncSetup]:
    """The app under uvicorn on a database of its own, with a client and its leads seeded."""
    stride = lead_stride(cfg)
    leads = 2 + cfg.rounds * 2 * stride  # ids 0 .. 2 * stride * rounds + 1
    url = await recreate_db(HTTP_DB)
    try:
        await apply_handoff_schema(url)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "API_TOKEN": TOKEN,
            # Fewer JSON lines on stderr: the figure is the request path, not the log pipe.
            "PYTHONUNBUFFERED": "1",
        }
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            "app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        async with subprocess_server(args, env, f"{base}/healthz"):
            await seed(base, leads)
            yield HttpSyncSetup(url, base, stride)
    finally:
        await drop_db(HTTP_DB)


HTTP_KINDS = ["GET /healthz", "POST /sync, deduplicated", "POST /sync, new"]


async def http_sync_measure(setup: HttpSyncSetup, cfg: Settings) -> HttpSyncFigures:
    url, base, stride = setup.url, setup.base, setup.stride
    seconds = cfg.pick(5.0, 2.0)
    samples: dict[str, list[float]] = {n: [] for n in HTTP_KINDS}
    p99: dict[str, list[float]] = {n: [] for n in HTTP_KINDS}
    created: list[float] = []
    scripts = {
        "GET /healthz": (f"{base}/healthz", REPORT_LUA),
        "POST /sync, deduplicated": (f"{base}/sync", SYNC_DEDUP_LUA),
        "POST /sync, new": (f"{base}/sync", SYNC_NEW_LUA),
    }
    # Warm-up: the first dedup request creates L0's jobs; the rest warm the pools.
    for name in HTTP_KINDS[:2]:
        await asyncio.to_thread(run_wrk, *scripts[name], 1)
    for r in range(cfg.rounds):
        for name in rotated(HTTP_KINDS, r):
            await checkpoint()
            env_r = {
                "BENCH_LEAD_BASE": str(1 + r * 2 * stride),
                "BENCH_LEAD_STRIDE": str(stride),
            }
            before = await fetchval(url, "SELECT count(*) FROM jobs")
            result = await asyncio.to_thread(run_wrk, *scripts[name], seconds, env_r)
            if result["non2xx"] or result["socket_errors"]:
                raise RuntimeError(f"B3 {name}: errors in {result}")
            samples[name].append(result["rps"])
            p99[name].append(result["p99_us"] / 1000)
            if name == "POST /sync, new":
                if result["requests"] > stride * 2:
                    raise RuntimeError("B3: more requests than fresh leads; raise stride")
                # wrk counts only the answers it read before its deadline; the server may
                # have finished a few more, so this can exceed 2 slightly.
                new_jobs = await fetchval(url, "SELECT count(*) FROM jobs") - before
                created.append(new_jobs / result["requests"])
    return HttpSyncFigures(samples, p99, created)


def http_sync_rows(figures: HttpSyncFigures) -> list[Row]:
    samples = figures.samples
    health = samples["GET /healthz"]
    return [
        Row(
            "B3",
            f"HTTP, {CONNECTIONS} connections (wrk), same server",
            "req/s",
            samples,
            [
                Check(
                    "sync deduplicated / healthz",
                    per_round(samples["POST /sync, deduplicated"], health),
                    0.4,
                ),
                Check("sync new / healthz", per_round(samples["POST /sync, new"], health), 0.4),
            ],
            extra={
                "p99_ms": figures.p99,
                # Jobs created per "new" request: 2 (one per channel) when none was a duplicate.
                "new_jobs_per_request": figures.created,
            },
            short="HTTP POST /sync",
        )
    ]


async def http_sync(cfg: Settings) -> list[Row]:
    """B3: requests per second of `POST /sync` against `GET /healthz` on the same server."""
    async with http_sync_setup(cfg) as setup:
        figures = await http_sync_measure(setup, cfg)
    return http_sync_rows(figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["provider"]:
        serve_provider(int(sys.argv[2]), BODIES[sys.argv[3] if len(sys.argv) > 3 else "send"])
    else:
        raise SystemExit("usage: python -m bench.http provider PORT [send|empty-history]")
