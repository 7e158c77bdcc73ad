"""A runner killed with SIGKILL mid-job: its job is taken again after the lease, once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from app.sandbox.data import sms_history
from tests.conftest import CRON_SECRET, ROOT, SANDBOX_KEY
from tests.support import seed


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_in_subprocess(database_url: str, sandbox_url: str, port: int) -> subprocess.Popen:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": database_url,
        "CRON_SECRET": CRON_SECRET,
        "SMS_PROVIDER_URL": f"{sandbox_url}/sms",
        "SMS_PROVIDER_KEY": SANDBOX_KEY,
        "EMAIL_PROVIDER_URL": f"{sandbox_url}/email",
        "EMAIL_PROVIDER_KEY": SANDBOX_KEY,
        "JOB_TIMEOUT_S": "2",
        "LEASE_GRACE_S": "1",
        "PROVIDER_TIMEOUT_S": "60",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_for(predicate, within_s: float = 20.0) -> None:
    deadline = time.monotonic() + within_s
    while not await predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def test_killed_runner_job_is_reclaimed_after_the_lease(
    start_service, sandbox, db, database_url
):
    state, sandbox_url = sandbox
    service = start_service(job_timeout_s=2, lease_grace_s=1)
    [lead] = await seed(service, leads=1)
    contact = f"c-{lead}"
    response = await service.api.post(
        "/sync", json={"client_id": "acme", "lead_id": lead, "channels": ["sms"]}
    )
    job_id = int(response.json()["jobs"][0]["id"])
    # The first page is stored, then the second page's call hangs: the job is half done.
    state.add_fault("sms", "hang", hang_s=30, times=1, skip=1)

    port = free_port()
    doomed = serve_in_subprocess(database_url, sandbox_url, port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def up() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await wait_for(up)
            runner = asyncio.create_task(
                client.post(
                    "/api/cron/background-jobs?budget_s=60",
                    headers={"Authorization": f"Bearer {CRON_SECRET}"},
                    timeout=60,
                )
            )

            async def hanging() -> bool:
                return state.count("sms", "list") >= 2

            await wait_for(hanging)
            os.kill(doomed.pid, signal.SIGKILL)
            doomed.wait(timeout=10)
            runner.cancel()
    finally:
        if doomed.poll() is None:
            doomed.kill()

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
