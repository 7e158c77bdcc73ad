"""The jobs API: reading jobs, listing them, and the manual retry and cancel transitions."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

from tests.support import assert_error, seed

JOB_FIELDS = {
    "id",
    "type",
    "status",
    "dedupe_key",
    "client_id",
    "lead_id",
    "priority",
    "attempts",
    "max_attempts",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "last_error",
    "enqueue_count",
}

# Any key held by two live jobs would mean a dedupe guarantee was broken.
ACTIVE_TWINS = """
    SELECT dedupe_key, count(*) FROM jobs
    WHERE status IN ('pending', 'running')
    GROUP BY 1 HAVING count(*) > 1
"""


async def sync(service, lead: str | None = None, channels=None, client_id: str = "acme") -> list:
    body: dict = {"client_id": client_id}
    if lead is not None:
        body["lead_id"] = lead
    if channels is not None:
        body["channels"] = channels
    response = await service.api.post("/sync", json=body)
    assert response.status_code == 202, response.text
    return response.json()["jobs"]


async def fail_jobs(db, ids: list[str]) -> None:
    """Put jobs in the state a runner leaves after the last attempt failed."""
    await db.execute(
        """
        UPDATE jobs SET status = 'failed', finished_at = now(), lock_token = NULL,
               locked_until = NULL, attempts = max_attempts, last_error = 'provider error'
        WHERE id = ANY($1::bigint[])
        """,
        [int(i) for i in ids],
    )


async def all_jobs(db) -> list[dict]:
    return [dict(r) for r in await db.fetch("SELECT * FROM jobs ORDER BY id")]


async def test_job_object_has_the_contract_fields(service, db):
    [lead] = await seed(service, leads=1)
    [first, _] = await sync(service, lead)
    response = await service.api.get(f"/api/jobs/{first['id']}")
    assert response.status_code == 200, response.text
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert job["id"] == first["id"] and isinstance(job["id"], str)
    assert job["type"] == "conversation_sync"
    assert job["status"] == "pending"
    assert job["client_id"] == "acme"
    assert job["lead_id"] == lead
    assert job["priority"] == 0, "a person's /sync runs before bulk work"
    assert job["attempts"] == 0
    assert job["max_attempts"] == 5
    assert job["enqueue_count"] == 1
    assert job["started_at"] is None and job["finished_at"] is None
    assert job["last_error"] is None
    stored_key = await db.fetchval("SELECT dedupe_key FROM jobs WHERE id = $1", int(job["id"]))
    assert job["dedupe_key"] == stored_key and job["dedupe_key"]
    created = datetime.fromisoformat(job["created_at"])
    run_at = datetime.fromisoformat(job["run_at"])
    assert created.tzinfo is not None and run_at.tzinfo is not None

    # A duplicate enqueue is counted on the job it answered with.
    await sync(service, lead)
    again = (await service.api.get(f"/api/jobs/{first['id']}")).json()
    assert again["enqueue_count"] == 2

    summary = await service.run_jobs()
    assert summary["failed"] == 0
    done = (await service.api.get(f"/api/jobs/{first['id']}")).json()
    assert set(done) == JOB_FIELDS
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    assert done["started_at"] is not None and done["finished_at"] is not None
    started = datetime.fromisoformat(done["started_at"])
    assert datetime.fromisoformat(done["finished_at"]) >= started >= created


async def test_sync_all_job_has_no_lead(service):
    await seed(service, leads=1)
    [job] = await sync(service)
    body = (await service.api.get(f"/api/jobs/{job['id']}")).json()
    assert body["type"] == "sync_all"
    assert body["client_id"] == "acme" and body["lead_id"] is None
    assert body["max_attempts"] == 5 and body["enqueue_count"] == 1


async def test_unknown_or_malformed_job_id_is_404(service):
    for job_id in ("987654", "abc", "12abc", "-1", "99999999999999999999999"):
        assert_error(await service.api.get(f"/api/jobs/{job_id}"), 404)
        assert_error(await service.api.post(f"/api/jobs/{job_id}/retry"), 404)
        assert_error(await service.api.post(f"/api/jobs/{job_id}/cancel"), 404)


async def test_list_jobs_newest_first_with_filters(service):
    leads = await seed(service, leads=3)
    both = await sync(service, leads[0])
    [sms_only] = await sync(service, leads[1], channels=["sms"])
    [everything] = await sync(service)
    cancelled = await service.api.post(f"/api/jobs/{both[1]['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text

    response = await service.api.get("/api/jobs")
    assert response.status_code == 200, response.text
    listed = response.json()["jobs"]
    assert all(set(job) == JOB_FIELDS for job in listed)
    ids = [job["id"] for job in listed]
    assert sorted(ids) == sorted([both[0]["id"], both[1]["id"], sms_only["id"], everything["id"]])
    # Newest first: the last enqueued job leads, and creation times never go up.
    assert ids[0] == everything["id"]
    created = [datetime.fromisoformat(job["created_at"]) for job in listed]
    assert created == sorted(created, reverse=True)
    assert [int(i) for i in ids] == sorted((int(i) for i in ids), reverse=True)

    by_type = (await service.api.get("/api/jobs", params={"type": "sync_all"})).json()["jobs"]
    assert [job["id"] for job in by_type] == [everything["id"]]

    by_status = (await service.api.get("/api/jobs", params={"status": "cancelled"})).json()
    assert [job["id"] for job in by_status["jobs"]] == [both[1]["id"]]

    both_filters = await service.api.get(
        "/api/jobs", params={"status": "pending", "type": "conversation_sync"}
    )
    assert both_filters.status_code == 200
    assert {job["id"] for job in both_filters.json()["jobs"]} == {both[0]["id"], sms_only["id"]}

    limited = (await service.api.get("/api/jobs", params={"limit": 2})).json()["jobs"]
    assert [job["id"] for job in limited] == ids[:2]
    most = await service.api.get("/api/jobs", params={"limit": 1000})
    assert most.status_code == 200 and len(most.json()["jobs"]) == 4

    nothing = await service.api.get("/api/jobs", params={"type": "no_such_type"})
    assert nothing.status_code == 200 and nothing.json() == {"jobs": []}


async def test_list_jobs_rejects_bad_parameters(service):
    for params in (
        {"limit": 0},
        {"limit": 1001},
        {"limit": -1},
        {"limit": "many"},
        {"status": "bogus"},
        {"status": "PENDING"},
    ):
        assert_error(await service.api.get("/api/jobs", params=params), 422)


async def test_retry_refuses_while_a_twin_is_active_and_changes_nothing(service, db, logs):
    [lead] = await seed(service, leads=1)
    [failed] = await sync(service, lead, channels=["sms"])
    await fail_jobs(db, [failed["id"]])

    # The key is free again, so the next sync creates a pending twin.
    [twin] = await sync(service, lead, channels=["sms"])
    assert twin["id"] != failed["id"] and twin["deduplicated"] is False

    before = await all_jobs(db)
    response = await service.api.post(f"/api/jobs/{failed['id']}/retry")
    body = assert_error(response, 409, "duplicate_active")
    assert str(body["job_id"]) == twin["id"]
    assert await all_jobs(db) == before

    # Once the twin is cancelled the failed job may go back to the queue...
    cancel = await service.api.post(f"/api/jobs/{twin['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"
    retried = await service.api.post(f"/api/jobs/{failed['id']}/retry")
    assert retried.status_code == 200, retried.text
    job = retried.json()
    assert job["id"] == failed["id"] and job["status"] == "pending"
    assert job["attempts"] == 0 and job["finished_at"] is None

    # ...and now the cancelled twin is the one refused, naming the retried job.
    before = await all_jobs(db)
    body = assert_error(await service.api.post(f"/api/jobs/{twin['id']}/retry"), 409)
    assert body["error"] == "duplicate_active" and str(body["job_id"]) == failed["id"]
    assert await all_jobs(db) == before

    summary = await service.run_jobs()
    assert summary["succeeded"] == 1 and summary["failed"] == 0
    done = (await service.api.get(f"/api/jobs/{failed['id']}")).json()
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert await db.fetch(ACTIVE_TWINS) == []
    assert logs.errors() == []


async def test_retry_without_twin_resets_the_job(service, db):
    [lead] = await seed(service, leads=1)
    [failed] = await sync(service, lead, channels=["email"])
    await fail_jobs(db, [failed["id"]])
    stale = (await service.api.get(f"/api/jobs/{failed['id']}")).json()
    assert stale["status"] == "failed" and stale["attempts"] == 5

    response = await service.api.post(f"/api/jobs/{failed['id']}/retry")
    assert response.status_code == 200, response.text
    job = response.json()
    assert set(job) == JOB_FIELDS
    assert job["status"] == "pending" and job["attempts"] == 0
    assert job["finished_at"] is None
    assert datetime.fromisoformat(job["run_at"]) >= datetime.fromisoformat(stale["finished_at"])

    # The retried job holds the key again: a new sync is answered with it.
    [again] = await sync(service, lead, channels=["email"])
    assert again["id"] == failed["id"] and again["deduplicated"] is True

    summary = await service.run_jobs()
    assert summary["succeeded"] == 1
    assert (await service.api.get(f"/api/jobs/{failed['id']}")).json()["status"] == "succeeded"


async def test_retry_and_cancel_refuse_other_states(service, db):
    leads = await seed(service, leads=2)
    [pending] = await sync(service, leads[0], channels=["sms"])
    body = assert_error(await service.api.post(f"/api/jobs/{pending['id']}/retry"), 409)
    assert body["error"] == "invalid_state"

    cancel = await service.api.post(f"/api/jobs/{pending['id']}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled" and cancel.json()["finished_at"] is not None
    before = await all_jobs(db)
    assert_error(await service.api.post(f"/api/jobs/{pending['id']}/cancel"), 409, "invalid_state")
    assert await all_jobs(db) == before

    # A cancelled job can be put back.
    retried = await service.api.post(f"/api/jobs/{pending['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"

    await service.run_jobs()
    succeeded = (await service.api.get(f"/api/jobs/{pending['id']}")).json()
    assert succeeded["status"] == "succeeded"
    assert_error(await service.api.post(f"/api/jobs/{pending['id']}/retry"), 409, "invalid_state")
    assert_error(await service.api.post(f"/api/jobs/{pending['id']}/cancel"), 409, "invalid_state")

    # A job a runner holds is neither cancelled nor retried from under it.
    [running] = await sync(service, leads[1], channels=["sms"])
    await db.execute(
        """
        UPDATE jobs SET status = 'running', attempts = 1, started_at = now(),
               lock_token = gen_random_uuid(), locked_until = now() + interval '1 hour'
        WHERE id = $1
        """,
        int(running["id"]),
    )
    before = await all_jobs(db)
    assert_error(await service.api.post(f"/api/jobs/{running['id']}/cancel"), 409, "invalid_state")
    assert_error(await service.api.post(f"/api/jobs/{running['id']}/retry"), 409, "invalid_state")
    assert await all_jobs(db) == before


async def test_concurrent_retries_and_syncs_never_break_dedupe(service, db, logs):
    leads = await seed(service, leads=20)
    rng = random.Random(7)
    outcomes: set[str] = set()
    for _ in range(3):
        # Every live job of these leads fails, so each key is free for a retry or a new sync.
        live = await db.fetch("SELECT id FROM jobs WHERE status IN ('pending', 'running')")
        if not live:
            live_ids = [(await sync(service, lead, channels=["sms"]))[0]["id"] for lead in leads]
        else:
            live_ids = [str(r["id"]) for r in live]
        await fail_jobs(db, live_ids)
        failed = [str(r["id"]) for r in await db.fetch("SELECT id FROM jobs WHERE status='failed'")]

        calls = [("retry", job_id) for job_id in failed for _ in range(3)]
        calls += [("sync", lead) for lead in leads for _ in range(2)]
        rng.shuffle(calls)

        async def fire(kind: str, target: str):
            if kind == "retry":
                return kind, await service.api.post(f"/api/jobs/{target}/retry")
            body = {"client_id": "acme", "lead_id": target, "channels": ["sms"]}
            return kind, await service.api.post("/sync", json=body)

        answers = await asyncio.gather(*(fire(kind, target) for kind, target in calls))
        for kind, response in answers:
            if kind == "sync":
                assert response.status_code == 202, response.text
                created = not response.json()["jobs"][0]["deduplicated"]
                outcomes.add("sync created" if created else "sync deduplicated")
            elif response.status_code == 409:
                assert response.json()["error"] in ("duplicate_active", "invalid_state")
                outcomes.add(f"retry {response.json()['error']}")
            else:
                assert response.status_code == 200, response.text
                assert response.json()["status"] == "pending"
                outcomes.add("retry applied")

        assert await db.fetch(ACTIVE_TWINS) == []
        # Each lead's key is held by exactly one live job, whichever request won.
        live_per_lead = await db.fetch(
            "SELECT lead_id, count(*) AS n FROM jobs WHERE status IN ('pending', 'running') "
            "GROUP BY 1"
        )
        assert {r["lead_id"]: r["n"] for r in live_per_lead} == {lead: 1 for lead in leads}
    # Both sides won some races, so the refusal and the success paths were both exercised.
    assert {"sync created", "retry applied", "retry duplicate_active"} <= outcomes
    assert logs.errors() == []


async def test_overview_counts_jobs_and_lists_the_latest_runs(service, db):
    [lead] = await seed(service, leads=1)
    await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    first = await service.run_jobs()
    await service.api.post("/sync", json={"client_id": "acme"})
    response = await service.api.get("/api/jobs/overview")
    assert response.status_code == 200
    body = response.json()
    counts = {(c["status"], c["type"]): c["count"] for c in body["counts"]}
    assert counts == {("succeeded", "conversation_sync"): 2, ("pending", "sync_all"): 1}
    assert body["due"] == 1 and body["oldest_due_age_s"] >= 0
    [run] = body["runs"]
    assert run["invocation_id"] == first["invocation_id"] and run["succeeded"] == 2
    assert (await service.anon.get("/api/jobs/overview")).status_code == 401
