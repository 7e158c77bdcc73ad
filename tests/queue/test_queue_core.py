"""The queue core on its own: enqueue, claim, lease guards and outcomes, against real Postgres."""

from __future__ import annotations

import asyncio
import random

import pytest

from app.db import Database
from app.queue import Discard, JobContext, JobSpec, Registry, RetryLater, Runner
from app.queue.enqueue import enqueue, enqueue_many
from app.queue.outcomes import Action, OutcomeWriter, Record, Verdict
from app.queue.runner import AHEAD_WAIT_S, SlotLoop

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
    return Runner(database, registry=jobs, concurrency=4, job_timeout_s=5, lease_s=10, **kw)


async def test_active_dedupe_holds_while_pending_and_frees_the_key_when_done(database, db):
    async with database.acquire() as conn:
        first = await enqueue(conn, "noop", "k", registry=jobs)
        again = await enqueue(conn, "noop", "k", registry=jobs)
    assert (first.deduplicated, again.deduplicated, again.id) == (False, True, first.id)
    assert await db.fetchval("SELECT enqueue_count FROM jobs") == 2

    summary = await runner(database).drain(10)
    assert summary.outcomes["succeeded"] == 1
    async with database.acquire() as conn:
        fresh = await enqueue(conn, "noop", "k", registry=jobs)
    assert fresh.deduplicated is False and fresh.id != first.id


async def test_forever_dedupe_outlives_the_job(database, db):
    async with database.acquire() as conn:
        first = await enqueue(conn, "once", "slot-1", registry=jobs)
        await db.execute("UPDATE jobs SET status = 'succeeded' WHERE id = $1", int(first.id))
        again = await enqueue(conn, "once", "slot-1", registry=jobs)
    assert again.deduplicated and again.id == first.id and again.status == "succeeded"


async def test_bulk_enqueue_counts_in_batch_duplicates_and_keeps_order(database, db):
    keys = ["b", "a", "b", "c", "a", "b"]
    async with database.acquire() as conn:
        answers = await enqueue_many(conn, "noop", [JobSpec(k) for k in keys], registry=jobs)
        again = await enqueue_many(conn, "noop", [JobSpec("c"), JobSpec("d")], registry=jobs)
    assert [a.dedupe_key for a in answers] == ["noop:b", "noop:a", "noop:c"]
    assert not any(a.deduplicated for a in answers)
    assert [(a.dedupe_key, a.deduplicated) for a in again] == [("noop:c", True), ("noop:d", False)]
    counts = dict(await db.fetch("SELECT dedupe_key, enqueue_count FROM jobs"))
    assert counts == {"noop:a": 2, "noop:b": 3, "noop:c": 2, "noop:d": 1}


async def test_bulk_enqueue_keeps_each_jobs_own_fields_and_the_first_spec_of_a_key(database, db):
    later = await db.fetchval("SELECT now() + interval '1 hour'")
    specs = [
        JobSpec("x", client_id="acme", lead_id="l1", payload={"channel": "sms"}),
        JobSpec("y"),
        JobSpec("x", client_id="other", payload={"channel": "email"}),  # absorbed by the first
        JobSpec("z", run_at=later),
    ]
    async with database.acquire() as conn:
        await enqueue_many(conn, "noop", specs, registry=jobs)
    rows = {
        r["dedupe_key"]: r
        for r in await db.fetch(
            "SELECT dedupe_key, client_id, lead_id, payload::text, enqueue_count,"
            " run_at > now() + interval '30 minutes' AS later FROM jobs"
        )
    }
    got = {
        k: (r["client_id"], r["lead_id"], r["payload"], r["enqueue_count"], r["later"])
        for k, r in rows.items()
    }
    assert got == {
        "noop:x": ("acme", "l1", '{"channel": "sms"}', 2, False),
        "noop:y": (None, None, "{}", 1, False),
        "noop:z": (None, None, "{}", 1, True),
    }


async def test_overlapping_bulk_enqueues_never_deadlock_or_fail(database, db):
    keys = [f"k{i}" for i in range(200)]

    async def batch() -> None:
        chosen = random.sample(keys, 120)
        async with database.acquire() as conn:
            await enqueue_many(conn, "noop", [JobSpec(k) for k in chosen], registry=jobs)

    await asyncio.gather(*(batch() for _ in range(30)))
    assert await db.fetchval("SELECT count(*) FROM jobs") == len(
        await db.fetch("SELECT DISTINCT dedupe_key FROM jobs")
    )
    assert await db.fetchval("SELECT sum(enqueue_count) FROM jobs") == 30 * 120


