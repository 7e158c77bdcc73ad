"""Drain benchmarks: B4 (no-op jobs), B5 (one HTTP call per job), B9 (claim cost vs table size).

A drain starts from a full queue (filled with each system's own bulk enqueue, then ANALYZEd as
autovacuum would have done by then) and is timed until the last job is recorded as done.
handoff drains two ways: `Runner.drain(budget)`, the code behind the cron runner endpoint, and
`Worker.run`, the long-running worker mode (LISTEN plus a 1 s poll).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx

from bench.common import (
    HANDOFF_DB,
    Check,
    CpuPerJob,
    Row,
    Settings,
    apply_handoff_schema,
    checkpoint,
    drop_db,
    execute,
    fetchval,
    handoff_registry,
    open_handoff,
    per_round,
    pgbench,
    recreate_db,
    reset_handoff,
    rotated,
    sql_for_pgbench,
)
from bench.peers import Pgqueuer, Procrastinate

FLOOR_DB = "bench_handoff_floor"
CONCURRENCY = 8
CLAIM_BATCH = 50
# Long enough never to be what stops a drain here: a drain ends because the queue is empty.
DRAIN_BUDGET_S = 900
POOL_SIZE = 10  # the app's default pool


def floor_claim_script() -> str:
    """pgbench's claim-50 + complete: handoff's own claim statement, then one UPDATE completing
    the 50 jobs it got. The cheapest way the database can do handoff's work, without Python."""
    from app.queue.sql import QUERIES

    owner = "('floor-' || :client_id)"
    claim = sql_for_pgbench(
        QUERIES["claim"], {1: str(CLAIM_BATCH), 2: "gen_random_uuid()", 3: owner, 4: "60"}
    ).rstrip(";\n")
    return (
        f"WITH c AS ({claim}) SELECT count(*) FROM c;\n"
        "UPDATE jobs SET status = 'succeeded', finished_at = now(), lock_token = NULL,"
        f" locked_until = NULL WHERE status = 'running' AND locked_by = {owner};\n"
    )


