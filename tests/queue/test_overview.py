"""The queue overview on real rows with known timestamps: the last hour minute by minute
(jobs finished by outcome, the due backlog) and the scope of one client.

Each test writes its rows and reads the overview in one transaction, where now() stands still,
so every row sits at a known place in the hour however slow the machine is.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta

import asyncpg

from app.queue.control import queue_overview

MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
_keys = itertools.count()


async def add_job(
    db: asyncpg.Connection,
    status: str,
    *,
    run_at: datetime,
    created_at: datetime | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    client_id: str | None = "acme",
    type: str = "conversation_sync",
) -> int:
    running = status == "running"
    return await db.fetchval(
        "INSERT INTO jobs (type, status, dedupe_key, dedupe_scope, client_id, run_at, created_at,"
        " started_at, finished_at, lock_token, locked_until)"
        " VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8,"
        " CASE WHEN $9 THEN gen_random_uuid() END, CASE WHEN $9 THEN now() + interval '1 hour' END)"
        " RETURNING id",
        type,
        status,
        f"k{next(_keys)}",
        client_id,
        run_at,
        created_at or run_at,
        started_at,
        finished_at,
        running,
    )


async def this_minute(db: asyncpg.Connection) -> datetime:
    """The start of the current UTC minute, as the transaction's now() sees it."""
    return await db.fetchval("SELECT date_trunc('minute', now())")


def at_minutes_ago(points: list[dict], minute: datetime) -> dict[int, dict]:
    """The series keyed by how many minutes before the current one each point is."""
    return {round((minute - p["minute"]) / MIN): p for p in points}


async def test_last_hour_counts_finished_jobs_per_minute_by_outcome(db):
    async with db.transaction():
        m = await this_minute(db)

        async def finished(status: str, at: datetime) -> None:
            # Due a second before it finished; a cancelled job never started.
            started = None if status == "cancelled" else at
            await add_job(db, status, run_at=at - SEC, started_at=started, finished_at=at)

        # Minute m-10: three succeeded (its first and last microsecond included), one failed.
        for second in (timedelta(0), 50 * SEC, MIN - timedelta(microseconds=1)):
            await finished("succeeded", m - 10 * MIN + second)
        await finished("failed", m - 10 * MIN + 30 * SEC)
        await finished("cancelled", m - 3 * MIN)
        # The oldest minute of the hour starts 59 minutes before the current one ...
        await finished("succeeded", m - 59 * MIN)
        # ... so these are outside it.
        await finished("succeeded", m - 59 * MIN - timedelta(microseconds=1))
        await finished("failed", m - 2 * timedelta(hours=1))
        # The current minute counts too (m is at or just before now(), the transaction's start).
        await finished("succeeded", m)
        # Jobs that have not finished are no outcome.
        await add_job(db, "pending", run_at=m + MIN)
        await add_job(db, "running", run_at=m - MIN, started_at=m - MIN)

    overview = await queue_overview(db)

    points = overview["last_hour"]
    assert [p["minute"] for p in points] == [m - (59 - i) * MIN for i in range(60)]
    by_age = at_minutes_ago(points, m)
    assert {k: v for k, v in by_age[10].items() if k != "minute"} == {
        "succeeded": 3,
        "failed": 1,
        "cancelled": 0,
        "backlog": 0,
    }
    assert (by_age[3]["cancelled"], by_age[59]["succeeded"], by_age[0]["succeeded"]) == (1, 1, 1)
    totals = {s: sum(p[s] for p in points) for s in ("succeeded", "failed", "cancelled")}
    assert totals == {"succeeded": 5, "failed": 1, "cancelled": 1}
    # None of them waited past a minute's end: no backlog anywhere.
    assert [p["backlog"] for p in points] == [0] * 60


