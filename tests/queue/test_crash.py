"""A runner killed with SIGKILL mid-job: its job is taken again after the lease, once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

import httpx

from app.sandbox.data import sms_history
from tests.support import seed


async def wait_for(predicate, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not await predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_killed_runner_job_is_reclaimed_after_the_lease(
    start_service, start_process_service, sandbox, db
):
    state, _ = sandbox
    service = start_service(job_timeout_s=2, lease_grace_s=1)
    [lead] = await seed(service, leads=1)
    contact = f"c-{lead}"
    response = await service.api.post(
        "/sync", json={"client_id": "acme", "lead_id": lead, "channels": ["sms"]}
    )
    job_id = int(response.json()["jobs"][0]["id"])
    # The first page is stored, then the second page's call hangs: the job is half done.
    state.add_fault("sms", "hang", hang_s=30, times=1, skip=1)

    doomed = await start_process_service(job_timeout_s=2, lease_grace_s=1, provider_timeout_s=60)
    runner = asyncio.create_task(doomed.run_jobs(budget_s=60))

    async def hanging() -> bool:
        return state.count("sms", "list") >= 2

    await wait_for(hanging)
    os.kill(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait(timeout=10)
    with contextlib.suppress(httpx.HTTPError):
        await runner

    job = await db.fetchrow("SELECT status, attempts, locked_until FROM jobs WHERE id = $1", job_id)
    assert (job["status"], job["attempts"]) == ("running", 1)
    half = await db.fetchval("SELECT count(*) FROM messages")
    assert 0 < half < len(sms_history(contact))

    # While the dead runner's lease holds, nobody takes the job.
    summary = await service.run_jobs()
    assert summary["processed"] == 0 and summary["remaining_due"] == 0
    # After JOB_TIMEOUT_S + LEASE_GRACE_S it is claimed again and finishes.
    lease_left = (job["locked_until"] - await db.fetchval("SELECT now()")).total_seconds()
    await asyncio.sleep(max(0.0, lease_left) + 0.2)
    summary = await service.run_jobs()
    assert summary["released_stale"] == 1 and summary["succeeded"] == 1
    final = await db.fetchrow("SELECT status, attempts FROM jobs WHERE id = $1", job_id)
    assert (final["status"], final["attempts"]) == ("succeeded", 2)
    assert await db.fetchval("SELECT count(*) FROM messages") == len(sms_history(contact))
    dupes = await db.fetchval(
        "SELECT count(*) FROM (SELECT provider_message_id FROM messages"
        " GROUP BY 1 HAVING count(*) > 1) d"
    )
    assert dupes == 0
