"""POST /sync: what it enqueues, how it deduplicates, what it refuses, and how it holds up."""

from __future__ import annotations

import asyncio
import random

from app.sandbox.data import email_history, sms_history
from tests.support import assert_error, gather_limited, seed

DUPLICATE_MESSAGES = """
    SELECT channel, provider_message_id, count(*) FROM messages
    GROUP BY 1, 2 HAVING count(*) > 1
"""


def assert_accepted(response) -> list[dict]:
    assert response.status_code == 202, response.text
    jobs = response.json()["jobs"]
    assert jobs, response.text
    assert response.headers["location"] == f"/api/jobs/{jobs[0]['id']}"
    for job in jobs:
        assert set(job) == {"id", "type", "status", "deduplicated"}
        assert isinstance(job["id"], str)
    return jobs


async def drain(service, db, rounds: int = 40) -> None:
    """Run jobs until none is due and none is waiting for a later run_at."""
    for _ in range(rounds):
        summary = await service.run_jobs()
        waiting = await db.fetchval(
            "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
        )
        if summary["remaining_due"] == 0 and waiting == 0:
            return
        if summary["remaining_due"] == 0:
            await asyncio.sleep(0.5)
    raise AssertionError("jobs were still pending after draining")


async def test_sync_lead_enqueues_one_job_per_channel(service, sandbox, db):
    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    jobs = assert_accepted(response)
    assert len(jobs) == 2
    assert {j["type"] for j in jobs} == {"conversation_sync"}
    assert {j["status"] for j in jobs} == {"pending"}
    assert not any(j["deduplicated"] for j in jobs)
    assert len({j["id"] for j in jobs}) == 2
    rows = await db.fetch("SELECT id, type, lead_id, client_id FROM jobs ORDER BY id")
    assert sorted(str(r["id"]) for r in rows) == sorted(j["id"] for j in jobs)
    assert all(r["lead_id"] == lead and r["client_id"] == "acme" for r in rows)

    # The location points at a job the API serves.
    job = await service.api.get(response.headers["location"])
    assert job.status_code == 200 and job.json()["id"] == jobs[0]["id"]

    # Enqueueing is all the request does: the providers are only called by the runner.
    assert sum(state.calls.values()) == 0


async def test_sync_lead_with_one_identity_gets_one_job(service, sandbox, db):
    state, _ = sandbox
    client = await service.api.post("/api/clients", json={"id": "acme", "name": "Acme"})
    assert client.status_code == 200, client.text
    body = {"client_id": "acme", "leads": [{"id": "sms-only", "sms_contact_id": "c-sms-only"}]}
    assert (await service.api.post("/api/leads", json=body)).status_code == 200

    response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": "sms-only"})
    [job] = assert_accepted(response)
    assert job["type"] == "conversation_sync" and job["deduplicated"] is False
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1
    assert sum(state.calls.values()) == 0

    await service.run_jobs()
    assert state.count("sms", "list") >= 1
    assert state.count("email", "list") == 0
    stored = await db.fetchval("SELECT count(*) FROM messages WHERE lead_id = 'sms-only'")
    assert stored == len(sms_history("c-sms-only"))


async def test_channels_limit_the_sync(service, sandbox, db):
    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    body = {"client_id": "acme", "lead_id": lead, "channels": ["email"]}
    [job] = assert_accepted(await service.api.post("/sync", json=body))
    assert job["type"] == "conversation_sync"
    assert await db.fetchval("SELECT count(*) FROM jobs") == 1
    assert sum(state.calls.values()) == 0

    summary = await service.run_jobs()
    assert summary["succeeded"] == 1
    assert state.count("sms", "list") == 0
    channels = await db.fetch("SELECT DISTINCT channel FROM messages")
    assert [r["channel"] for r in channels] == ["email"]
    assert await db.fetchval("SELECT count(*) FROM messages") == len(email_history(f"e-{lead}"))


async def test_sync_client_enqueues_one_sync_all(service, sandbox, db):
    state, _ = sandbox
    await seed(service, leads=3)
    response = await service.api.post("/sync", json={"client_id": "acme"})
    [job] = assert_accepted(response)
    assert job["type"] == "sync_all" and job["status"] == "pending"
    assert job["deduplicated"] is False
    rows = await db.fetch("SELECT type FROM jobs")
    assert [r["type"] for r in rows] == ["sync_all"]
    assert sum(state.calls.values()) == 0


async def test_repeated_sync_is_deduplicated(service, sandbox, db):
    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    first = assert_accepted(
        await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    )
    second = assert_accepted(
        await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    )
    assert [j["id"] for j in second] == [j["id"] for j in first]
    assert all(j["deduplicated"] for j in second)

    everyone = assert_accepted(await service.api.post("/sync", json={"client_id": "acme"}))
    again = assert_accepted(await service.api.post("/sync", json={"client_id": "acme"}))
    assert [j["id"] for j in again] == [j["id"] for j in everyone]
    assert again[0]["deduplicated"] is True and everyone[0]["deduplicated"] is False

    assert await db.fetchval("SELECT count(*) FROM jobs") == 3
    assert await db.fetchval("SELECT sum(enqueue_count) FROM jobs") == 6
    assert sum(state.calls.values()) == 0