async def test_last_hour_backlog_follows_each_jobs_wait(db):
    """A minute's backlog is the jobs due and not yet started at its end (the current one's: now).
    Each job below says which minutes (counted back from the current one) it must count in."""
    async with db.transaction():
        m = await this_minute(db)
        expected: dict[str, range] = {}

        # Due 20 minutes ago (+10 s), started 15 minutes ago (+30 s): waiting at the ends of
        # minutes m-20 ... m-16; at m-15's end it had started.
        await add_job(
            db, "succeeded", run_at=m - 20 * MIN + 10 * SEC,
            started_at=m - 15 * MIN + 30 * SEC, finished_at=m - 15 * MIN + 40 * SEC,
        )  # fmt: skip
        expected["waited five minutes"] = range(16, 21)
        # Scheduled at creation for 5 minutes ago, still pending: due exactly at the end of
        # minute m-6, so counted from there to now.
        await add_job(db, "pending", created_at=m - 30 * MIN, run_at=m - 5 * MIN)
        expected["pending since 5 min"] = range(0, 7)
        # Created after its run_at (enqueued late): it waited from its creation, not run_at.
        await add_job(
            db, "running", created_at=m - 8 * MIN + 20 * SEC, run_at=m - 40 * MIN,
            started_at=m - 7 * MIN + 10 * SEC,
        )  # fmt: skip
        expected["created late, now running"] = range(8, 9)
        # Cancelled before it was due: it never waited, whatever its dates.
        await add_job(
            db, "cancelled", created_at=m - 12 * MIN, run_at=m + 10 * MIN,
            finished_at=m - 11 * MIN,
        )  # fmt: skip
        # Waited one second inside a minute: at no minute's end.
        await add_job(
            db, "failed", run_at=m - 4 * MIN + 10 * SEC, started_at=m - 4 * MIN + 11 * SEC,
            finished_at=m - 4 * MIN + 12 * SEC,
        )  # fmt: skip
        # Due at the very end of minute m-3 and started a second later: it counts there.
        await add_job(
            db, "succeeded", run_at=m - 2 * MIN, started_at=m - 2 * MIN + SEC,
            finished_at=m - 2 * MIN + 2 * SEC,
        )  # fmt: skip
        expected["due at a minute's end"] = range(3, 4)
        # Retried (run_at moved on past its last start), then cancelled while due: it waited
        # from the retry's run_at until the cancel.
        await add_job(
            db, "cancelled", created_at=m - 30 * MIN, run_at=m - 9 * MIN + 30 * SEC,
            started_at=m - 10 * MIN, finished_at=m - 6 * MIN + 5 * SEC,
        )  # fmt: skip
        expected["retried, then cancelled"] = range(7, 10)
        # Due before the hour began and never started: in every minute.
        await add_job(db, "pending", run_at=m - 90 * MIN)
        expected["due for 90 minutes"] = range(0, 60)
        # Due before the hour, started in its first minute.
        await add_job(
            db, "succeeded", run_at=m - 70 * MIN, started_at=m - 58 * MIN + 5 * SEC,
            finished_at=m - 58 * MIN + 6 * SEC,
        )  # fmt: skip
        expected["waited into the hour"] = range(59, 60)
        # Not due yet; and a wait long over before the hour.
        await add_job(db, "pending", run_at=m + 5 * MIN)
        await add_job(
            db, "succeeded", run_at=m - 3 * timedelta(hours=1),
            started_at=m - 2 * timedelta(hours=1), finished_at=m - 2 * timedelta(hours=1),
        )  # fmt: skip

        overview = await queue_overview(db)

    by_age = at_minutes_ago(overview["last_hour"], m)
    want = {age: sum(age in ages for ages in expected.values()) for age in range(60)}
    assert {age: p["backlog"] for age, p in by_age.items()} == want
    # The current minute's point is the backlog now: the two due pending jobs, as `due` says.
    assert by_age[0]["backlog"] == overview["due"] == 2
    assert overview["oldest_due_age_s"] >= 90 * 60


async def test_a_clients_overview_holds_only_its_own_jobs(db):
    async with db.transaction():
        m = await this_minute(db)
        await add_job(db, "pending", run_at=m - 2 * MIN)
        await add_job(
            db, "succeeded", run_at=m - 3 * MIN, started_at=m - 2 * MIN,
            finished_at=m - 2 * MIN + SEC,
        )  # fmt: skip
        other = {"client_id": "other", "type": "sync_all"}
        await add_job(db, "pending", run_at=m - 50 * MIN, **other)
        await add_job(db, "pending", run_at=m - 40 * MIN, **other)
        await add_job(db, "failed", run_at=m - 5 * MIN, finished_at=m - MIN, **other)
        await add_job(db, "running", run_at=m - 5 * MIN, started_at=m - 4 * MIN, **other)
        # Jobs of no client (ticks) belong to no client key either.
        await add_job(db, "succeeded", run_at=m - MIN, finished_at=m - MIN, client_id=None)
        await db.execute(
            "INSERT INTO runner_invocations (invocation_id, summary) VALUES ('run_1', $1)",
            json.dumps({"invocation_id": "run_1", "processed": 4}),
        )

        everyone = await queue_overview(db)
        acme = await queue_overview(db, client_id="acme")
        nobody = await queue_overview(db, client_id="nobody")

    def counts(overview):
        return {(c["status"], c["type"]): c["count"] for c in overview["counts"]}

    def totals(overview):
        points = overview["last_hour"]
        return [sum(p[k] for p in points) for k in ("succeeded", "failed", "cancelled")]

    assert counts(acme) == {
        ("pending", "conversation_sync"): 1,
        ("succeeded", "conversation_sync"): 1,
    }
    assert acme["client_id"] == "acme"
    assert acme["due"] == 1
    assert 2 * 60 <= acme["oldest_due_age_s"] < 3 * 60
    assert totals(acme) == [1, 0, 0]
    assert acme["last_hour"][-1]["backlog"] == 1
    # Runner invocations drain every client's jobs: no client sees them.
    assert acme["runs"] == []

    assert sum(counts(everyone).values()) == 7 and everyone["client_id"] is None
    assert everyone["due"] == 3 and everyone["oldest_due_age_s"] >= 50 * 60
    assert totals(everyone) == [2, 1, 0]
    assert everyone["last_hour"][-1]["backlog"] == 3
    assert [r["invocation_id"] for r in everyone["runs"]] == ["run_1"]

    assert counts(nobody) == {} and nobody["due"] == 0 and nobody["oldest_due_age_s"] == 0
    assert len(nobody["last_hour"]) == 60
    assert all(p["backlog"] == p["succeeded"] == p["failed"] == 0 for p in nobody["last_hour"])
