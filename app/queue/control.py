"""Reading jobs and the manual state changes: retry and cancel."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.queue.sql import QUERIES


class JobNotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    """The job is not in a state this change applies to."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


class DuplicateActive(Exception):
    """Another job with the same dedupe key is pending or running."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


def parse_job_id(value: str) -> int | None:
    # isascii: "²" and "①" are digits to isdigit(), not to int().
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


async def get_job(
    conn: asyncpg.Connection, job_id: str, client_id: str | None = None
) -> dict[str, Any]:
    """The job; JobNotFound if there is none, or (given `client_id`) it is not that client's."""
    key = parse_job_id(job_id)
    row = None
    if key is not None:
        row = await conn.fetchrow(QUERIES["get_job"], key, client_id)
    if row is None:
        raise JobNotFound(job_id)
    return dict(row)


async def list_jobs(
    conn: asyncpg.Connection,
    *,
    status: str | None,
    type: str | None,
    limit: int,
    client_id: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; given `client_id`, only that client's jobs."""
    if client_id is None:
        rows = await conn.fetch(QUERIES["list_jobs"], status, type, limit)
    else:
        rows = await conn.fetch(QUERIES["list_client_jobs"], status, type, limit, client_id)
    return [dict(row) for row in rows]


@dataclass(frozen=True)
class QueueState:
    counts: list[dict[str, Any]]  # status, type, count
    due: int
    oldest_due_age_s: float


async def queue_state(conn: asyncpg.Connection, client_id: str | None = None) -> QueueState:
    """Jobs by status and type, how many are due, and how long the oldest due one has waited:
    every client's, or only `client_id`'s."""
    counts = [dict(r) for r in await conn.fetch(QUERIES["queue_counts"], client_id)]
    if client_id is None:
        due = await conn.fetchrow(QUERIES["count_due"])
    else:
        due = await conn.fetchrow(QUERIES["count_due_of_client"], client_id)
    return QueueState(counts, int(due["due"]), float(due["oldest_s"]))


async def queue_overview(
    conn: asyncpg.Connection, client_id: str | None = None, *, runs: int = 10
) -> dict[str, Any]:
    """Counts by status and type, the oldest due job's age, the last hour minute by minute
    and the latest runner summaries. With `client_id`, every figure covers that client's jobs
    alone and there are no runner summaries: a runner drains every client's jobs at once."""
    state = await queue_state(conn, client_id)
    last_hour = [dict(r) for r in await conn.fetch(QUERIES["queue_last_hour"], client_id)]
    recent = [] if client_id is not None else await conn.fetch(QUERIES["recent_invocations"], runs)
    return {
        "client_id": client_id,
        "counts": state.counts,
        "due": state.due,
        "oldest_due_age_s": round(state.oldest_due_age_s, 3),
        "last_hour": last_hour,
        "runs": [{**json.loads(r["summary"]), "finished_at": r["finished_at"]} for r in recent],
    }


async def retry_job(
    conn: asyncpg.Connection, job_id: str, client_id: str | None = None
) -> dict[str, Any]:
    """failed/cancelled -> pending; DuplicateActive when a twin holds the key. Given
    `client_id`, another client's job is JobNotFound and stays as it is."""
    job = await get_job(conn, job_id, client_id)
    try:
        async with conn.transaction():
            updated = await conn.fetchval(QUERIES["manual_retry"], job["id"])
    except asyncpg.UniqueViolationError:
        # A twin was enqueued between our check and our write: same answer as the check.
        updated = None
    if updated is None:
        twin = await conn.fetchval(QUERIES["active_twin"], job["id"])
        if twin is not None:
            raise DuplicateActive(str(twin))
        raise InvalidTransition((await get_job(conn, job_id))["status"])
    return await get_job(conn, job_id)


async def cancel_job(
    conn: asyncpg.Connection, job_id: str, client_id: str | None = None
) -> dict[str, Any]:
    """pending -> cancelled; another client's job (given `client_id`) is JobNotFound."""
    job = await get_job(conn, job_id, client_id)
    if await conn.fetchval(QUERIES["cancel"], job["id"]) is None:
        raise InvalidTransition((await get_job(conn, job_id))["status"])
    return await get_job(conn, job_id)
