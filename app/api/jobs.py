"""Jobs: read them, retry a failed one, cancel a pending one.

A client key sees its client's jobs only: another client's job, and a job of no client (the
cron ticks), answers 404 as one that does not exist, and is left out of lists."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query

from app.api.deps import INVALID_PARAMS, Caller, CallerDep, DbDep, Responses, api_router, error
from app.api.errors import ApiError
from app.db import Database
from app.models import JobList, JobOut, JobStatus, QueueOverview
from app.queue.control import (
    DuplicateActive,
    InvalidTransition,
    JobNotFound,
    cancel_job,
    get_job,
    list_jobs,
    queue_overview,
    retry_job,
)

router = api_router(prefix="/api/jobs", tags=["jobs"])

ONE_JOB: Responses = {**INVALID_PARAMS, 404: error("No job with this id (`unknown_job`).")}
CHANGE: Responses = {
    **ONE_JOB,
    409: error(
        "The job is in a state that cannot change so (`invalid_state`), or another job with "
        "the same dedupe key is active (`duplicate_active`, with its `job_id`)."
    ),
}


def job_out(row: dict[str, Any]) -> JobOut:
    return JobOut(**{**row, "id": str(row["id"])})


async def _change(db: Database, caller: Caller, job_id: str, change, verb: str) -> JobOut:
    try:
        async with db.acquire() as conn:
            return job_out(await change(conn, job_id, caller.client_id))
    except JobNotFound:
        raise ApiError(404, "unknown_job", "No job with this id.") from None
    except DuplicateActive as twin:
        raise ApiError(
            409,
            "duplicate_active",
            "Another job with the same dedupe key is already pending or running.",
            job_id=twin.job_id,
        ) from None
    except InvalidTransition as bad:
        raise ApiError(409, "invalid_state", f"A {bad.status} job cannot be {verb}.") from None


@router.get("/overview", response_model=QueueOverview)
async def overview(db: DbDep, caller: CallerDep) -> QueueOverview:
    """Counts by status and type, the oldest due job's age and the latest runner summaries."""
    async with db.acquire() as conn:
        return QueueOverview(**await queue_overview(conn, client_id=caller.client_id))


@router.get("", response_model=JobList, responses=INVALID_PARAMS)
async def jobs(
    db: DbDep,
    caller: CallerDep,
    status: JobStatus | None = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    """List jobs, newest first."""
    async with db.acquire() as conn:
        rows = await list_jobs(
            conn, status=status, type=type, limit=limit, client_id=caller.client_id
        )
    return JobList(jobs=[job_out(r) for r in rows])


@router.get("/{job_id}", response_model=JobOut, responses=ONE_JOB)
async def job(job_id: str, db: DbDep, caller: CallerDep) -> JobOut:
    """One job."""
    return await _change(db, caller, job_id, get_job, "read")


@router.post("/{job_id}/retry", response_model=JobOut, responses=CHANGE)
async def retry(job_id: str, db: DbDep, caller: CallerDep) -> JobOut:
    """Put a failed or cancelled job back in the queue."""
    return await _change(db, caller, job_id, retry_job, "retried")


@router.post("/{job_id}/cancel", response_model=JobOut, responses=CHANGE)
async def cancel(job_id: str, db: DbDep, caller: CallerDep) -> JobOut:
    """Cancel a pending job."""
    return await _change(db, caller, job_id, cancel_job, "cancelled")
