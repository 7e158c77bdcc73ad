"""sync_all over a large client: bulk fan-out, handing over to follow-on jobs when short of time."""

from __future__ import annotations

import app.handlers.timebox as timebox


async def add_leads(service, client_id: str, count: int, every: int) -> int:
    """`count` leads, one in `every` with an SMS identity; returns how many have one."""
    await service.api.post("/api/clients", json={"id": client_id, "name": "Big"})
    with_identity = 0
    for start in range(0, count, 1000):
        leads = []
        for i in range(start, min(start + 1000, count)):
            lead = {"id": f"lead-{i:06d}"}
            if i % every == 0:
                lead["sms_contact_id"] = f"c-{i}"
                with_identity += 1
            leads.append(lead)
        response = await service.api.post(
            "/api/leads", json={"client_id": client_id, "leads": leads}
        )
        assert response.status_code == 200, response.text
    return with_identity


async def test_sync_all_hands_over_to_follow_on_jobs_when_time_runs_short(service, db, monkeypatch):
    expected = await add_leads(service, "big", 4_500, every=300)
    # Every attempt "runs short" after one batch of 1,000 leads, so each hands over.
    monkeypatch.setattr(timebox, "RESERVE_S", 10_000.0)
    response = await service.api.post("/sync", json={"client_id": "big", "channels": ["sms"]})
    assert response.status_code == 202

    summary = await service.run_jobs()
    assert summary["failed"] == 0 and summary["retried"] == 0

    chain = await db.fetch(
        "SELECT payload->>'after' AS after, status, attempts FROM jobs"
        " WHERE type = 'sync_all' ORDER BY id"
    )
    assert [r["after"] for r in chain] == [
        None,
        "lead-000999",
        "lead-001999",
        "lead-002999",
        "lead-003999",
    ]
    assert {(r["status"], r["attempts"]) for r in chain} == {("succeeded", 1)}
    syncs = await db.fetch("SELECT lead_id, status FROM jobs WHERE type = 'conversation_sync'")
    assert len(syncs) == expected == len({r["lead_id"] for r in syncs})
    assert {r["status"] for r in syncs} == {"succeeded"}


async def test_sync_all_fans_out_in_one_job_when_time_allows(service, db):
    expected = await add_leads(service, "mid", 2_500, every=250)
    await service.api.post("/sync", json={"client_id": "mid"})
    summary = await service.run_jobs()
    assert summary["failed"] == 0
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'sync_all'") == 1
    assert (
        await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'conversation_sync'") == expected
    )
