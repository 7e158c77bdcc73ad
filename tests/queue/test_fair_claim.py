"""The fair claim: clients take turns, one client's running jobs are capped across every
process, priority orders a client's own jobs, and a throttled job keeps its attempts."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from app.db import Database
from app.queue import JobContext, JobSpec, Registry, Runner, Throttled
from app.queue.enqueue import enqueue, enqueue_many
from app.queue.ratelimit import hold_off, take_token
from app.queue.registry import PRIORITY_BULK
from app.sandbox.data import sms_history
from tests.queue.test_runner import sms_only_leads, sync_leads
from tests.queue.test_worker import stop
from tests.support import eventually

jobs = Registry()
ran: list[tuple[str | None, str]] = []


@jobs.handler("noop", dedupe="active")
async def noop(ctx: JobContext) -> None:
    ran.append((ctx.job.client_id, ctx.job.dedupe_key))


@jobs.handler("throttled_once", dedupe="active")
async def throttled_once(ctx: JobContext) -> None:
    if not ctx.job.payload.get("again"):
        raise Throttled("no token yet", after=30)


@pytest.fixture
async def database(database_url):
    ran.clear()
    db = await Database.open(database_url)
    yield db
    await db.close()


def one_at_a_time(database: Database) -> Runner:
    return Runner(database, registry=jobs, concurrency=1, job_timeout_s=5, lease_s=10)


async def test_two_clients_take_turns_in_claim_order(database, db):
    await db.execute("INSERT INTO clients (id, name) VALUES ('a', 'A'), ('b', 'B')")
    async with database.acquire() as conn:
        # Client a's backlog is all older than b's one job.
        await enqueue_many(conn, "noop", [JobSpec(f"a{i}", "a") for i in range(6)], registry=jobs)
        await enqueue_many(conn, "noop", [JobSpec(f"b{i}", "b") for i in range(3)], registry=jobs)
        await enqueue(conn, "noop", "system", registry=jobs)

    summary = await one_at_a_time(database).drain(20)

    assert summary.outcomes["succeeded"] == 10
    order = [client or "-" for client, _ in ran]
    # Each group (the job of no client is one) gets a turn before any group gets a second.
    assert order[:3] == ["a", "b", "-"], order
    assert order[3:7] == ["a", "b", "a", "b"], order
    assert order[7:] == ["a", "a", "a"], order
    # Within a client, run_at order holds.
    assert [key for client, key in ran if client == "a"] == [f"noop:a{i}" for i in range(6)]


async def test_priority_orders_a_clients_own_jobs(database, db):
    await db.execute("INSERT INTO clients (id, name) VALUES ('a', 'A')")
    async with database.acquire() as conn:
        bulk = [JobSpec(f"bulk{i}", "a", priority=PRIORITY_BULK) for i in range(4)]
        await enqueue_many(conn, "noop", bulk, registry=jobs)
        for i in range(2):
            await enqueue(conn, "noop", f"person{i}", client_id="a", registry=jobs)
        # A person asks again for a job still pending as bulk work: it is raised, not doubled.
        again = await enqueue(conn, "noop", "bulk3", client_id="a", priority=0, registry=jobs)
    assert again.deduplicated
    rows = await db.fetch("SELECT dedupe_key, priority FROM jobs ORDER BY id")
    assert [r["priority"] for r in rows] == [5, 5, 5, 0, 0, 0]

    await one_at_a_time(database).drain(20)

    assert [key for _, key in ran] == [
        "noop:bulk3",
        "noop:person0",
        "noop:person1",
        "noop:bulk0",
        "noop:bulk1",
        "noop:bulk2",
    ]


async def test_the_cap_holds_within_one_runner(database, db):
    await db.execute("INSERT INTO clients (id, name) VALUES ('a', 'A')")
    async with database.acquire() as conn:
        await enqueue_many(conn, "noop", [JobSpec(f"a{i}", "a") for i in range(5)], registry=jobs)
    runner = Runner(
        database, registry=jobs, concurrency=4, job_timeout_s=5, lease_s=10, client_concurrency=3
    )
    claimed = await runner.claim(4)
    assert len(claimed) == 3, "three of client a's jobs at most"
    assert await runner.claim(4) == []


async def test_the_bucket_spaces_tokens_and_a_hold_off_pushes_the_next(database):
    # 60 a minute: a token a second (and 3 %). Waits are bounded generously below: the
    # takes are apart by however long a busy machine makes them.
    first = await take_token(database, "k", 60)
    assert first.granted and first.wait_s == 0
    refused = await take_token(database, "k", 60)
    assert not refused.granted and 0.5 < refused.wait_s <= 1.03
    reserved = await take_token(database, "k", 60, ahead_s=2)
    assert reserved.granted and 0.5 < reserved.wait_s <= 1.03, "a token reserved ahead"
    await hold_off(database, "k", 5)
    held = await take_token(database, "k", 60)
    assert not held.granted and 4.5 < held.wait_s <= 5
    other = await take_token(database, "other", 60)
    assert other.granted, "each key is a bucket of its own"


async def test_a_throttled_job_keeps_its_attempts_and_holds_no_slot(database, db):
    async with database.acquire() as conn:
        job = await enqueue(conn, "throttled_once", "t", registry=jobs)
    started = time.monotonic()
    summary = await one_at_a_time(database).drain(20)
    assert time.monotonic() - started < 5, "the throttled job was not waited for"
    assert summary.outcomes["throttled"] == 1
    assert summary.as_dict()["throttled"] == 1
    row = await db.fetchrow(
        "SELECT status, attempts, last_error, run_at - now() AS wait FROM jobs WHERE id = $1",
        int(job.id),
    )
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, None)
    assert 25 < row["wait"].total_seconds() <= 30, "back at its turn, 30 s on"


async def test_client_concurrency_holds_across_two_workers(
    sandbox, start_service, start_worker, db
):
    state, _ = sandbox
    service = start_service()
    leads = {
        client: await sms_only_leads(service, 20, client_id=client)
        for client in ("acme", "beta", "gamma")
    }
    # Every SMS call takes 0.2 s, so jobs overlap; three clients at two each need more than
    # one worker's four slots, so both workers claim side by side.
    state.add_fault("sms", "hang", hang_s=0.2)
    workers = [start_worker(runner_concurrency=4, client_concurrency=2) for _ in range(2)]
    for client, ids in leads.items():
        await sync_leads(service, ids, client_id=client)

    most: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") > 0:
        assert time.monotonic() < deadline, "the jobs did not finish within 120 s"
        for row in await db.fetch(
            "SELECT client_id, count(*) AS n FROM jobs WHERE status = 'running' GROUP BY 1"
        ):
            most[row["client_id"]] = max(most.get(row["client_id"], 0), row["n"])
        await asyncio.sleep(0.01)

    assert [await stop(w) for w in workers] == [0, 0]
    assert most == {"acme": 2, "beta": 2, "gamma": 2}, (
        "each client reached its cap and never passed it"
    )
    owners = await db.fetch("SELECT DISTINCT locked_by FROM jobs")
    assert len(owners) == 2, "both workers took jobs"
    assert await db.fetchval("SELECT max(attempts) FROM jobs") == 1


async def test_the_rate_bucket_is_shared_by_two_workers(sandbox, start_service, start_worker, db):
    state, _ = sandbox
    service = start_service()
    leads = await sms_only_leads(service, 12)
    await sync_leads(service, leads)
    # Each job pages through its lead's history: every page is one call, one token.
    calls_wanted = sum(math.ceil(len(sms_history(f"c-{lead}")) / 5) for lead in leads)
    interval = 0.25  # SMS_RATE_PER_MIN 240
    workers = [
        start_worker(runner_concurrency=4, client_concurrency=4, sms_rate_per_min=240)
        for _ in range(2)
    ]

    async def all_done() -> bool:
        return await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 12

    await eventually(all_done, 120, step_s=0.1, what="all jobs succeeded")
    assert [await stop(w) for w in workers] == [0, 0]

    times = sorted(state.call_times("sms", "list"))
    assert len(times) >= calls_wanted
    # Evenly spaced tokens: no window of w seconds grants more than w / 0.25 + 1. A call
    # reaches the provider a few milliseconds after its token, so windows are 50 ms shorter.
    for w in (1.0, 3.0):
        most = max(sum(1 for t in times if start <= t < start + w - 0.05) for start in times)
        assert most <= w / interval + 1, (w, most)
    # And the limit is used: the calls take about their count in intervals, not much more.
    span = times[-1] - times[0]
    assert (len(times) - 1) * interval - 0.2 <= span < (len(times) - 1) * interval * 1.5 + 3
    assert await db.fetchval("SELECT max(attempts) FROM jobs") == 1, "throttles used no attempt"
    assert len({r["locked_by"] for r in await db.fetch("SELECT locked_by FROM jobs")}) == 2
