"""B17 tracing_cost: B1, B3 and B4 with tracing off and on, exporting to a loopback collector.

Off is how handoff runs with OTEL_EXPORTER_OTLP_ENDPOINT unset (with or without the `otel`
extra installed: the off path imports no OpenTelemetry). On is the `otel` extra exporting over
OTLP/HTTP to `sink`, a collector stand-in in a process of its own that takes each export
request and answers 200 (an empty ExportTraceServiceResponse); it decodes what it got only
after each measurement, to count the spans that arrived. The SDK's batch processor is left at
its defaults (a queue of 2,048 spans, 512 per export, every 5 s): spans beyond its queue are
dropped, as they would be in production, and the row says how many arrived.

A third mode samples one trace in ten with the standard variables
(OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1): an unsampled
span is still made, but neither recorded nor exported.

B1 runs each enqueue in a span of its own when tracing is on, standing for the request that
enqueues (a query outside any trace is not traced). Each row measures the modes in the same
rounds, in turn, so the ratios are what to read on a shared machine.

    python -m bench.tracing sink PORT     # the collector stand-in alone
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bench.common import (
    Check,
    Row,
    Settings,
    apply_handoff_schema,
    checkpoint,
    closed_loop,
    drop_db,
    open_handoff,
    per_round,
    recreate_db,
    reset_handoff,
    rotated,
    warm_pool,
)
from bench.drain import DRAIN_BUDGET_S, POOL_SIZE, fill_handoff, handoff_runner
from bench.http import (
    CLIENT,
    SYNC_DEDUP_LUA,
    SYNC_NEW_LUA,
    TOKEN,
    free_port,
    run_wrk,
    subprocess_server,
)

TRACING_DB = "bench_handoff_tracing"
MODES = ["off", "on, exporting", "on, 10 % sampled"]
# The standard variables that sample one trace in ten (its spans' children follow the root).
SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
CALLERS = 32
# API_TOKEN must be at least 16 characters; B3's own is shorter, so its scripts get this one.
API_TOKEN = "bench-tracing-token-0123"  # noqa: S105 - for a server bound to loopback
DEDUP_LUA = SYNC_DEDUP_LUA.replace(f"Bearer {TOKEN}", f"Bearer {API_TOKEN}")
NEW_LUA = SYNC_NEW_LUA.replace(f"Bearer {TOKEN}", f"Bearer {API_TOKEN}")


# --- the collector stand-in -------------------------------------------------------------------


def serve_sink(port: int) -> None:
    """Answer every OTLP/HTTP export with 200; GET /stats counts (and forgets) what came."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                ExportTraceServiceRequest,
            )

            taken = bodies[:]
            del bodies[: len(taken)]
            spans = 0
            for body in taken:
                request = ExportTraceServiceRequest.FromString(body)
                spans += sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
            answer = json.dumps(
                {"requests": len(taken), "bytes": sum(map(len, taken)), "spans": spans}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


@contextlib.asynccontextmanager
async def sink() -> AsyncIterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = [sys.executable, "-m", "bench.tracing", "sink", str(port)]
    async with subprocess_server(args, dict(os.environ), f"{base}/stats"):
        yield base


async def sink_stats(base: str) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{base}/stats")).json()


def mode_env(mode: str) -> dict[str, str]:
    return SAMPLED if mode == MODES[2] else {}


@contextlib.contextmanager
def traced(mode: str, endpoint: str):
    """Tracing as `mode` says for the block, in this process (exporting to `endpoint`)."""
    if mode == "off":
        yield
        return
    from app import tracing
    from app.settings import Settings as AppSettings

    saved = {name: os.environ.get(name) for name in SAMPLED}
    os.environ.update(mode_env(mode))
    tracing.setup(AppSettings(otel_exporter_otlp_endpoint=endpoint))
    try:
        yield
    finally:
        tracing.shutdown()  # exports what is queued: after the timing, not part of it
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- the rows ---------------------------------------------------------------------------------


async def enqueue_rate(url: str, seconds: float) -> float:
    """B1's handoff side: one enqueue per call, CALLERS callers, a new key each. With tracing
    on, each enqueue runs in a span of its own, standing for the request that enqueues (a query
    outside any trace is not traced at all)."""
    from app import tracing
    from app.queue import enqueue
    from bench.common import handoff_registry

    jobs = handoff_registry()
    db = await open_handoff(url, CALLERS)
    tracer = tracing._tracing.tracer if tracing.enabled() else None
    try:
        await warm_pool(db, CALLERS)

        async def op(w: int, i: int) -> None:
            key = (f"{time.monotonic_ns()}-{w}-{i}",)
            if tracer is None:
                async with db.acquire() as conn:
                    await enqueue(conn, "noop", key, registry=jobs)
                return
            with tracer.start_as_current_span("POST /enqueue"):
                async with db.acquire() as conn:
                    await enqueue(conn, "noop", key, registry=jobs)

        return await closed_loop(CALLERS, seconds, op)
    finally:
        await db.close()


async def drain_rate(url: str, count: int) -> float:
    """B4's handoff runner: jobs per second emptying a queue of `count` no-op jobs."""
    from bench.common import handoff_registry

    await reset_handoff(url)
    await fill_handoff(url, count)
    await checkpoint()
    db = await open_handoff(url, POOL_SIZE)
    try:
        runner = handoff_runner(db, handoff_registry())
        started = time.perf_counter()
        summary = await runner.drain(DRAIN_BUDGET_S)
        elapsed = time.perf_counter() - started
    finally:
        await db.close()
    assert summary.outcomes["succeeded"] == count, summary.as_dict()
    return count / elapsed


async def seed(base: str, leads: int) -> None:
    """B3's client and leads, through the API, 1,000 per request."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
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


def app_env(url: str, mode: str, endpoint: str) -> dict[str, str]:
    """The app's environment: this database, and the endpoint when tracing is on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"DATABASE_URL": url, "API_TOKEN": API_TOKEN, "PYTHONUNBUFFERED": "1"}
    if mode != "off":
        env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, **mode_env(mode)}
    return env


