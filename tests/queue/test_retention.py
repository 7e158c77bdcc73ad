"""Retention: finished jobs are pruned after their days, failed ones later, live ones never."""

from __future__ import annotations

from app.queue import retention
from app.queue.registry import Registry
from tests.support import seed


async def test_old_finished_jobs_are_pruned_and_live_ones_kept(service, db):
    await seed(service, leads=1)
    await db.execute(
        """
        INSERT INTO jobs (type, status, dedupe_key, dedupe_scope, finished_at, run_at)
        SELECT 'followups_tick', s.status, concat_ws(':', 'old', s.status, s.age, n),
               'forever', now() - s.age, now() - s.age
        FROM generate_series(1, 30) AS n,
             (VALUES ('succeeded', interval '8 days'), ('cancelled', interval '8 days'),
                     ('failed', interval '8 days'), ('failed', interval '31 days'),
                     ('succeeded', interval '1 day')) AS s(status, age)
        """
    )
    await db.execute(
        "INSERT INTO jobs (type, status, dedupe_key, dedupe_scope, run_at)"
        " VALUES ('followups_tick', 'pending', 'live', 'forever', now() + interval '1 hour')"
    )
    summary = await service.run_jobs()
    assert summary["succeeded"] == 1  # the prune job itself

    assert (
        await db.fetchval(
            "SELECT count(*) FROM jobs WHERE dedupe_key LIKE 'old:%' AND status = 'succeeded'"
            " AND finished_at < now() - interval '7 days'"
        )
        == 0
    )
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'cancelled'") == 0
    # Failed jobs stay 30 days: the 8-day-old ones are kept, the 31-day-old ones are gone.
    failed_ages = await db.fetch(
        "SELECT finished_at > now() - interval '30 days' AS recent, count(*) FROM jobs"
        " WHERE status = 'failed' GROUP BY 1"
    )
    assert [(r["recent"], r["count"]) for r in failed_ages] == [(True, 30)]
    assert (
        await db.fetchval(
            "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND type = 'followups_tick'"
        )
        == 30
    )
    assert await db.fetchval("SELECT status FROM jobs WHERE dedupe_key = 'live'") == "pending"


async def test_nothing_expired_schedules_no_prune_job(service, db):
    await service.run_jobs()
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'prune_jobs'") == 0


def test_register_puts_prune_jobs_on_the_registry_given_and_twice_is_harmless():
    jobs = Registry()
    retention.register(jobs)
    retention.register(jobs)
    handler = jobs.get("prune_jobs")
    assert handler.fn is retention.prune_jobs
    assert (handler.dedupe, handler.max_attempts) == ("forever", 3)
