"""The contract's worker promises, with their bounds: a new due job is started within a second
of its enqueue (NOTIFY), polling alone still finds it when no notification comes, and workers
drain one backlog beside the cron runner, every job once."""

from __future__ import annotations

import asyncio
import math
import signal
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from app.db import Database, asyncpg_dsn
from app.queue import JobContext, Registry, Runner
from app.queue.enqueue import enqueue
from app.queue.notify import CHANNEL
from app.queue.worker import Worker
from app.sandbox.data import sms_history
from tests.queue.test_runner import sms_only_leads, sync_leads
from tests.queue.test_worker import listening
from tests.support import eventually, free_port

PICKUP_S = 1.0
# A prune job finds nothing to delete: a real handler that needs no provider.
PRUNE = {"keep_days": 7, "keep_failed_days": 30}


async def stop(process, within_s: float = 20) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, within_s)


async def pickup_delays(db, ids: list[int]) -> list[timedelta]:
    """Enqueue → first start of each job, both on the database's clock."""
    rows = await db.fetch(
        "SELECT started_at - created_at AS waited FROM jobs WHERE id = ANY($1)", ids
    )
    assert len(rows) == len(ids)
    return [r["waited"] for r in rows]


async def finished(db, job_id: int) -> bool:
    return await db.fetchval("SELECT status = 'succeeded' FROM jobs WHERE id = $1", job_id)


async def test_an_idle_worker_starts_each_new_job_within_a_second(service, start_worker, db):
    # Polling once a minute: only the notification can make the bound.
    leads = await sms_only_leads(service, 5)
    worker = start_worker(worker_poll_interval_s=60)
    await eventually(lambda: listening(db), 20)
    ids = []
    for lead in leads:
        # Idle again: the last job's outcome is stored and its claim loop has gone to sleep.
        await asyncio.sleep(0.3)
        response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
        [job] = response.json()["jobs"]
        ids.append(int(job["id"]))
        await eventually(lambda: finished(db, ids[-1]), 10, step_s=0.02)
    delays = await pickup_delays(db, ids)
    assert max(delays) < timedelta(seconds=PICKUP_S), delays
    assert await stop(worker) == 0


async def test_a_worker_that_cannot_listen_finds_new_jobs_by_polling(
    service, start_worker, db, database_url, process_logs
):
    # LISTEN goes to a port nobody serves; the API's notifications reach no one.
    poll_s = 0.5
    worker = start_worker(
        worker_poll_interval_s=poll_s,
        database_direct_url=dead_port(database_url),
    )
    leads = await sms_only_leads(service, 4)
    ids = []
    for lead in leads:
        await asyncio.sleep(0.37)
        response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
        ids.append(int(response.json()["jobs"][0]["id"]))
    await eventually(lambda: all_done(db, ids), 20)
    delays = await pickup_delays(db, ids)
    assert max(delays) < timedelta(seconds=poll_s + 0.5), delays
    assert await stop(worker) == 0
    warned = [r for r in process_logs.records("worker") if r["msg"].startswith("cannot listen")]
    assert warned, "the worker said it polls"
    assert not await listening(db)


