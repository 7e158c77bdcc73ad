"""The runner's promises, over HTTP against real Postgres and the sandbox on loopback."""

from __future__ import annotations

import asyncio
import math
import signal
import time

from fastapi import FastAPI

from app.sandbox.data import sms_history
from tests.conftest import SANDBOX_KEY
from tests.support import ServerThread, eventually, seed


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
    # Neither the provider timeout nor the job timeout can end these attempts first. One
    # client's jobs only: its cap is the runner's slots, so the hanging ones leave room.
    service = start_service(provider_timeout_s=60, job_timeout_s=120, client_concurrency=4)
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
    # One client's backlog: its cap (CLIENT_CONCURRENCY) lets all three runners' slots work.
    runners = [start_service(client_concurrency=12) for _ in range(3)]
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


class CountingSms:
    """An SMS provider whose conversations are empty and answer after `delay_s`; it counts the
    calls in flight and the most there ever were at once."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.in_flight = 0
        self.most = 0
        self.calls = 0
        self.app = FastAPI()
        self.app.get("/sms/contacts/{contact_id}/messages")(self.messages)

    async def messages(self, contact_id: str) -> dict:
        self.calls += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        return {"messages": [], "next_cursor": None}


async def test_runner_concurrency_bounds_the_handlers_running_at_once(
    start_service, start_worker, db
):
    """RUNNER_CONCURRENCY is an upper bound, for a runner invocation and for a worker, and
    with enough jobs due it is reached (one client's jobs, its cap set out of the way)."""
    provider = CountingSms(delay_s=0.3)
    with ServerThread(provider.app) as sms:
        sms_url = f"{sms.base_url}/sms"
        service = start_service(
            runner_concurrency=3, client_concurrency=3, sms_provider_url=sms_url
        )
        leads = await sms_only_leads(service, 12)
        await sync_leads(service, leads)
        summary = await service.run_jobs()
        assert summary["succeeded"] == 12 and provider.calls == 12
        assert provider.most == 3

        provider.most = 0
        await sync_leads(service, leads)
        worker = start_worker(runner_concurrency=2, client_concurrency=2, sms_provider_url=sms_url)

        async def drained() -> bool:
            return await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 24

        await eventually(drained, 30)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
        assert provider.calls == 24 and provider.most == 2


async def test_job_timeout_ends_a_hanging_attempt_and_the_job_is_retried(
    start_service, sandbox, db
):
    state, _ = sandbox
    # The provider would answer after 6 s and the HTTP timeout is 10 s: only JOB_TIMEOUT_S
    # (1 s) can end these attempts this early.
    service = start_service(job_timeout_s=1, provider_timeout_s=10)
    leads = await sms_only_leads(service, 2)
    await sync_leads(service, leads)
    state.add_fault("sms", "hang", hang_s=6)

    started = time.monotonic()
    summary = await service.run_jobs(budget_s=30)
    elapsed = time.monotonic() - started

    # Well short of the provider's 6 s: a safety bound, not a speed measurement.
    assert 1 <= elapsed < 5, elapsed
    assert (summary["retried"], summary["failed"], summary["succeeded"]) == (2, 0, 0)
    assert summary["stop_reason"] == "drained"
    rows = await db.fetch("SELECT status, attempts, last_error FROM jobs")
    assert [(r["status"], r["attempts"]) for r in rows] == [("pending", 1)] * 2
    assert {r["last_error"] for r in rows} == {"attempt timed out after 1s"}


async def test_a_budget_over_the_function_limit_is_capped(start_service, sandbox, db):
    """budget_s above RUNNER_MAX_DURATION_S - RUNNER_SAFETY_MARGIN_S (here 4 - 1 = 3 s) is
    cut to that: with every job hanging, the answer comes within the cap plus 2 s."""
    state, _ = sandbox
    service = start_service(
        runner_max_duration_s=4,
        runner_safety_margin_s=1,
        provider_timeout_s=30,
        client_concurrency=4,  # one client's three jobs all start
    )
    leads = await sms_only_leads(service, 3)
    await sync_leads(service, leads)
    state.add_fault("sms", "hang", hang_s=8)

    started = time.monotonic()
    summary = await service.run_jobs(budget_s=600)
    elapsed = time.monotonic() - started

    assert 3 - 0.5 <= elapsed < 3 + 2, elapsed
    assert summary["stop_reason"] == "budget" and summary["released"] == 3
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 0
