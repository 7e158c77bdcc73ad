"""Enqueue benchmarks: B1 `single_enqueue`, B2 `bulk_enqueue` (half duplicates) and B10
`enqueue_with_listeners` (the NOTIFY path).

Every system is driven as a library from this process, closed loop, with as many pooled
connections as callers; each measurement starts on emptied tables after a CHECKPOINT and a
short warm-up (connections open, statements prepared).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.common import (
    HANDOFF_DB,
    Check,
    CpuPerJob,
    Row,
    Settings,
    apply_handoff_schema,
    checkpoint,
    closed_loop,
    drop_db,
    handoff_registry,
    open_handoff,
    per_round,
    pgbench,
    recreate_db,
    reset_handoff,
    rotated,
    sql_for_pgbench,
    warm_pool,
)
from bench.peers import Pgqueuer, Procrastinate

FLOOR_DB = "bench_handoff_floor"
WARMUP_S = 0.5
BATCH = 1000
STATEMENT_ALONE = "handoff's statement alone"


def floor_enqueue_script(notify: bool | None = None) -> str:
    """pgbench running handoff's own enqueue_forever statement, one new key per transaction.

    notify=None: the bare statement. notify=False/True: the statement wrapped so its result
    feeds either a plain SELECT or a pg_notify in the same statement, which keeps the round
    trips identical and leaves the NOTIFY as the only difference between the two.
    """
    from app.queue.sql import QUERIES

    insert = sql_for_pgbench(
        QUERIES["enqueue_forever"],
        {
            1: "'noop'",
            # client_id plus a 40-bit random number: a collision (an upsert instead of an
            # insert) is vanishingly rare within one measurement.
            2: "('noop:' || :client_id || ':' || :r)",
            3: "NULL",
            4: "NULL",
            5: "'{}'",
            6: "5",
            7: "NULL",
            8: "0",  # priority
            9: "NULL",  # traceparent
        },
    ).rstrip(";\n")
    head = "\\set r random(1, 1099511627775)\n"
    if notify is None:
        return head + insert + ";\n"
    tail = "pg_notify('bench_jobs', '')" if notify else "count(*)"
    # Built from fixed fragments only: handoff's own statement and one of two constant tails.
    return head + f"WITH ins AS ({insert}) SELECT {tail} FROM ins;\n"  # noqa: S608


class Systems:
    """The four enqueue paths, each on its own database, behind one interface."""

    def __init__(self) -> None:
        self.handoff_url = ""
        self.floor_url = ""
        self.procrastinate = Procrastinate()
        self.pgqueuer = Pgqueuer()
        self.jobs = handoff_registry()
        self.cpu = CpuPerJob()

    async def create(self) -> None:
        self.handoff_url = await recreate_db(HANDOFF_DB)
        self.floor_url = await recreate_db(FLOOR_DB)
        await apply_handoff_schema(self.handoff_url)
        await apply_handoff_schema(self.floor_url)
        await self.procrastinate.create()
        await self.pgqueuer.create()

    async def drop(self) -> None:
        for name in (HANDOFF_DB, FLOOR_DB, Procrastinate.database, Pgqueuer.database):
            await drop_db(name)

    async def reset(self) -> None:
        await reset_handoff(self.handoff_url)
        await reset_handoff(self.floor_url)
        await self.procrastinate.reset()
        await self.pgqueuer.reset()
        await checkpoint()

    async def timed(self, system: str, callers: int, seconds: float, op: Any) -> float:
        """closed_loop, with the CPU it took per job recorded under `system`."""
        started, rate = time.perf_counter(), [0.0]
        with self.cpu.measure(system, lambda: rate[0] * (time.perf_counter() - started)):
            rate[0] = await closed_loop(callers, seconds, op)
        return rate[0]

    async def single(self, system: str, callers: int, seconds: float) -> float:
        """Jobs per second, one job per call, `callers` concurrent callers."""
        from app.queue import enqueue

        if system == "pgbench floor":
            done = [0]
            with self.cpu.measure(system, lambda: done[0]):
                result = await pgbench(
                    self.floor_url, floor_enqueue_script(), clients=callers, seconds=seconds
                )
                done[0] = result.transactions
            return result.tps
        if system == "handoff":
            db = await open_handoff(self.handoff_url, callers)
            await warm_pool(db, callers)

            def op(tag: str) -> Any:
                async def call(w: int, i: int) -> None:
                    async with db.acquire() as conn:
                        await enqueue(conn, "noop", f"{tag}-{w}-{i}", registry=self.jobs)

                return call

            try:
                await closed_loop(callers, WARMUP_S, op("warm"))
                return await self.timed(system, callers, seconds, op("run"))
            finally:
                await db.close()
        peer = self.procrastinate if system == "procrastinate" else self.pgqueuer
        await peer.open(callers)
        try:
            await closed_loop(callers, WARMUP_S, lambda w, i: peer.enqueue(f"warm-{w}-{i}"))
            return await self.timed(system, callers, seconds, lambda w, i: peer.enqueue(f"{w}-{i}"))
        finally:
            await peer.close()

    async def bulk(self, system: str, seconds: float) -> float:
        """Jobs per second submitted in statements of 1,000: 500 new keys, 500 already queued."""
        from app.queue import JobSpec, enqueue_many

        def keys(i: int) -> list[str]:
            # Batch i covers keys [500 i, 500 i + 1000): its first half was batch i-1's second
            # half, so exactly half of every batch is a duplicate of a queued job.
            return [f"k{n:09d}" for n in range(500 * i, 500 * i + BATCH)]

        if system == "handoff":
            db = await open_handoff(self.handoff_url, 1)

            async def submit(i: int) -> None:
                specs = [JobSpec(k) for k in keys(i)]
                async with db.acquire() as conn:
                    await enqueue_many(conn, "noop_active", specs, registry=self.jobs)

            close = db.close
        elif system == STATEMENT_ALONE:
            from app.queue.sql import QUERIES

            db = await open_handoff(self.handoff_url, 1)

            async def submit(i: int) -> None:
                # What enqueue_many sends (the columns left at their defaults go as NULL),
                # minus its per-job Python work around the statement.
                batch = sorted(f"noop_active:{k}" for k in keys(i))
                async with db.acquire() as conn:
                    await conn.fetch(
                        QUERIES["enqueue_many_active"],
                        "noop_active",
                        5,
                        batch,
                        None,
                        None,
                        None,
                        None,
                        None,
                        None,  # each row's priority
                        0,  # the type's priority
                        None,  # traceparent
                    )

            close = db.close
        else:
            peer = self.procrastinate if system == "procrastinate" else self.pgqueuer
            await peer.open(1)

            async def submit(i: int) -> None:
                await peer.enqueue_batch(keys(i))

            close = peer.close
        try:
            await submit(-1)  # warm-up, and the queued half of batch 0
            started, rate = time.perf_counter(), [0.0]
            jobs = lambda: rate[0] * BATCH * (time.perf_counter() - started)  # noqa: E731
            with self.cpu.measure(system, jobs):
                rate[0] = await closed_loop(1, seconds, lambda _w, i: submit(i))
            return rate[0] * BATCH
        finally:
            await close()


@contextlib.asynccontextmanager
async def enqueue_systems() -> AsyncIterator[Systems]:
    """Set-up shared by every enqueue benchmark: the four systems' databases, dropped after."""
    systems = Systems()
    await systems.create()
    try:
        yield systems
    finally:
        await systems.drop()


