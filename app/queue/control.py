"""Reading jobs and the manual state changes: retry and cancel."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.models import Job
from app.queue.sql import QUERIES

jobs_table = Job.__table__  # type: ignore[attr-defined]


class JobNotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    """The job is not in a state this change applies to."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class DuplicateActive(Exception):
    """Another job with the same dedupe key is pending or running."""

    job_id: str


def parse_job_id(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 18 else None


async def get_job(conn: AsyncConnection, job_id: str) -> dict[str, Any]:
    key = parse_job_id(job_id)
    row = None
    if key is not None:
        row = (await conn.execute(select(jobs_table).where(jobs_table.c.id == key))).first()
    if row is None:
        raise JobNotFound(job_id)
    return dict(row._mapping)


async def list_jobs(
    conn: AsyncConnection, *, status: str | None, type: str | None, limit: int
) -> list[dict[str, Any]]:
    query = select(jobs_table).order_by(jobs_table.c.id.desc()).limit(limit)
    if status:
        query = query.where(jobs_table.c.status == status)
    if type:
        query = query.where(jobs_table.c.type == type)
    return [dict(row._mapping) for row in await conn.execute(query)]


async def retry_job(conn: AsyncConnection, job_id: str) -> dict[str, Any]:
    """failed/cancelled -> pending; DuplicateActive when a twin holds the key."""
    job = await get_job(conn, job_id)
    savepoint = await conn.begin_nested()
    try:
        updated = (await conn.execute(QUERIES["manual_retry"], {"id": job["id"]})).first()
        await savepoint.commit()
    except sa_exc.IntegrityError:
        # A twin was enqueued between our check and our write: same answer as the check.
        await savepoint.rollback()
        updated = None
    if updated is None:
        twin = (await conn.execute(QUERIES["active_twin"], {"id": job["id"]})).scalar()
        if twin is not None:
            raise DuplicateActive(str(twin))
        raise InvalidTransition(job["status"])
    return await get_job(conn, job_id)


async def cancel_job(conn: AsyncConnection, job_id: str) -> dict[str, Any]:
    """pending -> cancelled."""
    job = await get_job(conn, job_id)
    if (await conn.execute(QUERIES["cancel"], {"id": job["id"]})).first() is None:
        current = await get_job(conn, job_id)
        raise InvalidTransition(current["status"])
    return await get_job(conn, job_id)
