"""Retention: finished jobs are deleted some days after they finish, in bounded batches.

A "forever" dedupe key therefore holds for the retention window: once its job is pruned, the
same key may be enqueued again. Work that must never repeat keeps its own record (a step's
state, a campaign's enrollments), not only its job.

Importing this module registers nothing: the runtime wiring calls `register(registry)`.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from app.queue.enqueue import enqueue
from app.queue.job import JobContext
from app.queue.registry import Handler, Registry
from app.queue.sql import QUERIES

PRUNE_BATCH = 5_000
# Stop pruning (the next hour's job carries on) when less than this is left of the attempt.
PRUNE_RESERVE_S = 2.0


async def prune_jobs(ctx: JobContext) -> None:
    """Delete finished jobs past retention (failed ones past their longer retention)."""
    keep_days = float(ctx.job.payload["keep_days"])
    keep_failed_days = max(float(ctx.job.payload["keep_failed_days"]), keep_days)
    while ctx.time_left() > PRUNE_RESERVE_S:
        async with ctx.db.acquire() as conn:
            status = await conn.execute(
                QUERIES["prune_jobs"], keep_days, keep_failed_days, PRUNE_BATCH
            )
        if int(status.split()[-1]) < PRUNE_BATCH:
            break
    async with ctx.db.acquire() as conn:
        await conn.execute(QUERIES["prune_invocations"], keep_days)


def register(registry: Registry) -> None:
    """Register prune_jobs on `registry`; again on the same registry is a no-op."""
    if "prune_jobs" in registry and registry.get("prune_jobs").fn is prune_jobs:
        return
    registry.register(Handler("prune_jobs", prune_jobs, "forever", max_attempts=3))


async def schedule_pruning(
    conn: asyncpg.Connection, keep_days: float, keep_failed_days: float
) -> None:
    """Upsert this hour's prune job if there is anything to prune; calling it often is cheap."""
    keep_failed_days = max(keep_failed_days, keep_days)
    if await conn.fetchval(QUERIES["expired_jobs"], keep_days, keep_failed_days, 1) is None:
        return
    hour = datetime.now(UTC).strftime("%Y-%m-%dT%H:00Z")
    await enqueue(
        conn,
        "prune_jobs",
        (hour,),
        payload={"keep_days": keep_days, "keep_failed_days": keep_failed_days},
    )