# --- B1: single_enqueue -----------------------------------------------------------------------

SINGLE_SYSTEMS = ["handoff", "procrastinate", "pgqueuer", "pgbench floor"]


@dataclass
class SingleEnqueueFigures:
    callers: int
    samples: dict[str, list[float]]  # system -> jobs/s, one per round
    cpu: dict[str, Any]  # CpuPerJob.as_extra()


async def single_enqueue_measure(systems: Systems, cfg: Settings) -> list[SingleEnqueueFigures]:
    seconds = cfg.pick(3.0, 2.0)
    figures = []
    for callers in (1, 32):
        systems.cpu = CpuPerJob()
        samples: dict[str, list[float]] = {n: [] for n in SINGLE_SYSTEMS}
        for r in range(cfg.rounds):
            for name in rotated(SINGLE_SYSTEMS, r):
                await systems.reset()
                samples[name].append(await systems.single(name, callers, seconds))
        figures.append(SingleEnqueueFigures(callers, samples, systems.cpu.as_extra()))
    return figures


def single_enqueue_rows(figures: list[SingleEnqueueFigures]) -> list[Row]:
    rows = []
    for f in figures:
        samples, h = f.samples, f.samples["handoff"]
        callers = f"{f.callers} caller{'s' if f.callers > 1 else ''}"
        rows.append(
            Row(
                "B1",
                f"single enqueue, {callers}",
                "jobs/s",
                samples,
                [
                    Check("handoff / procrastinate", per_round(h, samples["procrastinate"]), 3.0),
                    Check("handoff / pgqueuer", per_round(h, samples["pgqueuer"]), 3.0),
                    Check("handoff / pgbench floor", per_round(h, samples["pgbench floor"]), 0.4),
                ],
                extra=f.cpu,
                short=f"enqueue, {callers}",
            )
        )
    return rows


