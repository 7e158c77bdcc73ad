"""Fair claim benchmarks: B14 `noisy_neighbour` (one client's backlog against another client's
single job), B15 `fairness_cost` (the no-op drain with turns and caps against the plain FIFO
claim) and B16 `rate_limit` (a shared provider limit held by three workers).

Every figure comes from handoff's own Runner, Worker and token buckets on the run's
PostgreSQL. The provider is played by the handler: it sleeps as long as the provider would
answer (B14) or records the instant of its call (B16), so what is measured is the queue.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import asyncpg

from bench.common import (
    Check,
    Row,
    Settings,
    apply_handoff_schema,
    drop_db,
    handoff_registry,
    open_handoff,
    per_round,
    recreate_db,
    reset_handoff,
    rotated,
)

FAIR_DB = "bench_fair_claim"
CONCURRENCY = 8
JOB_TIMEOUT_S = 30
LEASE_S = 60
POLL_INTERVAL_S = 1.0
GRACE_S = 1.0
PROVIDER_S = 0.05  # B14: how long the provider takes to answer
FIFO_CAP_S = 20.0  # B14: how long the FIFO claim's one try is waited for, at most


def runner(db: Any, jobs: Any, *, fair: bool, concurrency: int = CONCURRENCY) -> Any:
    from app.queue import Runner

    return Runner(
        db,
        registry=jobs,
        concurrency=concurrency,
        job_timeout_s=JOB_TIMEOUT_S,
        lease_s=LEASE_S,
        fair=fair,
    )


def worker(url: str, run: Any) -> Any:
    from app.db import asyncpg_dsn
    from app.queue.worker import Worker

    dsn = asyncpg_dsn(url)
    return Worker(
        run,
        listen=lambda: asyncpg.connect(dsn),
        poll_interval_s=POLL_INTERVAL_S,
        grace_s=GRACE_S,
    )


async def fill(url: str, jobs: Any, type: str, clients: list[str], count: int) -> None:
    """`count` due jobs of `type`, dealt round the `clients`, 1,000 per statement."""
    from app.queue import JobSpec, enqueue_many

    conn = await asyncpg.connect(url)
    try:
        for start in range(0, count, 1000):
            specs = [
                JobSpec(f"{type}{n}", clients[n % len(clients)])
                for n in range(start, min(count, start + 1000))
            ]
            await enqueue_many(conn, type, specs, registry=jobs)
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


# --- B14 ---------------------------------------------------------------------------------------


async def neighbour_waits(url: str, fair: bool, backlog: int, tries: int) -> list[float]:
    """Client a has `backlog` due jobs of PROVIDER_S each; one worker at CONCURRENCY works
    them. Client b enqueues one job at a time, `tries` times: how long each waited to start
    (seconds; a try not started within FIFO_CAP_S counts as FIFO_CAP_S)."""
    from app.queue import enqueue
    from app.queue.notify import Notifier

    started: dict[str, float] = {}
    seen = asyncio.Event()

    async def provider_call(_ctx: Any) -> None:
        await asyncio.sleep(PROVIDER_S)

    async def person(ctx: Any) -> None:
        started[ctx.job.payload["k"]] = time.monotonic()
        seen.set()

    jobs = handoff_registry(bulk=(provider_call, "forever"), person=(person, "forever"))
    await reset_handoff(url)
    await fill(url, jobs, "bulk", ["a"], backlog)
    db = await open_handoff(url, 10)
    stop = asyncio.Event()
    waits: list[float] = []
    try:
        async with Notifier(db):
            task = asyncio.create_task(worker(url, runner(db, jobs, fair=fair)).run(stop))
            await asyncio.sleep(1.0)  # the worker is busy with a's backlog
            for n in range(tries):
                key = f"{'fair' if fair else 'fifo'}-{n}"
                seen.clear()
                asked = time.monotonic()
                async with db.acquire() as conn:
                    await enqueue(
                        conn, "person", key, client_id="b", payload={"k": key}, registry=jobs
                    )
                try:
                    await asyncio.wait_for(seen.wait(), FIFO_CAP_S)
                    waits.append(started[key] - asked)
                except TimeoutError:
                    waits.append(FIFO_CAP_S)
                await asyncio.sleep(random.uniform(0.1, 0.3))
            stop.set()
            await task
    finally:
        await db.close()
    return waits


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def noisy_neighbour(cfg: Settings) -> list[Row]:
    """B14: client b's job start latency while client a has a long backlog, fair vs FIFO."""
    backlog = cfg.pick(20_000, 2_000)
    tries = cfg.pick(20, 5)
    url = await recreate_db(FAIR_DB)
    await apply_handoff_schema(url)
    fair_p99: list[float] = []
    fifo_wait: list[float] = []
    try:
        for round_ in range(cfg.rounds):
            for system in rotated(["fair", "fifo"], round_):
                if system == "fair":
                    waits = await neighbour_waits(url, True, backlog, tries)
                    fair_p99.append(p99(waits) * 1000)
                else:
                    # One try: under FIFO it waits for the whole backlog ahead of it.
                    waits = await neighbour_waits(url, False, backlog, 1)
                    fifo_wait.append(waits[0] * 1000)
    finally:
        await drop_db(FAIR_DB)
    return [
        Row(
            "B14",
            f"noisy neighbour: client A {backlog:,} due jobs of a {PROVIDER_S * 1000:g} ms "
            f"provider call, one worker at concurrency {CONCURRENCY}; client B's job start "
            f"(p99 of {tries} tries per round)",
            "ms",
            {"fair claim": fair_p99, "FIFO claim": fifo_wait},
            [
                Check("fair claim, p99", fair_p99, 1000.0, "<=", "ms"),
                Check("FIFO / fair", per_round(fifo_wait, fair_p99), None),
            ],
            notes=[
                f"FIFO: one try per round, waited for at most {FIFO_CAP_S:g} s; a figure of "
                f"{FIFO_CAP_S * 1000:,.0f} ms means it had not started by then (its backlog "
                f"ahead would take about {backlog * PROVIDER_S / CONCURRENCY:,.0f} s)."
            ],
            reference="fair claim",
            short="noisy neighbour",
        )
    ]


