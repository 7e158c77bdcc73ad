"""B8 `pickup_latency`: how soon an idle worker starts a job after its enqueue returns
(LISTEN/NOTIFY).

handoff's worker and pgqueuer's queue manager each sit idle in this process, listening; jobs
are enqueued one at a time at random gaps (so each finds the worker idle), and the latency is
from the enqueue call's return (the job is committed) to the first line of its handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bench.common import (
    HANDOFF_DB,
    Check,
    Row,
    Settings,
    apply_handoff_schema,
    drop_db,
    handoff_registry,
    open_handoff,
    per_round,
    recreate_db,
    rotated,
)
from bench.peers import Pgqueuer

CONCURRENCY = 8
JOB_TIMEOUT_S = 30
LEASE_S = 60
# The worker's default poll interval (1 s): it is the fallback, the notification the path. Its
# grace on stop is its default too.
POLL_INTERVAL_S = 1.0
GRACE_S = 10.0
# Let a freshly started worker settle into its idle wait before the first job.
SETTLE_S = 1.0


class Probe:
    """Enqueue-to-handler timing: the handler stamps when it starts, keyed by the job's key."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.arrived: dict[str, asyncio.Event] = {}

    def expect(self, key: str) -> asyncio.Event:
        self.arrived[key] = asyncio.Event()
        return self.arrived[key]

    def stamp(self, key: str) -> None:
        self.started[key] = time.perf_counter()
        if key in self.arrived:
            self.arrived[key].set()


async def time_pickups(
    enqueue: Any, probe: Probe, samples: int, rng: random.Random, tag: str
) -> list[float]:
    latencies = []
    for i in range(samples):
        await asyncio.sleep(rng.uniform(0.1, 0.3))
        key = f"{tag}-{i}"
        arrived = probe.expect(key)
        await enqueue(key)
        enqueued = time.perf_counter()
        await asyncio.wait_for(arrived.wait(), timeout=10)
        latencies.append((probe.started[key] - enqueued) * 1000)
    return latencies


async def run_handoff(url: str, samples: int, rng: random.Random, tag: str) -> list[float]:
    import asyncpg

    from app.db import asyncpg_dsn
    from app.queue import Runner, enqueue
    from app.queue.notify import Notifier
    from app.queue.worker import Worker

    probe = Probe()

    async def ping(ctx: Any) -> None:
        probe.stamp(ctx.job.payload["k"])

    jobs = handoff_registry(ping=(ping, "forever"))
    db = await open_handoff(url, 10)
    stop = asyncio.Event()
    runner = Runner(
        db, registry=jobs, concurrency=CONCURRENCY, job_timeout_s=JOB_TIMEOUT_S, lease_s=LEASE_S
    )
    dsn = asyncpg_dsn(url)
    worker = Worker(
        runner,
        listen=lambda: asyncpg.connect(dsn),
        poll_interval_s=POLL_INTERVAL_S,
        grace_s=GRACE_S,
    )

    async def put(key: str) -> None:
        async with db.acquire() as conn:
            await enqueue(conn, "ping", key, payload={"k": key}, registry=jobs)

    try:
        async with Notifier(db):
            task = asyncio.create_task(worker.run(stop))
            await asyncio.sleep(SETTLE_S)
            try:
                return await time_pickups(put, probe, samples, rng, tag)
            finally:
                stop.set()
                await task
    finally:
        await db.close()


async def run_pgqueuer(peer: Pgqueuer, samples: int, rng: random.Random, tag: str) -> list[float]:
    probe = Probe()

    async def ping(payload: dict[str, Any]) -> None:
        probe.stamp(payload["k"])

    await peer.open(10, ping)
    stop = asyncio.Event()

    async def put(key: str) -> None:
        await peer.queries.enqueue(peer.entrypoint, json.dumps({"k": key}).encode())

    try:
        task = asyncio.create_task(peer.worker(stop, CONCURRENCY))
        await asyncio.sleep(SETTLE_S)
        try:
            return await time_pickups(put, probe, samples, rng, tag)
        finally:
            stop.set()
            await task
    finally:
        await peer.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


SYSTEMS = ["handoff", "pgqueuer"]


@dataclass
class PickupFigures:
    samples: int  # jobs per system per round
    p50: dict[str, list[float]]  # system -> ms, one per round
    p90: dict[str, list[float]]
    every: dict[str, list[float]]  # system -> every latency measured, ms


@contextlib.asynccontextmanager
async def pickup_latency_setup() -> AsyncIterator[tuple[str, Pgqueuer]]:
    """handoff's database and pgqueuer's, dropped after; yields handoff's URL and the peer."""
    try:
        url = await recreate_db(HANDOFF_DB)
        await apply_handoff_schema(url)
        peer = Pgqueuer()
        await peer.create()
        yield url, peer
    finally:
        await drop_db(HANDOFF_DB)
        await drop_db(Pgqueuer.database)


async def pickup_latency_measure(url: str, peer: Pgqueuer, cfg: Settings) -> PickupFigures:
    samples = cfg.pick(40, 15)
    rng = random.Random(8)  # noqa: S311 - reproducible gaps, not a secret
    p50: dict[str, list[float]] = {n: [] for n in SYSTEMS}
    p90: dict[str, list[float]] = {n: [] for n in SYSTEMS}
    every: dict[str, list[float]] = {n: [] for n in SYSTEMS}
    for r in range(cfg.rounds):
        for name in rotated(SYSTEMS, r):
            if name == "handoff":
                got = await run_handoff(url, samples, rng, f"r{r}")
            else:
                got = await run_pgqueuer(peer, samples, rng, f"r{r}")
            p50[name].append(statistics.median(got))
            p90[name].append(pct(got, 0.9))
            every[name].extend(got)
    return PickupFigures(samples, p50, p90, every)


def pickup_latency_rows(figures: PickupFigures) -> list[Row]:
    p50 = figures.p50
    return [
        Row(
            "B8",
            f"worker pick-up latency after enqueue (p50 of {figures.samples} jobs per round)",
            "ms",
            p50,
            [
                Check("handoff p50", p50["handoff"], 50.0, "<=", "ms"),
                Check("handoff / pgqueuer", per_round(p50["handoff"], p50["pgqueuer"]), 1.0, "<="),
            ],
            extra={
                "p90_ms": figures.p90,
                "max_ms": {n: max(v) for n, v in figures.every.items()},
            },
            short="worker pick-up latency",
        )
    ]


async def pickup_latency(cfg: Settings) -> list[Row]:
    """B8: enqueue-to-handler latency of an idle handoff worker and pgqueuer queue manager."""
    async with pickup_latency_setup() as (url, peer):
        figures = await pickup_latency_measure(url, peer, cfg)
    return pickup_latency_rows(figures)
