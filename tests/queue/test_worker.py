"""Worker mode (`python -m app.worker`): NOTIFY wake-ups, SIGTERM with jobs in flight, and
several workers side by side."""

from __future__ import annotations

import asyncio
import math
import signal
import time

from app.sandbox.data import sms_history
from tests.queue.test_runner import sms_only_leads, sync_leads
from tests.support import eventually, seed


async def listening(db) -> bool:
    return (
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE query LIKE 'LISTEN%' AND datname = current_database()"
        )
        > 0
    )


async def stop(process, within_s: float = 20) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, within_s)


async def test_worker_wakes_on_notify_well_before_its_poll_interval(service, start_worker, db):
    [lead] = await seed(service, leads=1)
    worker = start_worker(worker_poll_interval_s=60)
    await eventually(lambda: listening(db), 20)

    started = time.monotonic()
    response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    ids = [int(job["id"]) for job in response.json()["jobs"]]

    async def done() -> bool:
        statuses = await db.fetch("SELECT status FROM jobs WHERE id = ANY($1)", ids)
        return all(r["status"] == "succeeded" for r in statuses)

    await eventually(done, 20, step_s=0.02)
    assert time.monotonic() - started < 10, "woken by the notification, not the 60 s poll"
    owner = await db.fetchval("SELECT locked_by FROM jobs WHERE id = $1", ids[0])
    assert owner.startswith("worker-")
    assert await stop(worker) == 0


async def test_sigterm_finishes_or_releases_every_job_and_exits_zero(
    service, sandbox, start_worker, db
):
    state, _ = sandbox
    leads = await seed(service, leads=3)
    state.add_fault("sms", "hang", hang_s=60)
    await sync_leads(service, leads)
    worker = start_worker(worker_grace_s=1, runner_concurrency=8, provider_timeout_s=60)

    async def hanging() -> bool:
        return state.count("sms", "list") == 3

    await eventually(hanging, 20)
    assert await stop(worker) == 0
    rows = await db.fetch("SELECT payload->>'channel' AS channel, status, attempts FROM jobs")
    assert len(rows) == 6, "no job lost"
    assert all(r["status"] != "running" for r in rows)
    # The hung SMS syncs were released for another worker, their attempt given back.
    assert (
        sorted((r["channel"], r["status"], r["attempts"]) for r in rows if r["channel"] == "sms")
        == [("sms", "pending", 0)] * 3
    )


async def test_two_workers_over_500_jobs_run_each_once(service, sandbox, start_worker, db):
    state, _ = sandbox
    leads = await sms_only_leads(service, 500)
    # One client's jobs, its cap above both workers' slots: the workers claim side by side.
    # (Under a cap that binds, a worker storing an outcome claims the place it frees in the
    # same statement, so one worker may keep all of a client's places.)
    workers = [start_worker(runner_concurrency=4, client_concurrency=8) for _ in range(2)]
    await sync_leads(service, leads)

    async def all_done() -> bool:
        return await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 500

    await eventually(all_done, 120, step_s=0.2)
    assert [await stop(w) for w in workers] == [0, 0]
    owners = await db.fetch("SELECT locked_by, attempts, count(*) FROM jobs GROUP BY 1, 2")
    assert {r["attempts"] for r in owners} == {1}
    assert len({r["locked_by"] for r in owners}) == 2, "both workers took jobs"
    expected_calls = sum(math.ceil(len(sms_history(f"c-{lead}")) / 5) for lead in leads)
    assert state.count("sms", "list") == expected_calls
