"""Misbehaving providers, every one of them, every call kind: hangs, bodies dripped a byte at a
time, 429 with Retry-After, 500, malformed JSON and dropped connections. Jobs are retried with
the contract's delays, then succeed or end failed with a last_error naming the provider and
nothing else; the runner answers 200 throughout."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from app.sandbox.data import email_history, sms_history
from tests.conftest import SANDBOX_KEY, WEBHOOK_SECRET
from tests.support import seed, signed

# Provider calls are bounded at 1 s here, so hangs and drips cost a second, not ten.
PROVIDER_TIMEOUT_S = 1
RETRY_AFTER_S = 7
CALLS = [("sms", "list"), ("email", "list"), ("sms", "send"), ("email", "send"), ("ai", "score")]
SENDER = "Provider Tester <provider.tester@example.net>"
INBOUND_TEXT = "Faulty providers text: my number is +1 303 555 0177, call after six."
PHONE = "+1 303 555 0177"
WHAT = {
    "hang": f"timed out after {PROVIDER_TIMEOUT_S}s",
    "drip": f"timed out after {PROVIDER_TIMEOUT_S}s",
    "rate_limit": f"rate limited (retry after {RETRY_AFTER_S}s)",
    "error": "HTTP 500",
    "garbage": "malformed JSON in response",
    "reset": "connection failed",
}


def step_text(lead: str) -> str:
    return f"Step for {lead}: we hold the offer until Monday."


async def start_flows(service, leads: list[str], *, inbound: int = 1) -> dict[str, list[str]]:
    """Jobs that make every kind of provider call: for each lead a sync per channel and a
    one-step sequence (SMS for even leads, email for odd ones), plus signed inbound emails
    whose scoring calls the AI provider. Returns the texts and keys it used."""
    for lead in leads:
        response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
        assert response.status_code == 202, response.text
    for n, lead in enumerate(leads):
        step = {"after_s": 0, "channel": "email" if n % 2 else "sms", "text": step_text(lead)}
        if step["channel"] == "email":
            step["subject"] = "The offer"
        response = await service.api.post("/api/followups", json={"lead_id": lead, "steps": [step]})
        assert response.status_code == 201, response.text
    assert (await service.cron.post("/api/cron/followups")).status_code == 202
    for n in range(inbound):
        event = {
            "type": "email.received",
            "data": {
                "client_id": "acme",
                "message_id": f"inbound-{n}",
                "email_lead_id": f"e-{leads[n % len(leads)]}",
                "from": SENDER,
                "subject": f"Inbound {n}",
                "text": INBOUND_TEXT,
                "received_at": "2025-06-01T10:00:00Z",
            },
        }
        body = json.dumps(event).encode()
        headers = signed(WEBHOOK_SECRET, body, msg_id=f"provider-wh-{n}")
        response = await service.anon.post("/webhooks/email", content=body, headers=headers)
        assert response.status_code == 202, response.text
    return {"texts": [step_text(lead) for lead in leads] + [INBOUND_TEXT]}


def provider_of(job) -> tuple[str, str]:
    """The (provider, call kind) a job's one provider call goes to."""
    if job["type"] == "conversation_sync":
        return json.loads(job["payload"])["channel"], "list"
    if job["type"] == "followup_send":
        return job["channel"], "send"
    if job["type"] == "lead_scoring":
        return "ai", "score"
    raise AssertionError(f"no provider call in {job['type']}")


async def provider_jobs(db) -> list:
    return await db.fetch(
        "SELECT j.*, s.channel FROM jobs AS j"
        " LEFT JOIN followup_steps AS s"
        "   ON j.type = 'followup_send' AND s.followup_id = j.payload->>'followup_id'"
        "  AND s.index = (j.payload->>'index')::int"
        " WHERE j.type IN ('conversation_sync', 'followup_send', 'lead_scoring') ORDER BY j.id"
    )


async def fast_forward(db) -> None:
    """Let every retry delay pass without waiting for it."""
    await db.execute("UPDATE jobs SET run_at = now() WHERE status = 'pending'")


