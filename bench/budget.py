"""The runner's time budget: B6 `budget_fidelity` (answered in time, nothing left running) and
B7 `budget_utilization` (how much of budget x concurrency goes to handlers).

Each invocation is `Runner.drain(budget)` with a database pool of its own, as one call of the
cron runner endpoint would have; several run at once, as overlapping cron calls do.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from bench.common import (
    HANDOFF_DB,
    Check,
    Row,
    Settings,
    apply_handoff_schema,
    drop_db,
    fetchval,
    handoff_registry,
    open_handoff,
    recreate_db,
)

# The bound B6 checks: an invocation answers within its budget plus this.
SLACK_S = 2.0
RUNNER_CONCURRENCY = 4  # the app's default RUNNER_CONCURRENCY
POOL_SIZE = 10
# Above every budget, so it is the budget, never the job timeout, that cuts an attempt short.
JOB_TIMEOUT_S = 30
LEASE_S = JOB_TIMEOUT_S + 30


@dataclass
class BudgetSetup:
    url: str
    jobs: Any  # the Registry of the benchmark's handlers
    spent: list[float] = field(default_factory=lambda: [0.0])  # B7: handler seconds so far


@contextlib.asynccontextmanager
async def handoff_db(jobs: Any) -> AsyncIterator[BudgetSetup]:
    """handoff's database for these handlers, dropped after."""
    url = await recreate_db(HANDOFF_DB)
    try:
        await apply_handoff_schema(url)
        yield BudgetSetup(url, jobs)
    finally:
        await drop_db(HANDOFF_DB)


# --- B6: budget_fidelity ----------------------------------------------------------------------


@dataclass
class FidelityFigures:
    invocations: int
    parallel: int  # invocations at a time
    results: list[dict[str, Any]]  # per invocation: budget, answer time, its summary
    running_total: int  # jobs still running once every invocation has answered


@contextlib.asynccontextmanager
async def budget_fidelity_setup() -> AsyncIterator[BudgetSetup]:
    """Handlers that finish at once, sleep for their payload's seconds, or never end."""

    async def hang(_ctx: Any) -> None:
        await asyncio.Event().wait()  # never set: runs until cancelled

    async def sleepy(ctx: Any) -> None:
        await asyncio.sleep(ctx.job.payload["s"])

    async def fast(_ctx: Any) -> None:
        return None

    jobs = handoff_registry(
        hang=(hang, "forever"), sleepy=(sleepy, "forever"), fast=(fast, "forever")
    )
    async with handoff_db(jobs) as setup:
        yield setup


async def budget_fidelity_measure(setup: BudgetSetup, cfg: Settings) -> FidelityFigures:
    from app.queue import JobSpec, Runner, enqueue_many

    url, jobs = setup.url, setup.jobs
    invocations = cfg.pick(50, 8)
    parallel = cfg.pick(10, 4)
    rng = random.Random(6)  # noqa: S311 - a reproducible mix, not a secret
    results: list[dict[str, Any]] = []
    gate = asyncio.Semaphore(parallel)

    async def invocation(i: int, budget: float) -> None:
        async with gate:
            db = await open_handoff(url, POOL_SIZE)
            try:
                # Fresh work for each call, so every one meets the same mix: most jobs finish
                # at once, some sleep 0.1-12 s (often past what is left), a few never end.
                async with db.acquire() as conn:
                    await enqueue_many(
                        conn, "fast", [JobSpec(f"{i}-{n}") for n in range(40)], registry=jobs
                    )
                    specs = [
                        JobSpec(f"{i}-{n}", payload={"s": round(rng.uniform(0.1, 12), 2)})
                        for n in range(8)
                    ]
                    await enqueue_many(conn, "sleepy", specs, registry=jobs)
                    await enqueue_many(
                        conn, "hang", [JobSpec(f"{i}-{n}") for n in range(4)], registry=jobs
                    )
                runner = Runner(
                    db,
                    registry=jobs,
                    concurrency=RUNNER_CONCURRENCY,
                    job_timeout_s=JOB_TIMEOUT_S,
                    lease_s=LEASE_S,
                    invocation_id=f"b6-{i}",
                )
                started = time.perf_counter()
                summary = await runner.drain(budget)
                answered = time.perf_counter() - started
            finally:
                await db.close()
            running = await fetchval(
                url,
                "SELECT count(*) FROM jobs WHERE status = 'running' AND locked_by = $1",
                f"b6-{i}",
            )
            results.append(
                {
                    "budget_s": budget,
                    "answered_s": answered,
                    "left_running": running,
                    **summary.as_dict(),
                }
            )

    budgets = [round(rng.uniform(2, 10), 1) for _ in range(invocations)]
    await asyncio.gather(*(invocation(i, b) for i, b in enumerate(budgets)))
    running_total = await fetchval(url, "SELECT count(*) FROM jobs WHERE status = 'running'")
    return FidelityFigures(invocations, parallel, results, running_total)