# --- B15 ---------------------------------------------------------------------------------------


async def drain_rate(url: str, count: int, clients: list[str], fair: bool) -> float:
    """Drain `count` no-op jobs dealt round `clients` with one runner; jobs per second."""
    jobs = handoff_registry()
    await reset_handoff(url)
    await fill(url, jobs, "noop", clients, count)
    db = await open_handoff(url, 10)
    try:
        started = time.monotonic()
        summary = await runner(db, jobs, fair=fair).drain(900)
        elapsed = time.monotonic() - started
        assert summary.outcomes["succeeded"] == count, summary.as_dict()
    finally:
        await db.close()
    return count / elapsed


async def fairness_cost(cfg: Settings) -> list[Row]:
    """B15: B4's no-op drain with the fair claim against the FIFO claim, over 10 clients."""
    count = cfg.pick(10_000, 2_000)
    clients = [f"client-{n}" for n in range(10)]
    url = await recreate_db(FAIR_DB)
    await apply_handoff_schema(url)
    rates: dict[str, list[float]] = {"fair claim": [], "FIFO claim": []}
    try:
        for round_ in range(cfg.rounds):
            for system in rotated(list(rates), round_):
                rates[system].append(await drain_rate(url, count, clients, system == "fair claim"))
    finally:
        await drop_db(FAIR_DB)
    return [
        Row(
            "B15",
            f"drain {count:,} no-op jobs of 10 clients, concurrency {CONCURRENCY}, "
            "fair claim vs FIFO claim",
            "jobs/s",
            rates,
            [Check("fair / FIFO", per_round(rates["fair claim"], rates["FIFO claim"]), 0.9)],
            reference="fair claim",
            short="fairness cost",
        )
    ]


# --- B16 ---------------------------------------------------------------------------------------


def worst_window(times: list[float], window_s: float) -> int:
    """The most calls in any half-open window of `window_s` seconds."""
    most, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


async def rate_run(url: str, per_min: float, seconds: float) -> dict[str, float]:
    """Three workers at concurrency 16 drain jobs that each make one call through a bucket of
    `per_min`; how the calls fell over `seconds`."""
    from app.handlers.deps import BucketGate
    from app.queue.notify import Notifier

    calls: list[float] = []

    async def call(ctx: Any) -> None:
        await BucketGate(ctx.db, "bench-provider", per_min).before_call()
        calls.append(time.monotonic())

    jobs = handoff_registry(call=(call, "forever"))
    count = int(per_min * seconds / 60 * 1.5)  # more than the limit lets through in time
    await reset_handoff(url)
    await fill(url, jobs, "call", [f"client-{n}" for n in range(8)], count)
    dbs = [await open_handoff(url, 10) for _ in range(3)]
    stop = asyncio.Event()
    try:
        async with Notifier(dbs[0]):
            started = time.monotonic()
            tasks = [
                asyncio.create_task(
                    worker(url, runner(db, jobs, fair=True, concurrency=16)).run(stop)
                )
                for db in dbs
            ]
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.gather(*tasks)
        attempts = await dbs[0].pool.fetchval("SELECT coalesce(max(attempts), 0) FROM jobs")
    finally:
        for db in dbs:
            await db.close()
    within = sorted(t for t in calls if t < started + seconds)
    allowed_per_10s = per_min / 6
    return {
        "used_pct": 100 * len(within) / (per_min * seconds / 60),
        "worst_10s": worst_window(within, 10.0),
        "over_limit": max(0, worst_window(within, 10.0) - allowed_per_10s),
        "max_attempts": attempts,
        "calls": len(within),
    }


async def rate_limit(cfg: Settings) -> list[Row]:
    """B16: a provider limit of 600 calls a minute, three workers at concurrency 16."""
    per_min = 600
    seconds = cfg.pick(120.0, 20.0)
    url = await recreate_db(FAIR_DB)
    await apply_handoff_schema(url)
    runs: list[dict[str, float]] = []
    try:
        for _ in range(cfg.pick(1, 1)):
            runs.append(await rate_run(url, per_min, seconds))
    finally:
        await drop_db(FAIR_DB)
    used = [r["used_pct"] for r in runs]
    over = [r["over_limit"] for r in runs]
    return [
        Row(
            "B16",
            f"rate limit {per_min}/min, {seconds:g}-s drain, three workers at concurrency 16 "
            "(share of the limit used)",
            "%",
            {"handoff": used},
            [
                Check("limit used", used, 90.0, ">=", "%"),
                Check("calls over the limit in the worst 10-s window", over, 0.0, "<=", " calls"),
            ],
            extra={
                "worst_10s_calls": [r["worst_10s"] for r in runs],
                "calls": [r["calls"] for r in runs],
                "max_attempts": [r["max_attempts"] for r in runs],
            },
            notes=[
                "A provider enforcing the limit over sliding 10-s windows would have answered "
                "429 to exactly the calls over the limit; none is the target."
            ],
            short="rate limit use",
        )
    ]