def dead_port(url: str) -> str:
    """The same URL on a loopback port where nothing listens."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    address = f"127.0.0.1:{free_port()}"
    return urlunsplit(parts._replace(netloc=f"{auth}@{address}" if auth else address))


async def all_done(db, ids: list[int]) -> bool:
    return await db.fetchval(
        "SELECT count(*) = cardinality($1::bigint[]) FROM jobs"
        " WHERE id = ANY($1) AND status = 'succeeded'",
        ids,
    )


async def test_a_job_whose_notification_never_comes_is_found_by_the_poll(service, start_worker, db):
    """The worker listens, but these jobs are enqueued where no notifier runs: only the poll
    (WORKER_POLL_INTERVAL_S, default 1 s) finds them."""
    worker = start_worker()
    await eventually(lambda: listening(db), 20)
    ids = []
    for n in range(4):
        await asyncio.sleep(0.37)
        job = await enqueue(db, "prune_jobs", f"poll-probe-{n}", payload=PRUNE)
        ids.append(int(job.id))
    await eventually(lambda: all_done(db, ids), 20)
    delays = await pickup_delays(db, ids)
    assert max(delays) < timedelta(seconds=1 + 0.5), delays
    assert await stop(worker) == 0


async def test_a_notification_that_arrives_during_a_claim_is_not_lost(database_url, db):
    """One job is being claimed when the next one's NOTIFY arrives: the worker, with free
    slots, must start that one within a second, not at its next poll."""
    local = Registry()
    started: dict[str, asyncio.Event] = {"slow": asyncio.Event(), "quick": asyncio.Event()}
    release = asyncio.Event()

    @local.handler("slow", dedupe="active")
    async def slow(ctx: JobContext) -> None:
        started["slow"].set()
        await release.wait()

    @local.handler("quick", dedupe="active")
    async def quick(ctx: JobContext) -> None:
        started["quick"].set()

    claimed_slow = asyncio.Event()
    go_on = asyncio.Event()

    class HeldClaim(Runner):
        async def claim(self, limit: int):
            jobs = await super().claim(limit)
            if any(job.type == "slow" for job in jobs):
                claimed_slow.set()
                await go_on.wait()
            return jobs

    database = await Database.open(database_url, pool_size=4)
    runner = HeldClaim(database, registry=local, concurrency=4, job_timeout_s=30, lease_s=40)
    dsn = asyncpg_dsn(database_url)
    worker = Worker(runner, lambda: asyncpg.connect(dsn), poll_interval_s=60, grace_s=1)
    stopping = asyncio.Event()
    # Due before the worker starts: its first claim (after it has begun to listen) takes it.
    await enqueue(db, "slow", "a", registry=local)
    running = asyncio.create_task(worker.run(stopping))
    try:
        await asyncio.wait_for(claimed_slow.wait(), 5)
        assert not worker.wakeup.is_set()
        # While that claim is on its way back, the next job comes with its notification.
        await enqueue(db, "quick", "b", registry=local)
        await db.execute("SELECT pg_notify($1, '')", CHANNEL)

        async def woken() -> bool:
            return worker.wakeup.is_set()

        await eventually(woken, 5)
        go_on.set()
        await asyncio.wait_for(started["slow"].wait(), 5)
        await asyncio.wait_for(started["quick"].wait(), PICKUP_S)
    finally:
        release.set()
        stopping.set()
        await asyncio.wait_for(running, 10)
        await database.close()


async def test_workers_and_the_cron_runner_drain_one_backlog_each_job_once(
    start_service, sandbox, start_worker, db
):
    state, _ = sandbox
    # One client's backlog: its cap (CLIENT_CONCURRENCY) lets every slot of the three work.
    service = start_service(client_concurrency=12)
    jobs = 160
    leads = await sms_only_leads(service, jobs)
    await sync_leads(service, leads)
    workers = [
        start_worker(runner_concurrency=4, client_concurrency=12, worker_poll_interval_s=0.2)
        for _ in range(2)
    ]

    async def both_listening() -> bool:
        return (
            await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
            )
            == 2
        )

    # Both workers are up (and draining): the cron runner joins them.
    await eventually(both_listening, 20)
    summary = await service.run_jobs(budget_s=60)

    async def drained() -> bool:
        return await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == jobs

    await eventually(drained, 60, step_s=0.1)
    assert [await stop(w) for w in workers] == [0, 0]
    rows = await db.fetch("SELECT locked_by, attempts, count(*) AS n FROM jobs GROUP BY 1, 2")
    assert {r["attempts"] for r in rows} == {1}, "no job ran twice"
    by_owner = {r["locked_by"]: r["n"] for r in rows}
    assert by_owner.pop(summary["invocation_id"], 0) == summary["succeeded"] > 0
    assert len(by_owner) == 2 and all(o.startswith("worker-") for o in by_owner), by_owner
    assert summary["failed"] == summary["retried"] == 0
    expected_calls = sum(math.ceil(len(sms_history(f"c-{lead}")) / 5) for lead in leads)
    assert state.count("sms", "list") == expected_calls
    stored = await db.fetchval("SELECT count(*) FROM messages")
    assert stored == sum(len(sms_history(f"c-{lead}")) for lead in leads)