def budget_fidelity_rows(figures: FidelityFigures) -> list[Row]:
    results = figures.results
    in_time = [r["answered_s"] <= r["budget_s"] + SLACK_S for r in results]
    over = [r["answered_s"] - r["budget_s"] for r in results]
    share = 100 * sum(in_time) / len(results)
    left = sum(r["left_running"] for r in results) + figures.running_total
    return [
        Row(
            "B6",
            f"runner budget fidelity, {figures.invocations} invocations, budgets 2-10 s",
            "%",
            {"answered within budget + 2 s": [share]},
            [
                Check("answered ≤ budget + 2 s", [share], 100.0, ">=", "%"),
                Check("jobs left running", [float(left)], 0.0, "<=", "jobs"),
            ],
            notes=[
                f"{figures.parallel} invocations at a time, each with its own pool; every "
                "invocation first enqueues 40 fast, 8 sleeping (0.1-12 s) and 4 hanging jobs"
            ],
            extra={
                "answered_minus_budget_s": {
                    "median": statistics.median(over),
                    "min": min(over),
                    "max": max(over),
                },
                "released": sum(r["released"] for r in results),
                "succeeded": sum(r["succeeded"] for r in results),
                "invocations": results,
            },
            short="budget fidelity",
        )
    ]


async def budget_fidelity(cfg: Settings) -> list[Row]:
    """B6: do concurrent runner invocations answer within their budgets, leaving nothing running?"""
    async with budget_fidelity_setup() as setup:
        figures = await budget_fidelity_measure(setup, cfg)
    return budget_fidelity_rows(figures)


# --- B7: budget_utilization -------------------------------------------------------------------


@dataclass
class UtilizationFigures:
    budget: float  # seconds per invocation
    shares: list[float]  # handler time / (budget x concurrency), %, one per round
    processed: list[int]  # jobs succeeded, one per round


@contextlib.asynccontextmanager
async def budget_utilization_setup() -> AsyncIterator[BudgetSetup]:
    """One handler that sleeps a second and adds the time it ran to the set-up's `spent`."""
    spent = [0.0]

    async def one_second(_ctx: Any) -> None:
        started = time.perf_counter()
        try:
            await asyncio.sleep(1)
        finally:
            # Counted even when the budget cuts the attempt short: it was handler time.
            spent[0] += time.perf_counter() - started

    async with handoff_db(handoff_registry(second=(one_second, "forever"))) as setup:
        setup.spent = spent
        yield setup


async def budget_utilization_measure(setup: BudgetSetup, cfg: Settings) -> UtilizationFigures:
    from app.queue import JobSpec, Runner, enqueue_many

    url, jobs, spent = setup.url, setup.jobs, setup.spent
    budget = cfg.pick(20.0, 10.0)
    shares: list[float] = []
    processed: list[int] = []
    for r in range(cfg.rounds):
        db = await open_handoff(url, POOL_SIZE)
        try:
            # A queue far deeper than one budget can drain.
            depth = int(budget * RUNNER_CONCURRENCY * 3)
            async with db.acquire() as conn:
                await conn.execute("TRUNCATE jobs")
                specs = [JobSpec(f"{r}-{n}") for n in range(depth)]
                await enqueue_many(conn, "second", specs, registry=jobs)
                await conn.execute("ANALYZE jobs")
            spent[0] = 0.0
            runner = Runner(
                db,
                registry=jobs,
                concurrency=RUNNER_CONCURRENCY,
                job_timeout_s=JOB_TIMEOUT_S,
                lease_s=LEASE_S,
            )
            summary = await runner.drain(budget)
        finally:
            await db.close()
        shares.append(100 * spent[0] / (budget * RUNNER_CONCURRENCY))
        processed.append(summary.outcomes["succeeded"])
    return UtilizationFigures(budget, shares, processed)


def budget_utilization_rows(figures: UtilizationFigures) -> list[Row]:
    return [
        Row(
            "B7",
            f"budget utilization, 1-s jobs, concurrency {RUNNER_CONCURRENCY}, "
            f"budget {figures.budget:g} s",
            "%",
            {"handler time / (budget × concurrency)": figures.shares},
            [Check("utilization", figures.shares, 90.0, ">=", "%")],
            extra={"succeeded_per_round": figures.processed},
            short="budget utilization",
        )
    ]


async def budget_utilization(cfg: Settings) -> list[Row]:
    """B7: how much of budget x concurrency a runner invocation spends in handlers."""
    async with budget_utilization_setup() as setup:
        figures = await budget_utilization_measure(setup, cfg)
    return budget_utilization_rows(figures)