def short_count(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


async def floor_drain(url: str, count: int) -> float:
    """Drain `count` queued jobs with the pgbench floor at concurrency 8; jobs per second."""
    # Enough claim-50 transactions per client to empty the queue; a last one may find fewer
    # than 50 (or none), so the rate is count / pgbench's own time (connecting excluded).
    per_client = -(-count // (CLAIM_BATCH * CONCURRENCY))
    result = await pgbench(url, floor_claim_script(), clients=CONCURRENCY, transactions=per_client)
    return count * result.tps / result.transactions


async def fill_handoff(url: str, count: int, type: str = "noop", tag: str = "j") -> None:
    """`count` due jobs through enqueue_many, 1,000 per statement, then ANALYZE."""
    from app.queue import JobSpec, enqueue_many

    jobs = handoff_registry()
    conn = await asyncpg.connect(url)
    try:
        for start in range(0, count, 1000):
            specs = [JobSpec(f"{tag}{n}") for n in range(start, min(count, start + 1000))]
            await enqueue_many(conn, type, specs, jobs=jobs)
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


class Drains:
    """Fill a queue, then time how long each system takes to empty it."""

    def __init__(self, bodies: dict[str, Any] | None = None) -> None:
        self.handoff_url = ""
        self.floor_url = ""
        self.procrastinate = Procrastinate()
        self.pgqueuer = Pgqueuer()
        self.bodies = bodies or {}
        self.cpu = CpuPerJob()

    async def create(self, floor: bool) -> None:
        self.handoff_url = await recreate_db(HANDOFF_DB)
        await apply_handoff_schema(self.handoff_url)
        if floor:
            self.floor_url = await recreate_db(FLOOR_DB)
            await apply_handoff_schema(self.floor_url)
        await self.procrastinate.create()
        await self.pgqueuer.create()

    async def drop(self) -> None:
        for name in (HANDOFF_DB, FLOOR_DB, Procrastinate.database, Pgqueuer.database):
            await drop_db(name)

    async def handoff(
        self,
        count: int,
        mode: str,
        body: Callable[[], Awaitable[None]] | None = None,
    ) -> float:
        """Jobs per second for handoff's runner (mode "runner") or worker (mode "worker")."""
        from app.db import asyncpg_dsn
        from app.queue import Runner
        from app.queue.worker import Worker

        await reset_handoff(self.handoff_url)
        await fill_handoff(self.handoff_url, count)
        await checkpoint()
        done = [0]
        stop = asyncio.Event()

        async def job(_ctx: Any) -> None:
            if body is not None:
                await body()
            done[0] += 1
            if done[0] >= count:
                stop.set()

        jobs = handoff_registry(noop=job)
        db = await open_handoff(self.handoff_url, POOL_SIZE)
        runner = Runner(db, jobs=jobs, concurrency=CONCURRENCY, job_timeout_s=30, lease_s=60)
        dsn = asyncpg_dsn(self.handoff_url)
        try:
            started = time.perf_counter()
            with self.cpu.measure(f"handoff {mode}", lambda: count):
                if mode == "runner":
                    summary = await runner.drain(DRAIN_BUDGET_S)
                    assert summary.outcomes["succeeded"] == count, summary.as_dict()
                else:
                    worker = Worker(runner, listen=lambda: asyncpg.connect(dsn), poll_interval_s=1)
                    await worker.run(stop)
            elapsed = time.perf_counter() - started
        finally:
            await db.close()
        left = await fetchval(
            self.handoff_url, "SELECT count(*) FROM jobs WHERE status <> 'succeeded'"
        )
        assert left == 0, f"{left} jobs not done"
        return count / elapsed

    async def peer(
        self, system: str, count: int, payload: dict[str, Any] | None = None, body: Any = None
    ) -> float:
        peer = self.procrastinate if system == "procrastinate" else self.pgqueuer
        await peer.reset()
        await peer.open(POOL_SIZE, body)
        try:
            await peer.prefill(count, payload)
            table = "procrastinate_jobs" if system == "procrastinate" else "pgqueuer"
            await execute(peer.url, f"ANALYZE {table}")
            await checkpoint()
            started = time.perf_counter()
            with self.cpu.measure(system, lambda: count):
                await peer.drain(CONCURRENCY)
            elapsed = time.perf_counter() - started
        finally:
            await peer.close()
        if system == "procrastinate":
            left = await fetchval(
                peer.url, "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
            )
        else:
            # pgqueuer deletes a job from its queue table once it is done.
            left = await fetchval(peer.url, "SELECT count(*) FROM pgqueuer")
        assert left == 0, f"{system}: {left} jobs not done"
        return count / elapsed

    async def floor(self, count: int) -> float:
        await reset_handoff(self.floor_url)
        await fill_handoff(self.floor_url, count)
        await checkpoint()
        with self.cpu.measure("pgbench floor", lambda: count):
            result = await floor_drain(self.floor_url, count)
        left = await fetchval(
            self.floor_url, "SELECT count(*) FROM jobs WHERE status <> 'succeeded'"
        )
        assert left == 0, f"floor: {left} jobs not done"
        return result


async def b4(cfg: Settings) -> list[Row]:
    # The issue asks for 20,000 jobs; 10,000 keep a full run under 15 minutes on the 2-core
    # machine (three rounds of five systems) and drain at the same rate (see B9: the table's
    # size does not change the claim's cost).
    count = cfg.pick(10_000, 3_000)
    # procrastinate fetches one job per statement, over psycopg, at a quarter of the others'
    # pace; it drains a fifth as many jobs (its rate, not its total time, is compared).
    slow_count = count // 5
    drains = Drains()
    await drains.create(floor=True)
    names = ["handoff runner", "handoff worker", "procrastinate", "pgqueuer", "pgbench floor"]
    samples: dict[str, list[float]] = {n: [] for n in names}
    try:
        for r in range(cfg.rounds):
            for name in rotated(names, r):
                if name.startswith("handoff"):
                    rate = await drains.handoff(count, name.split()[1])
                elif name == "pgbench floor":
                    rate = await drains.floor(count)
                else:
                    rate = await drains.peer(name, slow_count if name == "procrastinate" else count)
                samples[name].append(rate)
    finally:
        await drains.drop()
    runner, worker = samples["handoff runner"], samples["handoff worker"]
    return [
        Row(
            "B4",
            f"drain {count:,} no-op jobs, concurrency {CONCURRENCY}",
            "jobs/s",
            samples,
            [
                Check("runner / pgqueuer", per_round(runner, samples["pgqueuer"]), 2.0),
                Check("worker / pgqueuer", per_round(worker, samples["pgqueuer"]), 2.0),
                Check("runner / procrastinate", per_round(runner, samples["procrastinate"]), 10.0),
                Check("worker / procrastinate", per_round(worker, samples["procrastinate"]), 10.0),
                Check("runner / pgbench floor", per_round(runner, samples["pgbench floor"]), None),
            ],
            notes=[
                f"procrastinate drains {slow_count:,} jobs per round (its rate is compared)",
                "pgqueuer runs with its entrypoint's concurrency_limit=8 and batch_size=8",
            ],
            extra=drains.cpu.as_extra(),
            short="drain, no-op jobs",
        )
    ]


async def b5(cfg: Settings) -> list[Row]:
    from bench.http import provider

    count = cfg.pick(2_000, 600)
    async with provider() as url, httpx.AsyncClient() as client:

        async def call() -> None:
            response = await client.post(url, json={"channel": "sms"})
            response.raise_for_status()

        async def peer_body(_payload: dict[str, Any]) -> None:
            await call()

        async def bare(measured: bool = True) -> float:
            # The same calls from 8 plain tasks, no queue at all: the ceiling for this client.
            left = list(range(count))

            async def caller() -> None:
                while left:
                    left.pop()
                    await call()

            started = time.perf_counter()
            with drains.cpu.measure("no queue" if measured else "warm-up", lambda: count):
                await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
            return count / (time.perf_counter() - started)

        drains = Drains()
        await drains.create(floor=False)
        names = ["handoff runner", "handoff worker", "procrastinate", "pgqueuer", "no queue"]
        samples: dict[str, list[float]] = {n: [] for n in names}
        try:
            for _ in range(2):  # warm the provider and the client's keep-alive connections
                await bare(measured=False)
            drains.cpu.samples.pop("warm-up", None)
            for r in range(cfg.rounds):
                for name in rotated(names, r):
                    if name.startswith("handoff"):
                        rate = await drains.handoff(count, name.split()[1], call)
                    elif name == "no queue":
                        rate = await bare()
                    else:
                        rate = await drains.peer(name, count, {"channel": "sms"}, peer_body)
                    samples[name].append(rate)
        finally:
            await drains.drop()
    runner, worker = samples["handoff runner"], samples["handoff worker"]
    return [
        Row(
            "B5",
            f"drain {count:,} jobs of one local HTTP call, concurrency {CONCURRENCY}",
            "jobs/s",
            samples,
            [
                Check("runner / pgqueuer", per_round(runner, samples["pgqueuer"]), 1.5),
                Check("worker / pgqueuer", per_round(worker, samples["pgqueuer"]), 1.5),
                Check("runner / procrastinate", per_round(runner, samples["procrastinate"]), None),
                Check("runner / no queue", per_round(runner, samples["no queue"]), None),
            ],
            extra=drains.cpu.as_extra(),
            short="drain, one HTTP call per job",
        )
    ]


async def b9(cfg: Settings) -> list[Row]:
    """Claim + complete rate with few vs many finished jobs in the table."""
    from app.queue import Runner

    small, large = 10_000, cfg.pick(1_000_000, 100_000)
    batch = cfg.pick(5_000, 2_000)
    names = {f"{small:,} finished": small, f"{large:,} finished": large}
    urls: dict[str, str] = {}
    for name, finished in names.items():
        url = urls[name] = await recreate_db(f"bench_handoff_b9_{finished}")
        await apply_handoff_schema(url)
        # Finished jobs as retention leaves them: succeeded, forever keys, spread over a week.
        await execute(
            url,
            "INSERT INTO jobs (type, dedupe_key, dedupe_scope, status, attempts, payload,"
            " run_at, created_at, started_at, finished_at)"
            " SELECT 'noop', 'noop:old' || g, 'forever', 'succeeded', 1, '{}',"
            "  t, t, t, t + interval '1 second'"
            f" FROM generate_series(1, {finished}) g,"
            f"  LATERAL (SELECT now() - (g * interval '7 days' / {finished})) AS s(t)",
            "VACUUM ANALYZE jobs",
        )
    samples: dict[str, list[float]] = {f"runner, {n}": [] for n in names}
    samples |= {f"pgbench floor, {n}": [] for n in names}
    jobs = handoff_registry()
    try:
        for r in range(cfg.rounds):
            for name in rotated(list(names), r):
                url = urls[name]
                for kind in ("runner", "pgbench floor"):
                    await fill_handoff(url, batch, tag=f"r{r}{kind[0]}-")
                    await checkpoint()
                    if kind == "runner":
                        db = await open_handoff(url, POOL_SIZE)
                        try:
                            runner = Runner(
                                db, jobs=jobs, concurrency=CONCURRENCY, job_timeout_s=30, lease_s=60
                            )
                            started = time.perf_counter()
                            await runner.drain(DRAIN_BUDGET_S)
                            rate = batch / (time.perf_counter() - started)
                        finally:
                            await db.close()
                    else:
                        rate = await floor_drain(url, batch)
                    samples[f"{kind}, {name}"].append(rate)
                # Back to the seeded size, so every round sees the same table.
                await execute(
                    url, "DELETE FROM jobs WHERE dedupe_key NOT LIKE 'noop:old%'", "VACUUM jobs"
                )
    finally:
        for finished in names.values():
            await drop_db(f"bench_handoff_b9_{finished}")
    s, lg = list(names)
    return [
        Row(
            "B9",
            f"claim + complete, {small:,} vs {large:,} finished jobs in the table",
            "jobs/s",
            samples,
            [
                Check(
                    f"runner: {short_count(large)} / {short_count(small)} finished",
                    per_round(samples[f"runner, {lg}"], samples[f"runner, {s}"]),
                    0.8,
                ),
                Check(
                    f"pgbench floor: {short_count(large)} / {short_count(small)} finished",
                    per_round(samples[f"pgbench floor, {lg}"], samples[f"pgbench floor, {s}"]),
                    0.8,
                ),
            ],
            notes=[f"each round drains {batch:,} new jobs at concurrency {CONCURRENCY}"],
            short="table size",
        )
    ]