def assert_clean(error: str | None, leads: list[str], texts: list[str]) -> None:
    """A last_error holds no key, no identity, no address, no text."""
    if error is None:
        return
    forbidden = [SANDBOX_KEY, "example.net", PHONE, *texts]
    forbidden += [f"c-{x}" for x in leads] + [f"e-{x}" for x in leads]
    for value in forbidden:
        assert value not in error, (value, error)


def expected_stored(leads: list[str], sends: int, inbound: int) -> int:
    history = sum(len(sms_history(f"c-{x}")) + len(email_history(f"e-{x}")) for x in leads)
    return history + sends + inbound


@pytest.mark.parametrize("mode", ["drip", "reset", "hang", "rate_limit", "error", "garbage"])
async def test_one_fault_on_every_call_kind_is_retried_then_succeeds(
    mode, start_service, sandbox, db, pii
):
    state, _ = sandbox
    pii.add(INBOUND_TEXT, PHONE, "303 555 0177")
    service = start_service(provider_timeout_s=PROVIDER_TIMEOUT_S, runner_concurrency=16)
    leads = await seed(service, leads=2)
    used = await start_flows(service, leads)
    pii.add(*used["texts"], "Inbound 0", "The offer")
    for provider, kind in CALLS:
        state.add_fault(provider, mode, kind=kind, times=1, retry_after=RETRY_AFTER_S, hang_s=30)

    started = time.monotonic()
    first = await service.run_jobs()
    assert time.monotonic() - started < 10, "a provider call outlived its bound"
    jobs = await provider_jobs(db)
    faulted = [j for j in jobs if j["attempts"] == 1 and j["status"] == "pending"]
    # One call of each kind failed: one job per kind is waiting to retry.
    assert sorted(provider_of(j) for j in faulted) == sorted(CALLS), [dict(j) for j in jobs]
    assert first["retried"] == len(CALLS) and first["failed"] == 0
    now = await db.fetchval("SELECT now()")
    for job in faulted:
        provider, _ = provider_of(job)
        assert job["last_error"] == f"{provider} provider: {WHAT[mode]}"
        delay = (job["run_at"] - now).total_seconds()
        if mode == "rate_limit":
            assert RETRY_AFTER_S - 1.5 < delay <= RETRY_AFTER_S + 0.1, delay
        else:
            assert 0.3 < delay <= 1.5, f"the first retry comes after about a second: {delay}"

    await fast_forward(db)
    second = await service.run_jobs()
    assert second["succeeded"] == len(CALLS) and second["failed"] == 0
    statuses = await db.fetch("SELECT status, count(*) FROM jobs GROUP BY 1")
    assert [(r["status"], r["count"]) for r in statuses] == [("succeeded", 2 * 2 + 2 + 1 + 2)]
    # A send the provider had accepted before its answer was lost is not sent again.
    assert len(state.sent) == len(leads)
    stored = await db.fetchval("SELECT count(*) FROM messages")
    assert stored == expected_stored(leads, sends=len(leads), inbound=1)
    assert await db.fetchval("SELECT count(*) FROM leads WHERE score IS NOT NULL") == 1
    for job in await provider_jobs(db):
        assert_clean(job["last_error"], leads, used["texts"])


async def test_every_provider_failing_for_good_ends_failed_with_a_clear_error(
    start_service, sandbox, db, pii
):
    state, _ = sandbox
    pii.add(INBOUND_TEXT, PHONE, "303 555 0177")
    service = start_service(provider_timeout_s=PROVIDER_TIMEOUT_S, runner_concurrency=16)
    leads = await seed(service, leads=2)
    used = await start_flows(service, leads)
    pii.add(*used["texts"], "Inbound 0", "The offer")
    # A different way of failing for each call kind, on every call.
    modes = {
        ("sms", "list"): "reset",
        ("email", "list"): "drip",
        ("sms", "send"): "hang",
        ("email", "send"): "error",
        ("ai", "score"): "garbage",
    }
    for (provider, kind), mode in modes.items():
        state.add_fault(provider, mode, kind=kind, hang_s=30)

    failed = 0
    for _ in range(10):
        summary = await service.run_jobs()
        failed += summary["failed"]
        if not await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'pending'"):
            break
        await fast_forward(db)
    jobs = await provider_jobs(db)
    assert len(jobs) == 2 * 2 + 2 + 1
    assert failed == len(jobs)
    for job in jobs:
        provider, kind = provider_of(job)
        assert (job["status"], job["attempts"]) == ("failed", 5), dict(job)
        assert job["last_error"] == f"{provider} provider: {WHAT[modes[provider, kind]]}"
        assert_clean(job["last_error"], leads, used["texts"])
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 0
    steps = await db.fetch("SELECT state FROM followup_steps")
    assert [s["state"] for s in steps] == ["failed", "failed"], "a send out of attempts failed"
    assert state.sent == {}, "nothing was sent: every send failed before the provider took it"
    assert await db.fetchval("SELECT count(*) FROM leads WHERE score IS NOT NULL") == 0
    # Calls made: one per attempt, never more.
    for provider, kind in modes:
        calls = sum(5 for j in jobs if provider_of(j) == (provider, kind))
        assert state.count(provider, kind) == calls, (provider, kind)


