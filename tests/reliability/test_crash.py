"""kill -9 in the middle of a drain, with many jobs half done: syncs between pages, sends the
provider already accepted. Another process finishes them once the dead one's lease is over:
no job lost, no message stored twice, no send made twice."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal

import httpx

from app.sandbox.data import email_history, sms_history
from tests.support import eventually, seed

LEADS = 10
JOB_TIMEOUT_S = 4
LEASE_GRACE_S = 1


def followup_text(n: int) -> str:
    return f"Crash follow-up {n}: the viewing is confirmed, call +1 212 555 01{n:02d} if not."


async def kill(process) -> None:
    os.kill(process.pid, signal.SIGKILL)
    await asyncio.to_thread(process.wait, 10)


def expected_messages(leads: list[str]) -> int:
    return sum(len(sms_history(f"c-{x}")) + len(email_history(f"e-{x}")) for x in leads)


async def test_kill_mid_drain_with_syncs_between_pages_and_accepted_sends(
    start_service, start_process_service, start_worker, sandbox, db, process_logs, pii
):
    state, _ = sandbox
    service = start_service()
    leads = await seed(service, leads=LEADS)
    texts = [followup_text(n) for n in range(LEADS)]
    pii.add(*texts, *(f"+1 212 555 01{n:02d}" for n in range(LEADS)))
    # Each lead: a sync of both channels and a one-step sequence, SMS or email by turn.
    for n, lead in enumerate(leads):
        response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
        assert response.status_code == 202, response.text
        step = {"after_s": 0, "channel": "sms" if n % 2 else "email", "text": texts[n]}
        if step["channel"] == "email":
            step["subject"] = f"Viewing {n}"
        response = await service.api.post("/api/followups", json={"lead_id": lead, "steps": [step]})
        assert response.status_code == 201, response.text
    assert (await service.cron.post("/api/cron/followups")).status_code == 202

    # The first page of each sync goes through, the next call hangs; every send is accepted
    # (and recorded by the provider) but its answer never comes back.
    state.add_fault("sms", "hang", kind="list", skip=LEADS, hang_s=60)
    state.add_fault("email", "hang", kind="list", skip=LEADS, hang_s=60)
    state.add_fault("sms", "accept_then_hang", kind="send", hang_s=60)
    state.add_fault("email", "accept_then_hang", kind="send", hang_s=60)
    doomed = await start_process_service(
        runner_concurrency=64,
        job_timeout_s=JOB_TIMEOUT_S,
        lease_grace_s=LEASE_GRACE_S,
        provider_timeout_s=60,
    )
    runner = asyncio.create_task(doomed.run_jobs(budget_s=60))

    async def everything_blocked() -> bool:
        # Each unfinished sync holds exactly one hanging list call, and every send is accepted.
        unfinished = await db.fetch(
            "SELECT payload->>'channel' AS channel, count(*) FROM jobs"
            " WHERE type = 'conversation_sync' AND status <> 'succeeded' GROUP BY 1"
        )
        left = {r["channel"]: r["count"] for r in unfinished}
        return (
            len(state.sent) == LEADS
            and state.count("sms", "list") == LEADS + left.get("sms", 0)
            and state.count("email", "list") == LEADS + left.get("email", 0)
        )

    await eventually(everything_blocked, 20, step_s=0.02, what="all jobs in flight")
    await kill(doomed.process)
    with contextlib.suppress(httpx.HTTPError):
        await runner

    in_flight = await db.fetch(
        "SELECT id, type, attempts, locked_until FROM jobs WHERE status = 'running'"
    )
    by_type = {}
    for row in in_flight:
        by_type[row["type"]] = by_type.get(row["type"], 0) + 1
    assert by_type.get("followup_send") == LEADS, by_type
    assert by_type.get("conversation_sync", 0) >= LEADS, "most syncs were between pages"
    assert {r["attempts"] for r in in_flight} == {1}
    stored = await db.fetchval("SELECT count(*) FROM messages")
    assert 0 < stored < expected_messages(leads), "the syncs were half done"
    assert await db.fetchval("SELECT count(*) FROM followup_steps WHERE state = 'sent'") == 0
    lease_of = {r["id"]: r["locked_until"] for r in in_flight}

    # A new process takes over once the dead one's lease is over.
    state.clear_faults()
    worker = start_worker(
        runner_concurrency=16,
        job_timeout_s=JOB_TIMEOUT_S,
        lease_grace_s=LEASE_GRACE_S,
        worker_poll_interval_s=0.2,
    )

    async def all_succeeded() -> bool:
        return await db.fetchval("SELECT bool_and(status = 'succeeded') FROM jobs")

    await eventually(all_succeeded, 30, what="every job succeeded after the crash")
    assert worker.poll() is None

    jobs = await db.fetch("SELECT id, type, attempts, started_at, dedupe_key FROM jobs")
    for job in jobs:
        if job["id"] in lease_of:
            assert job["attempts"] == 2, job
            assert job["started_at"] > lease_of[job["id"]], "taken again before its lease ended"
        else:
            assert job["attempts"] == 1, job
    # No send made twice: the retry carried the same Idempotency-Key and got the same id.
    send_keys = {j["dedupe_key"] for j in jobs if j["type"] == "followup_send"}
    assert set(state.sent) == send_keys
    assert state.count("sms", "send") + state.count("email", "send") == 2 * LEADS
    outbound = await db.fetch(
        "SELECT lead_id, channel, text, provider_message_id FROM messages"
        " WHERE provider_message_id = ANY($1::text[])",
        [s["id"] for s in state.sent.values()],
    )
    assert sorted(r["text"] for r in outbound) == sorted(texts), "each send stored once"
    steps = await db.fetch("SELECT state, provider_message_id FROM followup_steps")
    assert {s["state"] for s in steps} == {"sent"}
    assert {s["provider_message_id"] for s in steps} == {r["provider_message_id"] for r in outbound}
    # No message stored twice: every history exactly once, plus the ten sends.
    assert await db.fetchval("SELECT count(*) FROM messages") == (expected_messages(leads) + LEADS)
    assert process_logs.errors("worker") == []


async def test_workers_killed_again_and_again_lose_nothing_and_repeat_nothing(
    service, sandbox, start_worker, db, process_logs
):
    """Three workers in turn die by SIGKILL at a random moment of a busy drain; each kill
    costs the jobs it held one attempt, never a job and never a stored duplicate."""
    state, _ = sandbox
    await service.api.post("/api/clients", json={"id": "acme", "name": "Acme"})
    leads = [f"kill-{i:02d}" for i in range(40)]
    body = {"client_id": "acme", "leads": [{"id": x, "sms_contact_id": f"c-{x}"} for x in leads]}
    assert (await service.api.post("/api/leads", json=body)).status_code == 200
    for lead in leads:
        response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
        assert response.status_code == 202
    # Every page takes a while, so a kill always finds jobs between pages.
    state.add_fault("sms", "hang", kind="list", hang_s=0.3)
    settings = {
        "runner_concurrency": 8,
        "job_timeout_s": 2,
        "lease_grace_s": 1,
        "worker_poll_interval_s": 0.2,
    }
    rng = random.Random(20261129)
    lost_attempts: dict[int, int] = {}
    owners: set[str] = set()
    for _ in range(3):
        worker = start_worker(**settings)

        async def busy(seen: frozenset[str] = frozenset(owners)) -> bool:
            rows = await db.fetch(
                "SELECT locked_by FROM jobs WHERE status = 'running' AND locked_by IS NOT NULL"
            )
            return sum(r["locked_by"] not in seen for r in rows) >= 4

        await eventually(busy, 20, step_s=0.02, what="the worker took jobs")
        await asyncio.sleep(rng.uniform(0.1, 0.8))
        await kill(worker)
        # Running now: the dead worker's jobs, and perhaps earlier dead ones' still leased.
        held = await db.fetch("SELECT id, attempts, locked_by FROM jobs WHERE status = 'running'")
        assert any(r["locked_by"] not in owners for r in held), "the kill found jobs in flight"
        owners.update(r["locked_by"] for r in held)
        for row in held:
            lost_attempts[row["id"]] = row["attempts"]

    survivor = start_worker(**settings)

    async def all_succeeded() -> bool:
        return await db.fetchval("SELECT bool_and(status = 'succeeded') FROM jobs")

    await eventually(all_succeeded, 40, what="every job succeeded after three kills")
    assert survivor.poll() is None
    jobs = await db.fetch("SELECT id, attempts, last_error FROM jobs")
    assert len(jobs) == len(leads)
    for job in jobs:
        # One more attempt than the kills took from it; a job never held at a kill ran once.
        assert job["attempts"] == lost_attempts.get(job["id"], 0) + 1, job
    stored = await db.fetchval("SELECT count(*) FROM messages")
    assert stored == sum(len(sms_history(f"c-{x}")) for x in leads)
    assert process_logs.errors("worker") == []
