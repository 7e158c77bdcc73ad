"""Vercel Cron's routes: tick jobs per schedule slot, and the budgeted runner."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import Header, Query, Request
from fastapi.responses import JSONResponse

from app import tracing
from app.api.deps import DbDep, SettingsDep, cron_router, error
from app.api.errors import ApiError
from app.db import Database
from app.kick import KICK_HEADER
from app.models import EnqueuedResponse, KickTakenUp, RunnerSummary, slot_key
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
    response_model=RunnerSummary,
    responses={
        202: {"model": KickTakenUp, "description": "A kick, taken up: the drain goes on."},
        409: error("The kick's slot is not held: it was given up or lapsed (`kick_not_held`)."),
        422: error("budget_s is not a positive number."),
    },
)
async def background_jobs(
    request: Request,
    db: DbDep,
    settings: SettingsDep,
    budget_s: float | None = Query(None, gt=0, allow_inf_nan=False),
    kick: str | None = Header(None, alias=KICK_HEADER, description="A runner kick's token."),
) -> RunnerSummary | JSONResponse:
    """Drain due jobs until none is due or the budget is spent; a kick answers 202 first."""
    budget = min(budget_s or settings.runner_budget_s, settings.runner_budget_s)
    runtime = request.app.state.runtime
    if kick is not None:
        invocation_id = await runtime.kicker.take_up(kick, runtime.runner(), budget)
        if invocation_id is None:
            raise ApiError(409, "kick_not_held", "This kick's slot is not held.")
        return JSONResponse(KickTakenUp(invocation_id=invocation_id).model_dump(), 202)
    async with db.acquire() as conn:
        await schedule_pruning(
            conn, settings.job_retention_days, settings.failed_job_retention_days
        )
    summary = await tracing.drain(runtime.runner(), budget)
    return RunnerSummary(**summary.as_dict())
