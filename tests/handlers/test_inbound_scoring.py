"""Inbound email end to end: webhook -> email_inbound -> message stored -> lead_scoring -> score."""

from __future__ import annotations

import json

from tests.conftest import API_TOKEN, CRON_SECRET, SANDBOX_KEY, WEBHOOK_SECRET
from tests.support import gather_limited, seed, signed

SENDER = "Jane Roe <jane.roe@example.org>"
ADDRESS = "jane.roe@example.org"
SUBJECT = "Interested in the loft on Elm Street"
TEXT = "Please call me back at +1 415 555 0199, I would like to see it this weekend."
PII = [ADDRESS, SUBJECT, TEXT, "+1 415 555 0199", "415 555 0199", "Elm Street"]
SECRETS = [API_TOKEN, CRON_SECRET, WEBHOOK_SECRET, SANDBOX_KEY]


def delivery(message_id: str, **data: object) -> bytes:
    event = {
        "type": "email.received",
        "data": {
            "client_id": "acme",
            "message_id": message_id,
            "from": SENDER,
            "subject": SUBJECT,
            "text": TEXT,
            "received_at": "2026-11-28T10:00:00Z",
            **data,
        },
    }
    return json.dumps(event).encode()


async def post_delivery(service, body: bytes, webhook_id: str):
    headers = signed(WEBHOOK_SECRET, body, msg_id=webhook_id)
    return await service.anon.post("/webhooks/email", content=body, headers=headers)


async def test_inbound_email_is_stored_and_the_lead_scored(service, db, logs):
    await seed(service, leads=1)
    response = await post_delivery(service, delivery("msg-1"), "wh-1")
    assert response.status_code == 202 and response.json()["deduplicated"] is False

    # One runner call drains both: email_inbound, then the lead_scoring it enqueued.
    summary = await service.run_jobs()
    assert summary["succeeded"] == 2 and summary["remaining_due"] == 0
    lead = await db.fetchrow("SELECT * FROM leads WHERE email = $1", ADDRESS)
    assert lead is not None and lead["name"] == "Jane Roe" and lead["client_id"] == "acme"
    messages = (await service.api.get(f"/api/leads/{lead['id']}/messages")).json()["messages"]
    assert [(m["channel"], m["direction"], m["text"]) for m in messages] == [
        ("email", "inbound", TEXT)
    ]
    scoring = await db.fetchrow("SELECT * FROM jobs WHERE type = 'lead_scoring'")
    assert scoring["status"] == "succeeded" and scoring["lead_id"] == lead["id"]
    scored = (await service.api.get(f"/api/leads/{lead['id']}")).json()
    assert scored["score"] in (1, 2, 3, 4) and scored["score_reason"]

    for line in logs.lines:
        for value in PII + SECRETS:
            assert value not in line, f"a log line leaks {value!r}: {line}"


async def test_the_same_message_twice_stores_once_and_scores_once(service, db, logs):
    """Two deliveries of one message (the case that crashed the original): no error, one score."""
    await seed(service, leads=1)
    body = delivery("msg-dup", email_lead_id="e-acme-lead-0")
    answers = await gather_limited(
        16, [post_delivery(service, body, f"wh-{i % 4}") for i in range(40)]
    )
    assert {r.status_code for r in answers} == {202}
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'email_inbound'") == 4

    await service.run_jobs()
    # Matched to the seeded lead by its provider lead id, not created anew.
    rows = await db.fetch("SELECT lead_id FROM messages")
    assert [r["lead_id"] for r in rows] == ["acme-lead-0"]
    scoring = await db.fetch("SELECT status, enqueue_count FROM jobs WHERE type = 'lead_scoring'")
    # Only the delivery that stored the message asked for its scoring.
    assert [(r["status"], r["enqueue_count"]) for r in scoring] == [("succeeded", 1)]
    assert await db.fetchval("SELECT score FROM leads WHERE id = 'acme-lead-0'") is not None
    assert logs.errors() == []


async def test_new_sender_in_many_messages_at_once_becomes_one_lead(start_service, db):
    service = start_service(runner_concurrency=8)
    await seed(service, leads=0)
    for i in range(12):
        assert (await post_delivery(service, delivery(f"m-{i}"), f"wh-{i}")).status_code == 202
    summary = await service.run_jobs()
    assert summary["failed"] == 0 and summary["retried"] == 0
    assert await db.fetchval("SELECT count(*) FROM leads WHERE email = $1", ADDRESS) == 1
    assert await db.fetchval("SELECT count(DISTINCT lead_id) FROM messages") == 1
    assert await db.fetchval("SELECT count(*) FROM messages") == 12


async def test_unparseable_ai_reply_fails_the_attempt_clearly(service, sandbox, db):
    state, _ = sandbox
    await seed(service, leads=1)
    await post_delivery(service, delivery("msg-ai", email_lead_id="e-acme-lead-0"), "wh-ai")
    state.add_fault("ai", "garbage")
    summary = await service.run_jobs()
    assert summary["succeeded"] == 1 and summary["retried"] == 1
    job = await db.fetchrow("SELECT * FROM jobs WHERE type = 'lead_scoring'")
    assert job["status"] == "pending" and job["attempts"] == 1
    assert job["last_error"].startswith("ai provider:")
    assert TEXT not in job["last_error"] and SANDBOX_KEY not in job["last_error"]
    assert await db.fetchval("SELECT score FROM leads WHERE id = 'acme-lead-0'") is None


async def test_inbound_for_an_unknown_client_fails_without_losing_the_delivery(service, db):
    await seed(service, leads=0)
    body = delivery("msg-x", client_id="nobody")
    assert (await post_delivery(service, body, "wh-x")).status_code == 202
    summary = await service.run_jobs()
    assert summary["failed"] == 1
    job = await db.fetchrow("SELECT * FROM jobs WHERE type = 'email_inbound'")
    assert job["status"] == "failed" and job["last_error"] == "unknown client"
    # Once the client exists, a manual retry delivers it.
    await service.api.post("/api/clients", json={"id": "nobody", "name": "Late"})
    assert (await service.api.post(f"/api/jobs/{job['id']}/retry")).status_code == 200
    await service.run_jobs()
    assert await db.fetchval("SELECT count(*) FROM messages") == 1