async def single_enqueue(cfg: Settings) -> list[Row]:
    """B1: jobs per second of one enqueue per call, at 1 and at 32 concurrent callers."""
    async with enqueue_systems() as systems:
        figures = await single_enqueue_measure(systems, cfg)
    return single_enqueue_rows(figures)


# --- B2: bulk_enqueue -------------------------------------------------------------------------

BULK_SYSTEMS = ["handoff", "procrastinate", "pgqueuer", STATEMENT_ALONE]


@dataclass
class BulkEnqueueFigures:
    samples: dict[str, list[float]]  # system (and the diagnostic) -> jobs/s, one per round
    cpu: dict[str, Any]


async def bulk_enqueue_measure(systems: Systems, cfg: Settings) -> BulkEnqueueFigures:
    seconds = cfg.pick(4.0, 2.0)
    samples: dict[str, list[float]] = {n: [] for n in BULK_SYSTEMS}
    for r in range(cfg.rounds):
        for name in rotated(BULK_SYSTEMS, r):
            await systems.reset()
            samples[name].append(await systems.bulk(name, seconds))
    return BulkEnqueueFigures(samples, systems.cpu.as_extra())


def bulk_enqueue_rows(figures: BulkEnqueueFigures) -> list[Row]:
    samples = dict(figures.samples)
    diagnostics = {STATEMENT_ALONE: samples.pop(STATEMENT_ALONE)}
    h = samples["handoff"]
    return [
        Row(
            "B2",
            "bulk enqueue, 1,000 per statement, half duplicates",
            "jobs/s",
            samples,
            [
                Check("handoff / pgqueuer", per_round(h, samples["pgqueuer"]), 1.0),
                Check("handoff / procrastinate", per_round(h, samples["procrastinate"]), None),
            ],
            notes=[
                "procrastinate's batch_defer_async cannot skip duplicates (a queueing lock "
                "already held rejects the whole batch), so it inserts all 1,000 jobs"
            ],
            diagnostics=diagnostics,
            extra=figures.cpu,
            short="bulk enqueue",
        )
    ]


async def bulk_enqueue(cfg: Settings) -> list[Row]:
    """B2: jobs per second submitted 1,000 per statement, half of them already queued."""
    async with enqueue_systems() as systems:
        figures = await bulk_enqueue_measure(systems, cfg)
    return bulk_enqueue_rows(figures)