async def test_fifty_jobs_under_a_mix_of_faults_all_succeed_after_retries(
    start_service, sandbox, db, pii
):
    state, _ = sandbox
    pii.add(INBOUND_TEXT, PHONE, "303 555 0177")
    service = start_service(provider_timeout_s=PROVIDER_TIMEOUT_S, runner_concurrency=16)
    leads = await seed(service, leads=20)
    used = await start_flows(service, leads, inbound=5)
    pii.add(*used["texts"], "Inbound 0", "The offer")
    # Enough faults that many jobs fail once or twice, in every way, on every call kind;
    # too few for any job to run out of its five attempts.
    for provider, kind in CALLS:
        for mode in ("rate_limit", "error", "garbage", "reset", "drip", "hang"):
            times = 1 if mode in ("drip", "hang") else 3
            state.add_fault(provider, mode, kind=kind, times=times, retry_after=1, hang_s=30)
    state.add_fault("sms", "accept_then_hang", kind="send", times=3, hang_s=30)
    state.add_fault("email", "accept_then_hang", kind="send", times=3, hang_s=30)

    for _ in range(12):
        summary = await service.run_jobs()
        assert summary["failed"] == 0, summary
        if not await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'"):
            break
        await fast_forward(db)
    statuses = await db.fetch("SELECT status, count(*) FROM jobs GROUP BY 1")
    # 40 syncs, 20 sends, 5 inbound emails and their scorings, one tick.
    assert [(r["status"], r["count"]) for r in statuses] == [("succeeded", 40 + 20 + 5 + 5 + 1)]
    jobs = await provider_jobs(db)
    retried = [j for j in jobs if j["attempts"] > 1]
    assert len(retried) >= 20, "the faults were spread over many jobs"
    for job in jobs:
        provider, _ = provider_of(job)
        assert job["attempts"] <= 5
        if job["attempts"] > 1:
            assert job["last_error"].startswith(f"{provider} provider: "), dict(job)
        assert_clean(job["last_error"], leads, used["texts"])
    assert state.faults == [], "every fault armed was met"
    # Every send once, and stored once; every message of every history stored once.
    assert len(state.sent) == len(leads)
    stored = await db.fetchval("SELECT count(*) FROM messages")
    assert stored == expected_stored(leads, sends=len(leads), inbound=5)
    assert await db.fetchval("SELECT count(*) FROM leads WHERE score IS NOT NULL") >= 1


async def test_the_reset_fault_drops_the_connection_without_an_answer(sandbox, logs):
    """What the "reset" fault looks like from a client: a transport error, no status line,
    and the sandbox itself logs nothing alarming; the next call is answered again."""
    state, base_url = sandbox
    state.add_fault("sms", "reset", times=1)
    headers = {"Authorization": f"Bearer {SANDBOX_KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=5) as client:
        with pytest.raises(httpx.TransportError):
            await client.get("/sms/contacts/c-reset/messages")
        response = await client.get("/sms/contacts/c-reset/messages")
    assert response.status_code == 200
    assert response.json()["messages"] == sms_history("c-reset")[:5]
    assert state.count("sms", "list") == 2
    assert logs.errors() == []
