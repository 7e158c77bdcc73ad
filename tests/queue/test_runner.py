"""The runner's promises, over HTTP against real Postgres and the sandbox on loopback."""

from __future__ import annotations

import asyncio
import math
import time

from app.sandbox.data import sms_history
from tests.conftest import SANDBOX_KEY
from tests.support import seed


async def sms_only_leads(service, n: int, client_id: str = "acme") -> list[str]:
    await service.api.post("/api/clients", json={"id": client_id, "name": "Acme"})
    ids = [f"{client_id}-{i:04d}" for i in range(n)]
    for start in range(0, n, 1000):
        body = {
            "client_id": client_id,
            "leads": [{"id": i, "sms_contact_id": f"c-{i}"} for i in ids[start : start + 1000]],
        }
        assert (await service.api.post("/api/leads", json=body)).status_code == 200
    return ids


async def sync_leads(service, ids: list[str], client_id: str = "acme") -> None:
    for lead in ids:
        response = await service.api.post("/sync", json={"client_id": client_id, "lead_id": lead})
        assert response.status_code == 202, response.text


async def test_hanging_provider_answers_within_budget_and_leaves_nothing_running(
    start_service, sandbox, db
):
    state, _ = sandbox
    # Neither the provider timeout nor the job timeout can end these attempts first.
    service = start_service(provider_timeout_s=60, job_timeout_s=120)
    leads = await seed(service, leads=3)
    state.add_fault("sms", "hang", hang_s=30)
    await sync_leads(service, leads)

    started = time.monotonic()
    summary = await service.run_jobs(budget_s=3)
    elapsed = time.monotonic() - started

    assert elapsed < 3 + 2, "the contract promises an answer within the budget plus 2 s"
    assert summary["stop_reason"] == "budget"
    assert summary["released"] == 3 and summary["succeeded"] == 3  # email syncs finish
    assert summary["failed"] == 0
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 0
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'") == 0
    # A released attempt is given back: the job is pending with no attempt used up.
    rows = await db.fetch("SELECT status, attempts FROM jobs WHERE payload->>'channel' = 'sms'")
    assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 0)] * 3

    # The provider recovers: the next runner finishes the released jobs.
    state.clear_faults()
    await asyncio.sleep(1.2)
    summary = await service.run_jobs()
    assert summary["succeeded"] == 3 and summary["stop_reason"] == "drained"


async def test_three_runners_run_every_job_exactly_once(start_service, sandbox, db):
    state, _ = sandbox
    runners = [start_service() for _ in range(3)]
    leads = await sms_only_leads(runners[0], 200)
    await sync_leads(runners[0], leads)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 200

    summaries = await asyncio.gather(*(r.run_jobs(budget_s=60) for r in runners))

    assert sum(s["succeeded"] for s in summaries) == 200
    assert all(s["failed"] == 0 for s in summaries)
    assert sum(1 for s in summaries if s["processed"] > 0) >= 2, "the runners did not overlap"
    statuses = await db.fetch("SELECT status, attempts, count(*) FROM jobs GROUP BY 1, 2")
    assert [(r["status"], r["attempts"], r["count"]) for r in statuses] == [("succeeded", 1, 200)]
    # Every job's pages were fetched once: no job ran twice.
    expected_calls = sum(math.ceil(len(sms_history(f"c-{lead}")) / 5) for lead in leads)
    assert state.count("sms", "list") == expected_calls
    stored = await db.fetchval("SELECT count(*) FROM messages")
    assert stored == sum(len(sms_history(f"c-{lead}")) for lead in leads)


async def test_provider_429_500_and_garbage_are_retried_then_failed(start_service, sandbox, db):
    state, _ = sandbox
    service = start_service()
    await service.api.post("/api/clients", json={"id": "acme", "name": "Acme"})
    modes = {"rate_limit": "rate limited", "error": "HTTP 500", "garbage": "malformed"}
    leads = {}
    for mode in modes:
        lead = f"lead-{mode}"
        leads[mode] = lead
        body = {"client_id": "acme", "leads": [{"id": lead, "sms_contact_id": f"c-{mode}"}]}
        await service.api.post("/api/leads", json=body)
    # Faults apply to every SMS call, so the modes take turns.
    for mode, words in modes.items():
        state.clear_faults()
        state.add_fault("sms", mode, retry_after=3)
        await sync_leads(service, [leads[mode]])
        for attempt in range(1, 6):
            summary = await service.run_jobs()
            job = await db.fetchrow("SELECT * FROM jobs WHERE lead_id = $1", leads[mode])
            assert job["attempts"] == attempt
            assert words in job["last_error"]
            if attempt < 5:
                assert summary["retried"] == 1 and job["status"] == "pending"
                delay = (job["run_at"] - await db.fetchval("SELECT now()")).total_seconds()
                if mode == "rate_limit":
                    assert 2 < delay <= 3.5, "Retry-After is the delay before the next attempt"
                else:
                    low = 0.8 * 2 ** (attempt - 1) - 0.5
                    assert low < delay <= 1.2 * 2 ** (attempt - 1) + 0.1, "backoff doubles"
                # Let the delay pass without waiting for it.
                await db.execute("UPDATE jobs SET run_at = now() WHERE id = $1", job["id"])
            else:
                assert summary["failed"] == 1 and job["status"] == "failed"
        assert SANDBOX_KEY not in job["last_error"] and "c-" not in job["last_error"]