def uvicorn_args(port: int) -> list[str]:
    return [
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


async def tracing_cost(cfg: Settings) -> list[Row]:
    """B17: B1 (32 callers), B3 (POST /sync) and B4 (runner) with tracing off and on."""
    url = await recreate_db(TRACING_DB)
    try:
        await apply_handoff_schema(url)
        async with sink() as endpoint:
            return await _measure(url, endpoint, cfg)
    finally:
        await drop_db(TRACING_DB)


async def _measure(url: str, endpoint: str, cfg: Settings) -> list[Row]:
    enqueue_s = cfg.pick(3.0, 2.0)
    wrk_s = cfg.pick(5.0, 2.0)
    count = cfg.pick(10_000, 3_000)
    b1: dict[str, list[float]] = {m: [] for m in MODES}
    b3_new: dict[str, list[float]] = {m: [] for m in MODES}
    b3_dup: dict[str, list[float]] = {m: [] for m in MODES}
    b4: dict[str, list[float]] = {m: [] for m in MODES}
    arrived: dict[str, list[float]] = {"B1": [], "B3": [], "B4": []}

    # B1 and B4, in this process.
    for r in range(cfg.rounds):
        for mode in rotated(MODES, r):
            # Spans that arrived, counted for the mode that traces everything.
            counted = mode == MODES[1]
            await reset_handoff(url)
            await checkpoint()
            with traced(mode, endpoint):
                b1[mode].append(await enqueue_rate(url, enqueue_s))
            spans = (await sink_stats(endpoint))["spans"]
            if counted:
                arrived["B1"].append(spans / (b1[mode][-1] * enqueue_s))
            with traced(mode, endpoint):
                b4[mode].append(await drain_rate(url, count))
            spans = (await sink_stats(endpoint))["spans"]
            if counted:
                arrived["B4"].append(spans / count)

    # B3: a server per mode on one database; each (round, mode) syncs leads of its own.
    stride = cfg.pick(6_000, 3_000)
    await reset_handoff(url)
    ports = {mode: free_port() for mode in MODES}
    bases = {mode: f"http://127.0.0.1:{port}" for mode, port in ports.items()}
    async with contextlib.AsyncExitStack() as stack:
        for mode in MODES:
            env = app_env(url, mode, endpoint)
            await stack.enter_async_context(
                subprocess_server(uvicorn_args(ports[mode]), env, f"{bases[mode]}/healthz")
            )
        await seed(bases["off"], 2 + cfg.rounds * len(MODES) * 2 * stride)
        for mode in MODES:  # warm-up: creates L0's jobs, warms the pools
            await asyncio.to_thread(run_wrk, f"{bases[mode]}/sync", DEDUP_LUA, 1)
        await sink_stats(endpoint)
        slot = 0
        for r in range(cfg.rounds):
            for mode in rotated(MODES, r):
                await checkpoint()
                dup = await asyncio.to_thread(run_wrk, f"{bases[mode]}/sync", DEDUP_LUA, wrk_s)
                env_r = {
                    "BENCH_LEAD_BASE": str(1 + slot * 2 * stride),
                    "BENCH_LEAD_STRIDE": str(stride),
                }
                slot += 1
                new = await asyncio.to_thread(run_wrk, f"{bases[mode]}/sync", NEW_LUA, wrk_s, env_r)
                for result in (dup, new):
                    if result["non2xx"] or result["socket_errors"]:
                        raise RuntimeError(f"B17 {mode}: errors in {result}")
                if new["requests"] > stride * 2:
                    raise RuntimeError("B17: more requests than fresh leads; raise stride")
                b3_dup[mode].append(dup["rps"])
                b3_new[mode].append(new["rps"])
                if mode != "off":
                    # The batch processor exports every 5 s: wait for its last export.
                    await asyncio.sleep(6)
                stats = await sink_stats(endpoint)
                if mode == MODES[1]:
                    arrived["B3"].append(stats["spans"] / (dup["requests"] + new["requests"]))

    on = MODES[1]
    note = "on: the otel extra exporting over OTLP/HTTP to a loopback collector stand-in"

    def row(
        label: str, unit: str, samples: dict[str, list[float]], short: str, **extra: Any
    ) -> Row:
        return Row(
            "B17",
            label,
            unit,
            samples,
            [
                Check("on / off", per_round(samples[on], samples["off"]), 0.5),
                Check("sampled / off", per_round(samples[MODES[2]], samples["off"]), None),
            ],
            notes=[note, "10 % sampled: OTEL_TRACES_SAMPLER=parentbased_traceidratio, arg 0.1"],
            extra=extra,
            reference="off",
            short=short,
        )

    return [
        row(
            f"B1 with tracing: single enqueue, {CALLERS} callers",
            "jobs/s",
            b1,
            "enqueue, traced",
            spans_per_enqueue_arrived=arrived["B1"],
        ),
        row(
            "B3 with tracing: POST /sync, deduplicated (wrk, 64 connections)",
            "req/s",
            b3_dup,
            "HTTP sync dedup, traced",
            spans_per_request_arrived=arrived["B3"],
        ),
        row(
            "B3 with tracing: POST /sync, new (wrk, 64 connections)",
            "req/s",
            b3_new,
            "HTTP sync new, traced",
        ),
        row(
            f"B4 with tracing: runner drains {count:,} no-op jobs",
            "jobs/s",
            b4,
            "drain, traced",
            spans_per_job_arrived=arrived["B4"],
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["sink"]:
        serve_sink(int(sys.argv[2]))
    else:
        raise SystemExit("usage: python -m bench.tracing sink PORT")
