"""Retention: finished jobs are deleted some days after they finish, in bounded batches.

A "forever" dedupe key therefore holds for the retention window: once its job is pruned, the
same key may be enqueued again. Work that must never repeat keeps its own record (a step's
state, a campaign's enrollments), not only its job.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from app.queue.enqueue import enqueue
from app.queue.registry import handler
from app.queue.runner import JobContext

PRUNE_BATCH = 5_000
# Stop pruning (the next hour's job carries on) when less than this is left of the attempt.
PRUNE_RESERVE_S = 2.0

# Finished jobs past their retention, oldest first, read through jobs_finished.
EXPIRED = """
SELECT id FROM jobs
WHERE status IN ('succeeded', 'failed', 'cancelled')
  AND finished_at < now() - $1::float8 * interval '1 day'
  AND (status <> 'failed' OR finished_at < now() - $2::float8 * interval '1 day')
ORDER BY finished_at
LIMIT $3
"""
PRUNE = f"DELETE FROM jobs WHERE id IN ({EXPIRED})"
PRUNE_INVOCATIONS = (
    "DELETE FROM runner_invocations WHERE finished_at < now() - $1::float8 * interval '1 day'"
)


@handler("prune_jobs", dedupe="forever", max_attempts=3)
async def prune_jobs(ctx: JobContext) -> None:
    """Delete finished jobs past retention (failed ones past their longer retention)."""
    keep_days = float(ctx.job.payload["keep_days"])
    keep_failed_days = max(float(ctx.job.payload["keep_failed_days"]), keep_days)
    while ctx.time_left() > PRUNE_RESERVE_S:
        async with ctx.db.acquire() as conn:
            status = await conn.execute(PRUNE, keep_days, keep_failed_days, PRUNE_BATCH)
        if int(status.split()[-1]) < PRUNE_BATCH:
            break
    async with ctx.db.acquire() as conn:
        await conn.execute(PRUNE_INVOCATIONS, keep_days)


async def schedule_pruning(
    conn: asyncpg.Connection, keep_days: float, keep_failed_days: float
) -> None:
    """Upsert this hour's prune job if there is anything to prune; calling it often is cheap."""
    keep_failed_days = max(keep_failed_days, keep_days)
    if await conn.fetchval(EXPIRED, keep_days, keep_failed_days, 1) is None:
        return
    hour = datetime.now(UTC).strftime("%Y-%m-%dT%H:00Z")
    await enqueue(
        conn,
        "prune_jobs",
        hour,
        payload={"keep_days": keep_days, "keep_failed_days": keep_failed_days},
    )