async def test_unknown_client_or_lead_is_404(service, db):
    [lead] = await seed(service, leads=1)
    await seed(service, client_id="other", leads=1)
    for body in (
        {"client_id": "nobody"},
        {"client_id": "nobody", "lead_id": lead},
        {"client_id": "acme", "lead_id": "no-such-lead"},
        # A lead is only reachable through its own client.
        {"client_id": "other", "lead_id": lead},
    ):
        assert_error(await service.api.post("/sync", json=body), 404)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_bad_bodies_are_422(service, sandbox, db):
    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    for body in (
        {},
        {"lead_id": lead},
        {"client_id": "acme", "channels": ["fax"]},
        {"client_id": "acme", "lead_id": lead, "channels": ["sms", "fax"]},
        {"client_id": "acme", "channels": []},
        {"client_id": "acme", "channels": "sms"},
        {"client_id": "acme", "extra": 1},
        {"client_id": "acme", "lead_id": "a b"},
        {"client_id": 42},
        [],
    ):
        assert_error(await service.api.post("/sync", json=body), 422)
    not_json = await service.api.post(
        "/sync", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(not_json, 422)
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    assert sum(state.calls.values()) == 0


async def test_sync_storm_is_deduplicated(service, sandbox, db, logs):
    state, _ = sandbox
    leads = await seed(service, leads=20)
    # Every variant names both channels, so each request stands for exactly two jobs.
    variants = [None, ["sms", "email"], ["email", "sms"]]
    rng = random.Random(11)
    bodies = []
    for i in range(1000):
        body = {"client_id": "acme", "lead_id": leads[i % len(leads)]}
        channels = rng.choice(variants)
        if channels is not None:
            body["channels"] = channels
        bodies.append(body)
    rng.shuffle(bodies)

    responses = await gather_limited(64, [service.api.post("/sync", json=b) for b in bodies])
    assert [r.status_code for r in responses] == [202] * 1000, {r.status_code for r in responses}

    ids_per_lead: dict[str, set[str]] = {}
    created = 0
    for body, response in zip(bodies, responses, strict=True):
        jobs = response.json()["jobs"]
        assert len(jobs) == 2
        assert response.headers["location"] == f"/api/jobs/{jobs[0]['id']}"
        ids_per_lead.setdefault(body["lead_id"], set()).update(j["id"] for j in jobs)
        created += sum(not j["deduplicated"] for j in jobs)
    # Each lead was answered with the same two jobs, each created by exactly one request.
    assert all(len(ids) == 2 for ids in ids_per_lead.values())
    assert created == 40

    assert await db.fetchval("SELECT count(*) FROM jobs") == 40
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'conversation_sync'") == 40
    assert await db.fetchval("SELECT sum(enqueue_count) FROM jobs") == 1000 * 2
    stored = {str(r["id"]) for r in await db.fetch("SELECT id FROM jobs")}
    assert stored == set().union(*ids_per_lead.values())
    assert sum(state.calls.values()) == 0
    assert logs.errors() == []


async def test_sync_all_stores_every_message_once(service, sandbox, db, logs):
    state, _ = sandbox
    leads = await seed(service, leads=10)
    assert_accepted(await service.api.post("/sync", json={"client_id": "acme"}))
    await drain(service, db)

    async def stored_counts() -> dict[tuple[str, str], int]:
        rows = await db.fetch("SELECT lead_id, channel, count(*) AS n FROM messages GROUP BY 1, 2")
        return {(r["lead_id"], r["channel"]): r["n"] for r in rows}

    expected = {}
    for lead in leads:
        expected[(lead, "sms")] = len(sms_history(f"c-{lead}"))
        expected[(lead, "email")] = len(email_history(f"e-{lead}"))
    assert await stored_counts() == expected
    assert await db.fetch(DUPLICATE_MESSAGES) == []
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'conversation_sync'") == 20
    lists_before = state.count("sms", "list") + state.count("email", "list")

    # A second full sync fetches everything again but stores nothing twice.
    [job] = assert_accepted(await service.api.post("/sync", json={"client_id": "acme"}))
    assert job["deduplicated"] is False
    await drain(service, db)
    assert state.count("sms", "list") + state.count("email", "list") > lists_before
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'conversation_sync'") == 40
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'succeeded'") == 0
    assert await stored_counts() == expected
    assert await db.fetch(DUPLICATE_MESSAGES) == []
    assert logs.errors() == []
