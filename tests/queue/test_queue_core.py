"""The queue core on its own: enqueue, claim, lease guards and outcomes, against real Postgres."""

from __future__ import annotations

import asyncio
import random

import pytest

from app.db import Database
from app.queue import Discard, JobContext, JobSpec, Registry, RetryLater, Runner
from app.queue.enqueue import enqueue, enqueue_many
from app.queue.sql import QUERIES

jobs = Registry()
ran: list[int] = []


@jobs.handler("noop", dedupe="active")
async def noop(ctx: JobContext) -> None:
    ran.append(ctx.job.id)


@jobs.handler("once", dedupe="forever", max_attempts=2)
async def once(ctx: JobContext) -> None:
    raise ValueError("jane@example.org said something private")


@jobs.handler("give_up", dedupe="active")
async def give_up(ctx: JobContext) -> None:
    raise Discard("nothing to do for this job")


@jobs.handler("later", dedupe="active")
async def later(ctx: JobContext) -> None:
    raise RetryLater("provider asked to wait", after=5)


@pytest.fixture
async def database(database_url):
    db = await Database.open(database_url)
    yield db
    await db.close()


def runner(database, **kw) -> Runner:
    return Runner(database, jobs=jobs, job_timeout_s=5, lease_s=10, **kw)


async def test_active_dedupe_holds_while_pending_and_frees_the_key_when_done(database, db):
    async with database.acquire() as conn:
        first = await enqueue(conn, "noop", "k", jobs=jobs)
        again = await enqueue(conn, "noop", "k", jobs=jobs)
    assert (first.deduplicated, again.deduplicated, again.id) == (False, True, first.id)
    assert await db.fetchval("SELECT enqueue_count FROM jobs") == 2

    summary = await runner(database).drain(10)
    assert summary.outcomes["succeeded"] == 1
    async with database.acquire() as conn:
        fresh = await enqueue(conn, "noop", "k", jobs=jobs)
    assert fresh.deduplicated is False and fresh.id != first.id


async def test_forever_dedupe_outlives_the_job(database, db):
    async with database.acquire() as conn:
        first = await enqueue(conn, "once", "slot-1", jobs=jobs)
        await db.execute("UPDATE jobs SET status = 'succeeded' WHERE id = $1", int(first.id))
        again = await enqueue(conn, "once", "slot-1", jobs=jobs)
    assert again.deduplicated and again.id == first.id and again.status == "succeeded"


async def test_bulk_enqueue_counts_in_batch_duplicates_and_keeps_order(database, db):
    keys = ["b", "a", "b", "c", "a", "b"]
    async with database.acquire() as conn:
        answers = await enqueue_many(conn, "noop", [JobSpec(k) for k in keys], jobs=jobs)
        again = await enqueue_many(conn, "noop", [JobSpec("c"), JobSpec("d")], jobs=jobs)
    assert [a.dedupe_key for a in answers] == ["noop:b", "noop:a", "noop:c"]
    assert not any(a.deduplicated for a in answers)
    assert [(a.dedupe_key, a.deduplicated) for a in again] == [("noop:c", True), ("noop:d", False)]
    counts = dict(await db.fetch("SELECT dedupe_key, enqueue_count FROM jobs"))
    assert counts == {"noop:a": 2, "noop:b": 3, "noop:c": 2, "noop:d": 1}


async def test_overlapping_bulk_enqueues_never_deadlock_or_fail(database, db):
    keys = [f"k{i}" for i in range(200)]

    async def batch() -> None:
        chosen = random.sample(keys, 120)
        async with database.acquire() as conn:
            await enqueue_many(conn, "noop", [JobSpec(k) for k in chosen], jobs=jobs)

    await asyncio.gather(*(batch() for _ in range(30)))
    assert await db.fetchval("SELECT count(*) FROM jobs") == len(
        await db.fetch("SELECT DISTINCT dedupe_key FROM jobs")
    )
    assert await db.fetchval("SELECT sum(enqueue_count) FROM jobs") == 30 * 120