async def test_claim_skips_future_jobs_and_a_lost_lease_changes_nothing(database, db):
    async with database.acquire() as conn:
        due = await enqueue(conn, "noop", "due", registry=jobs)
        await enqueue(
            conn,
            "noop",
            "future",
            registry=jobs,
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
    assert await b.outcomes.write([Record(taken.id, taken.token, Verdict(Action.COMPLETE))]) == {
        taken.id
    }
    # A wakes up: whatever it would record is refused by the lease guard.
    for verdict in (
        Verdict(Action.COMPLETE),
        Verdict(Action.FAIL, "late"),
        Verdict(Action.RETRY, "late", 1.0),
        Verdict(Action.RELEASE, delay_s=1.0),
    ):
        record = Record(claimed.id, claimed.token, verdict)
        assert await a.outcomes.submit(record) is False
    row = await db.fetchrow("SELECT status, last_error FROM jobs WHERE id = $1", claimed.id)
    assert (row["status"], row["last_error"]) == ("succeeded", None)


async def test_outcomes_written_together_each_take_their_own_action(database, db):
    async with database.acquire() as conn:
        for key in "abcde":
            await enqueue(conn, "noop", key, registry=jobs)
    a = runner(database)
    claimed = {j.dedupe_key[-1]: j for j in await a.claim(10)}
    lost = claimed["e"]
    await db.execute("UPDATE jobs SET lock_token = gen_random_uuid() WHERE id = $1", lost.id)
    records = [
        Record(claimed["a"].id, claimed["a"].token, Verdict(Action.COMPLETE)),
        Record(
            claimed["b"].id, claimed["b"].token, Verdict(Action.RETRY, "provider said wait", 30)
        ),
        Record(claimed["c"].id, claimed["c"].token, Verdict(Action.FAIL, "gave up")),
        Record(claimed["d"].id, claimed["d"].token, Verdict(Action.RELEASE, delay_s=1.0)),
        Record(lost.id, lost.token, Verdict(Action.COMPLETE)),
    ]
    # Handed over at once, they go out in at most two statements (the first may leave alone).
    results = await asyncio.gather(*(a.outcomes.submit(r) for r in records))
    assert results == [True, True, True, True, False]

    rows = {
        r["dedupe_key"][-1]: r
        for r in await db.fetch(
            "SELECT dedupe_key, status, attempts, last_error, finished_at IS NOT NULL AS ended,"
            " lock_token IS NULL AS unlocked, extract(epoch FROM run_at - now()) AS wait_s"
            " FROM jobs"
        )
    }
    got = {k: (r["status"], r["attempts"], r["last_error"], r["ended"]) for k, r in rows.items()}
    assert got == {
        "a": ("succeeded", 1, None, True),
        "b": ("pending", 1, "provider said wait", False),
        "c": ("failed", 1, "gave up", True),
        "d": ("pending", 0, None, False),  # the attempt is given back
        "e": ("running", 1, None, False),  # another runner's lease: untouched
    }
    assert 25 < rows["b"]["wait_s"] <= 30 and 0 < rows["d"]["wait_s"] <= 1
    assert all(rows[k]["unlocked"] for k in "abcd") and not rows["e"]["unlocked"]


async def test_an_outcome_that_cannot_be_written_is_reported_not_raised(database_url, db):
    broken = await Database.open(database_url, pool_size=2)
    async with broken.acquire() as conn:
        await enqueue(conn, "noop", "x", registry=jobs)
    a = runner(broken)
    [job] = await a.claim(1)
    await broken.close()
    assert await a.outcomes.submit(Record(job.id, job.token, Verdict(Action.COMPLETE))) is None
    # The job keeps its lease; once it expires another runner takes it again.
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", job.id) == "running"


async def test_the_next_claim_stores_the_outcomes_that_freed_its_slots(database, db):
    # One slot: a job's outcome is stored by the claim that takes the next job, in the same
    # statement, so the writer never writes on its own. (Quick jobs may be claimed ahead: the
    # third may come with the second, before the second's outcome is stored.)
    started: list[int] = []
    writes: list[int] = []

    class CountingWriter(OutcomeWriter):
        async def write(self, records):
            writes.append(len(records))
            return await super().write(records)

    local = Registry()

    @local.handler("step", dedupe="active")
    async def step(ctx: JobContext) -> None:
        started.append(await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'"))

    async with database.acquire() as conn:
        await enqueue_many(conn, "step", [JobSpec(k) for k in "abc"], registry=local)
    one = Runner(database, registry=local, concurrency=1, job_timeout_s=5, lease_s=10)
    one.outcomes = CountingWriter(database)
    summary = await asyncio.wait_for(one.drain(10), 20)
    assert summary.outcomes["succeeded"] == 3
    assert started[:2] == [0, 1] and started[2] in (1, 2)
    assert writes == [], "every outcome went with a claim"
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 3

    # Outside a slot loop, an outcome is written on its own at once.
    async with database.acquire() as conn:
        await enqueue(conn, "step", "d", registry=local)
    [job] = await one.claim(1)
    assert await one.outcomes.submit(Record(job.id, job.token, Verdict(Action.COMPLETE)))
    assert writes == [1]


async def test_outcomes_unexpected_errors_discard_and_retry_later(database, db):
    async with database.acquire() as conn:
        boom = await enqueue(conn, "once", "x", registry=jobs)
        discard = await enqueue(conn, "give_up", "x", registry=jobs)
        wait = await enqueue(conn, "later", "x", registry=jobs)
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
        job = await enqueue(conn, "once", "lost", registry=jobs)
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
            await enqueue(conn, "noop", key, registry=jobs)
    await db.execute(
        "UPDATE jobs SET status = 'running', lock_token = gen_random_uuid(),"
        " locked_until = now() - interval '1 second' WHERE dedupe_key = 'noop:a'"
    )
    await db.execute(
        "UPDATE jobs SET run_at = now() + interval '1 hour' WHERE dedupe_key = 'noop:c'"
    )
    assert (await runner(database).count_due())[0] == 2


async def test_the_slot_loop_fills_free_slots_and_releases_what_it_cancels(database, db):
    """The loop both the runner and the worker turn: a claim per free slot, a wait that ends
    on a slot, an attempt or the caller's own event, and a finish that gives jobs back."""
    local = Registry()
    let_go = asyncio.Event()

    @local.handler("hold", dedupe="active")
    async def hold(ctx: JobContext) -> None:
        await let_go.wait()

    async with database.acquire() as conn:
        await enqueue_many(conn, "hold", [JobSpec(k) for k in "abcd"], registry=local)
    two = Runner(database, registry=local, concurrency=2, job_timeout_s=5, lease_s=10)
    attempts = SlotLoop(two)
    assert await attempts.fill() is False  # every free slot got a job: more may be due
    assert len(attempts.in_flight) == 2
    assert await attempts.fill() is True  # no slot free: nothing claimed
    assert await attempts.wait(at_most_s=0.05) is False

    poked = asyncio.get_running_loop().create_future()
    poked.set_result(None)
    assert await attempts.wait(poked, at_most_s=5) is True and len(attempts.in_flight) == 2

    # The handlers finish: their slots free, the wait ends and the next claim fills them.
    let_go.set()
    assert await attempts.wait(at_most_s=5) is True
    let_go.clear()
    while attempts.in_flight:
        await attempts.wait(at_most_s=5)
    assert await attempts.fill() is False and len(attempts.in_flight) == 2
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 2

    await attempts.finish_in_flight(grace_s=0.05)
    assert attempts.outcomes == {"succeeded": 2, "released": 2} and not attempts.in_flight
    rows = await db.fetch("SELECT status, attempts, count(*) AS n FROM jobs GROUP BY 1, 2")
    assert {(r["status"], r["attempts"], r["n"]) for r in rows} == {
        ("succeeded", 1, 2),
        ("pending", 0, 2),
    }


async def test_quick_jobs_are_claimed_ahead_and_what_waits_is_given_back(database, db):
    """Jobs quicker than a claim are claimed ahead of the free slots; one not started within
    AHEAD_WAIT_S, or still waiting when the loop stops, goes back to pending with its attempt."""
    local = Registry()
    let_go = asyncio.Event()

    @local.handler("hold", dedupe="active")
    async def hold(ctx: JobContext) -> None:
        await let_go.wait()

    async with database.acquire() as conn:
        await enqueue_many(conn, "hold", [JobSpec(k) for k in "abcdefgh"], registry=local)
    one = Runner(database, registry=local, concurrency=1, job_timeout_s=5, lease_s=10)
    attempts = SlotLoop(one)

    async def next_turn() -> bool:
        # The running job ends: its slot frees and the loop fills it, with no claim ahead.
        let_go.set()
        await attempts.wait(at_most_s=5)
        let_go.clear()
        attempts.round_trip_s = 0.0
        return await attempts.fill()

    try:
        # As if each job so far had taken a microsecond and the last claim a second.
        one.slots.held_s, attempts.round_trip_s = 1e-6, 1.0
        assert attempts.ahead() == 3
        assert await attempts.fill() is False
        assert len(attempts.in_flight) == 1 and len(attempts.ready) == 3
        assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 4

        # The next job starts from those claimed ahead, with no claim.
        assert await next_turn() is False and len(attempts.ready) == 2
        # One claimed ahead waited too long: it is given back and the next one starts instead.
        job, claimed_at = attempts.ready[0]
        attempts.ready[0] = (job, claimed_at - 2 * AHEAD_WAIT_S)
        await next_turn()
        assert not attempts.ready
    finally:
        await attempts.finish_in_flight()
        let_go.set()
    rows = await db.fetch("SELECT status, attempts, count(*) AS n FROM jobs GROUP BY 1, 2")
    # Two ran; the third was cancelled and released; the one that waited too long was given
    # back; four were never claimed.
    assert {(r["status"], r["attempts"], r["n"]) for r in rows} == {
        ("succeeded", 1, 2),
        ("pending", 0, 6),
    }
    assert attempts.outcomes == {"succeeded": 2, "released": 1}
