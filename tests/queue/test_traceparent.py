"""The queue's tracing seam (app/queue/hooks.py), with no OpenTelemetry: the traceparent an
enqueue stores, and the observer every attempt runs in."""

from __future__ import annotations

import pytest

from app.db import Database
from app.queue import JobContext, JobSpec, Registry, Runner, hooks
from app.queue.enqueue import enqueue, enqueue_many

jobs = Registry()

FIRST = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
SECOND = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@jobs.handler("noop", dedupe="active")
async def noop(ctx: JobContext) -> None:
    pass


@jobs.handler("tick", dedupe="forever")
async def tick(ctx: JobContext) -> None:
    pass


@pytest.fixture
async def database(database_url):
    db = await Database.open(database_url)
    yield db
    await db.close()


@pytest.fixture
def current(monkeypatch):
    """The traceparent the hook answers, as a one-item list to change mid-test."""
    value: list[str | None] = [FIRST]
    monkeypatch.setattr(hooks, "traceparent", lambda: value[0])
    return value


async def test_an_enqueue_stores_the_traceparent_and_a_duplicate_keeps_the_first(
    database, db, current
):
    async with database.acquire() as conn:
        first = await enqueue(conn, "noop", "k", registry=jobs)
        current[0] = SECOND
        again = await enqueue(conn, "noop", "k", registry=jobs)
        forever = await enqueue(conn, "tick", "slot", registry=jobs)
        current[0] = FIRST
        forever_again = await enqueue(conn, "tick", "slot", registry=jobs)
    assert again.deduplicated and forever_again.deduplicated
    stored = dict(await db.fetch("SELECT id::text, traceparent FROM jobs"))
    assert stored == {first.id: FIRST, forever.id: SECOND}


async def test_a_fan_out_stores_the_traceparent_on_the_jobs_it_creates_only(database, db, current):
    async with database.acquire() as conn:
        await enqueue_many(conn, "noop", [JobSpec("a"), JobSpec("b")], registry=jobs)
        current[0] = SECOND
        answers = await enqueue_many(conn, "noop", [JobSpec("b"), JobSpec("c")], registry=jobs)
    assert [a.deduplicated for a in answers] == [True, False]
    stored = dict(await db.fetch("SELECT dedupe_key, traceparent FROM jobs"))
    assert stored == {"noop:a": FIRST, "noop:b": FIRST, "noop:c": SECOND}


async def test_with_no_hook_set_a_job_has_no_traceparent(database, db):
    assert hooks.traceparent is hooks.no_traceparent and hooks.attempt_observer is None
    async with database.acquire() as conn:
        await enqueue(conn, "noop", "k", registry=jobs)
        await enqueue_many(conn, "noop", [JobSpec("m")], registry=jobs)
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE traceparent IS NULL") == 2


async def test_each_attempt_runs_inside_the_observer_which_sees_its_outcome(database, monkeypatch):
    seen: list[tuple[str, int, str]] = []

    async def observer(runner, job, attempt):
        outcome = await attempt
        seen.append((runner.invocation_id, job.id, outcome))
        return outcome

    monkeypatch.setattr(hooks, "attempt_observer", observer)
    async with database.acquire() as conn:
        job = await enqueue(conn, "noop", "k", registry=jobs)
    runner = Runner(database, registry=jobs, concurrency=2, job_timeout_s=5, lease_s=10)
    summary = await runner.drain(10)
    assert summary.outcomes["succeeded"] == 1
    assert seen == [(runner.invocation_id, int(job.id), "succeeded")]