async def test_claim_skips_future_jobs_and_a_lost_lease_changes_nothing(database, db):
    async with database.acquire() as conn:
        due = await enqueue(conn, "noop", "due", jobs=jobs)
        await enqueue(
            conn,
            "noop",
            "future",
            jobs=jobs,
            run_at=await db.fetchval("SELECT now() + interval '1 hour'"),
        )
    a = runner(database)
    [claimed] = await a.claim(10)
    assert claimed.id == int(due.id) and claimed.attempt == 1 and not claimed.stale
    assert await a.claim(10) == []

    # A's lease runs out; B takes the job over and finishes it.
    await db.execute("UPDATE jobs SET locked_until = now() - interval '1 second'")
    b = runner(database)
    [taken] = await b.claim(10)
    assert taken.id == claimed.id and taken.stale and taken.attempt == 2
    async with database.acquire() as conn:
        assert await conn.execute(QUERIES["complete"], taken.id, taken.token) == "UPDATE 1"
        # A wakes up: whatever it would record is refused by the lease guard.
        for action, args in (
            ("complete", ()),
            ("fail", ("late",)),
            ("retry", (1.0, "late")),
            ("release", (1.0,)),
        ):
            assert await conn.execute(QUERIES[action], claimed.id, claimed.token, *args) == (
                "UPDATE 0"
            )
    row = await db.fetchrow("SELECT status, last_error FROM jobs WHERE id = $1", claimed.id)
    assert (row["status"], row["last_error"]) == ("succeeded", None)


async def test_outcomes_unexpected_errors_discard_and_retry_later(database, db):
    async with database.acquire() as conn:
        boom = await enqueue(conn, "once", "x", jobs=jobs)
        discard = await enqueue(conn, "give_up", "x", jobs=jobs)
        wait = await enqueue(conn, "later", "x", jobs=jobs)
    summary = await runner(database).drain(10)
    assert (summary.outcomes["retried"], summary.outcomes["failed"]) == (2, 1)

    rows = {r["id"]: r for r in await db.fetch("SELECT *, run_at - now() AS delay FROM jobs")}
    # The exception's text may hold PII: only its class is kept.
    assert rows[int(boom.id)]["last_error"] == "unexpected error: ValueError"
    assert rows[int(discard.id)]["status"] == "failed"
    assert rows[int(discard.id)]["last_error"] == "nothing to do for this job"
    assert 4 < rows[int(wait.id)]["delay"].total_seconds() <= 5

    # The last attempt's failure is final.
    await db.execute("UPDATE jobs SET run_at = now() WHERE id = $1", int(boom.id))
    await runner(database).drain(10)
    row = await db.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1", int(boom.id))
    assert (row["status"], row["attempts"]) == ("failed", 2)


async def test_a_job_whose_last_attempt_lost_its_runner_is_failed(database, db):
    async with database.acquire() as conn:
        job = await enqueue(conn, "once", "lost", jobs=jobs)
    await db.execute(
        "UPDATE jobs SET status = 'running', attempts = 2, lock_token = gen_random_uuid(),"
        " locked_until = now() - interval '1 second' WHERE id = $1",
        int(job.id),
    )
    summary = await runner(database).drain(10)
    assert summary.released_stale == 1 and summary.outcomes["failed"] == 1
    row = await db.fetchrow("SELECT status, last_error FROM jobs WHERE id = $1", int(job.id))
    assert row["status"] == "failed" and "lost" in row["last_error"]


async def test_remaining_due_counts_due_pending_and_expired_leases(database, db):
    async with database.acquire() as conn:
        for key in ("a", "b", "c"):
            await enqueue(conn, "noop", key, jobs=jobs)
    await db.execute(
        "UPDATE jobs SET status = 'running', lock_token = gen_random_uuid(),"
        " locked_until = now() - interval '1 second' WHERE dedupe_key = 'noop:a'"
    )
    await db.execute(
        "UPDATE jobs SET run_at = now() + interval '1 hour' WHERE dedupe_key = 'noop:c'"
    )
    assert (await runner(database).due())[0] == 2
