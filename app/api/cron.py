"""Vercel Cron's routes: tick jobs per schedule slot, and the budgeted runner."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Query, Request

from app.api.deps import DbDep, SettingsDep, cron_router, error
from app.db import Database
from app.models import EnqueuedResponse, RunnerSummary, slot_key
from app.queue import enqueue
from app.queue.retention import schedule_pruning

router = cron_router(prefix="/api/cron", tags=["cron"])


def get_and_post(path: str, name: str, **kwargs):
    """Vercel Cron sends GET; POST is accepted too. Each method gets its own operation id."""

    def register(fn):
        router.get(path, operation_id=f"{name}_get", **kwargs)(fn)
        return router.post(path, operation_id=f"{name}_post", **kwargs)(fn)

    return register


async def _tick(db: Database, type: str, minutes: int) -> EnqueuedResponse:
    key = slot_key(datetime.now(UTC), minutes)
    async with db.acquire() as conn:
        job = await enqueue(conn, type, (key,), payload={"slot": key})
    return EnqueuedResponse(job_id=job.id, deduplicated=job.deduplicated)


@get_and_post("/followups", "cron_followups", status_code=202)
async def followups(db: DbDep) -> EnqueuedResponse:
    """Upsert this minute's followups_tick."""
    return await _tick(db, "followups_tick", 1)


@get_and_post("/reactivations", "cron_reactivations", status_code=202)
async def reactivations(db: DbDep) -> EnqueuedResponse:
    """Upsert this ten-minute slot's reactivations_tick."""
    return await _tick(db, "reactivations_tick", 10)


@get_and_post(
    "/background-jobs",
    "cron_background_jobs",
    responses={422: error("budget_s is not a positive number.")},
)
async def background_jobs(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    budget_s: float | None = Query(None, gt=0, allow_inf_nan=False),
) -> RunnerSummary:
    """Drain due jobs until none is due or the budget is spent."""
    budget = min(budget_s or settings.runner_budget_s, settings.runner_budget_s)
    async with db.acquire() as conn:
        await schedule_pruning(
            conn, settings.job_retention_days, settings.failed_job_retention_days
        )
    summary = await request.app.state.runtime.runner().drain(budget)
    return RunnerSummary(**summary.as_dict())
