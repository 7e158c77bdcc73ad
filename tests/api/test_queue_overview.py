"""GET /api/jobs/overview: the last hour minute by minute, and whose jobs it counts.

The series' arithmetic is tested on rows with known timestamps in tests/queue/test_overview.py;
here the route answers it for real runs, for the API token (every client) and, once client keys
exist in the build (`POST /api/clients/{client_id}/keys`), for a client key (its client alone).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest

from tests.support import has_route, seed

KEYS_ROUTE = "/api/clients/{client_id}/keys"
needs_client_keys = pytest.mark.skipif(
    not has_route(KEYS_ROUTE), reason=f"this build has no client keys ({KEYS_ROUTE})"
)


def totals(body: dict) -> dict[str, int]:
    return {k: sum(p[k] for p in body["last_hour"]) for k in ("succeeded", "failed", "cancelled")}


def counts(body: dict) -> dict[tuple[str, str], int]:
    return {(c["status"], c["type"]): c["count"] for c in body["counts"]}


async def test_the_overview_answers_the_last_hour_minute_by_minute(service, db):
    [lead] = await seed(service, leads=1)
    await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    await service.run_jobs()
    await service.api.post("/sync", json={"client_id": "acme"})

    response = await service.api.get("/api/jobs/overview")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["client_id"] is None
    minutes = [datetime.fromisoformat(p["minute"]) for p in body["last_hour"]]
    assert len(minutes) == 60
    assert all(b - a == timedelta(minutes=1) for a, b in zip(minutes, minutes[1:], strict=False))
    assert all(m.utcoffset() == timedelta(0) and m.second == 0 for m in minutes)
    # The current minute is the last one (give or take the one that just began).
    now = await db.fetchval("SELECT date_trunc('minute', now())")
    assert timedelta(0) <= now - minutes[-1] <= timedelta(minutes=1)
    # Both syncs of the run finished in the hour; the sync_all is due, so in the backlog now.
    assert totals(body) == {"succeeded": 2, "failed": 0, "cancelled": 0}
    assert body["last_hour"][-1]["backlog"] == body["due"] == 1
    assert len(body["runs"]) == 1


@needs_client_keys
async def test_a_client_keys_overview_counts_its_own_jobs_alone(service, db):
    for client in ("acme", "globex"):
        await seed(service, client, leads=1)
        sync = {"client_id": client, "lead_id": f"{client}-lead-0"}
        assert (await service.api.post("/sync", json=sync)).status_code == 202
    await service.run_jobs()
    await db.execute("UPDATE jobs SET status = 'failed' WHERE client_id = 'globex'")
    await service.api.post("/sync", json={"client_id": "globex"})

    async def overview_with_key(client_id: str) -> dict:
        created = await service.api.post(f"/api/clients/{client_id}/keys")
        assert created.status_code == 201, created.text
        headers = {"Authorization": f"Bearer {created.json()['key']}"}
        async with httpx.AsyncClient(base_url=service.base_url, headers=headers) as client:
            response = await client.get("/api/jobs/overview")
        assert response.status_code == 200, response.text
        return response.json()

    acme, globex = await overview_with_key("acme"), await overview_with_key("globex")
    assert acme["client_id"] == "acme"
    assert counts(acme) == {("succeeded", "conversation_sync"): 2}
    assert acme["due"] == 0 and acme["oldest_due_age_s"] == 0
    assert totals(acme) == {"succeeded": 2, "failed": 0, "cancelled": 0}
    assert acme["last_hour"][-1]["backlog"] == 0
    # A runner drains every client's jobs: its summaries are the API token's alone.
    assert acme["runs"] == []

    assert globex["client_id"] == "globex"
    assert counts(globex) == {("failed", "conversation_sync"): 2, ("pending", "sync_all"): 1}
    assert globex["due"] == 1 and globex["last_hour"][-1]["backlog"] == 1
    assert globex["runs"] == []