# --- B10: enqueue_with_listeners --------------------------------------------------------------

NOTIFY_CALLERS = 32
NOTIFY_LISTENERS = 2
NOTIFY_SYSTEMS = ["handoff, listening", "handoff, none", "pgbench + pg_notify", "pgbench plain"]


@dataclass
class ListenersFigures:
    samples: dict[str, list[float]]  # variant -> jobs/s, one per round
    received: int  # notifications the listeners took over the whole benchmark


@contextlib.asynccontextmanager
async def listening(url: str, channel: str, heard: Callable[..., None]) -> AsyncIterator[None]:
    """Idle workers, as far as the enqueue side can tell: connections that LISTEN and take every
    notification. They claim nothing, so a drain's CPU does not muddy the figure."""
    conns = [await asyncpg.connect(url) for _ in range(NOTIFY_LISTENERS)]
    try:
        for conn in conns:
            await conn.add_listener(channel, heard)
        yield
    finally:
        for conn in conns:
            await conn.close()


async def enqueue_with_listeners_measure(systems: Systems, cfg: Settings) -> ListenersFigures:
    from app.queue import enqueue
    from app.queue.notify import CHANNEL, Notifier

    callers = NOTIFY_CALLERS
    seconds = cfg.pick(4.0, 2.0)
    samples: dict[str, list[float]] = {n: [] for n in NOTIFY_SYSTEMS}
    received = [0]

    def heard(*_: object) -> None:
        received[0] += 1

    async def one(name: str) -> float:
        if name.startswith("pgbench"):
            notify = name == "pgbench + pg_notify"
            script = floor_enqueue_script(notify)
            async with contextlib.AsyncExitStack() as stack:
                if notify:
                    await stack.enter_async_context(
                        listening(systems.floor_url, "bench_jobs", heard)
                    )
                result = await pgbench(systems.floor_url, script, clients=callers, seconds=seconds)
            return result.tps
        db = await open_handoff(systems.handoff_url, callers)
        await warm_pool(db, callers)

        def op(tag: str) -> Any:
            async def call(w: int, i: int) -> None:
                async with db.acquire() as conn:
                    await enqueue(conn, "noop", f"{tag}-{w}-{i}", registry=systems.jobs)

            return call

        try:
            async with contextlib.AsyncExitStack() as stack:
                if name == "handoff, listening":
                    await stack.enter_async_context(Notifier(db))
                    await stack.enter_async_context(listening(systems.handoff_url, CHANNEL, heard))
                await closed_loop(callers, WARMUP_S, op("warm"))
                return await closed_loop(callers, seconds, op("run"))
        finally:
            await db.close()

    for r in range(cfg.rounds):
        for name in rotated(NOTIFY_SYSTEMS, r):
            await systems.reset()
            samples[name].append(await one(name))
    return ListenersFigures(samples, received[0])


def enqueue_with_listeners_rows(figures: ListenersFigures) -> list[Row]:
    samples = figures.samples
    return [
        Row(
            "B10",
            f"single enqueue, {NOTIFY_CALLERS} callers, {NOTIFY_LISTENERS} listeners vs none",
            "jobs/s",
            samples,
            [
                Check(
                    "listening / none",
                    per_round(samples["handoff, listening"], samples["handoff, none"]),
                    0.8,
                ),
                Check(
                    "pgbench: pg_notify in the transaction / without",
                    per_round(samples["pgbench + pg_notify"], samples["pgbench plain"]),
                    None,
                ),
            ],
            extra={"notifications_received": figures.received},
            short="enqueue with listeners",
        )
    ]


async def enqueue_with_listeners(cfg: Settings) -> list[Row]:
    """B10: single enqueue at 32 callers with the NOTIFY path on and listeners attached, vs off."""
    async with enqueue_systems() as systems:
        figures = await enqueue_with_listeners_measure(systems, cfg)
    return enqueue_with_listeners_rows(figures)
