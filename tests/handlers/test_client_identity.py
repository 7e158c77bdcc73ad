"""Identity never crosses clients: inbound email, shared provider ids, campaign and lead ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from app.handlers.inbound import lead_id_for
from app.sandbox.data import ANCHOR, email_history, sms_history
from tests.support import WEBHOOK_SECRET, signed

ADDRESS = "sam.lee@example.net"
# Runner calls allowed to drain one scenario; each drains until nothing is due.
MAX_RUNS = 10


async def add_client(service, client_id: str, leads: list[dict]) -> None:
    response = await service.api.post("/api/clients", json={"id": client_id, "name": client_id})
    assert response.status_code == 200, response.text
    if leads:
        body = {"client_id": client_id, "leads": leads}
        response = await service.api.post("/api/leads", json=body)
        assert response.status_code == 200, response.text


async def deliver_email(service, webhook_id: str, client_id: str, message_id: str, **data) -> None:
    event = {
        "type": "email.received",
        "data": {
            "client_id": client_id,
            "message_id": message_id,
            "from": f"Sam Lee <{ADDRESS}>",
            "subject": "About the offer",
            "text": "Is the offer still on?",
            "received_at": "2026-12-01T09:00:00Z",
            **data,
        },
    }
    body = json.dumps(event).encode()
    headers = signed(WEBHOOK_SECRET, body, msg_id=webhook_id)
    response = await service.anon.post("/webhooks/email", content=body, headers=headers)
    assert response.status_code == 202, response.text


async def drain(service) -> None:
    for _ in range(MAX_RUNS):
        if (await service.run_jobs())["remaining_due"] == 0:
            return
    raise AssertionError(f"jobs still due after {MAX_RUNS} runner calls")


async def add_campaign(service, client_id: str, campaign_id: str, text: str, days: int) -> None:
    body = {
        "id": campaign_id,
        "client_id": client_id,
        "inactive_days": days,
        "channel": "sms",
        "text": text,
    }
    response = await service.api.post("/api/reactivations", json=body)
    assert response.status_code == 201, response.text


async def run_reactivations(service) -> None:
    response = await service.cron.get("/api/cron/reactivations")
    assert response.status_code == 202, response.text
    await drain(service)


async def test_inbound_email_never_lands_on_another_clients_lead(service, db, sandbox, logs):
    # Client B holds a lead under the very id client A's sender would be given.
    taken = lead_id_for("acme", ADDRESS)
    await add_client(service, "acme", [])
    await add_client(service, "other", [{"id": taken, "name": "B's own lead"}])
    before = dict(await db.fetchrow("SELECT * FROM leads WHERE id = $1", taken))

    await deliver_email(service, "wh-1", "acme", "msg-1")
    await drain(service)

    [own] = await db.fetch("SELECT * FROM leads WHERE client_id = 'acme'")
    assert own["id"] != taken and own["email"] == ADDRESS
    stored = await db.fetch("SELECT lead_id, client_id, provider_message_id FROM messages")
    assert [tuple(m) for m in stored] == [(own["id"], "acme", "msg-1")]
    scoring = await db.fetchrow("SELECT * FROM jobs WHERE type = 'lead_scoring'")
    assert (scoring["status"], scoring["lead_id"], scoring["client_id"]) == (
        "succeeded",
        own["id"],
        "acme",
    )
    assert own["score"] is not None
    # B's lead is exactly as it was: no message, no score, no address.
    assert dict(await db.fetchrow("SELECT * FROM leads WHERE id = $1", taken)) == before

    # The next email from the sender finds A's lead again, by address, within A.
    await deliver_email(service, "wh-2", "acme", "msg-2")
    await drain(service)
    assert await db.fetchval("SELECT count(*) FROM leads WHERE client_id = 'acme'") == 1
    assert await db.fetchval("SELECT count(*) FROM messages WHERE lead_id = $1", own["id"]) == 2
    assert dict(await db.fetchrow("SELECT * FROM leads WHERE id = $1", taken)) == before
    assert logs.errors() == []


async def test_a_shared_contact_id_keeps_both_clients_histories_whole(service, db, sandbox, logs):
    state, _ = sandbox
    identities = {"sms_contact_id": "shared-contact", "email_lead_id": "shared-thread"}
    await add_client(service, "acme", [{"id": "acme-sam", **identities}])
    await add_client(service, "other", [{"id": "other-sam", **identities}])

    for client_id, lead_id in (("acme", "acme-sam"), ("other", "other-sam")):
        response = await service.api.post(
            "/sync", json={"client_id": client_id, "lead_id": lead_id}
        )
        assert response.status_code == 202, response.text
    await drain(service)

    sms, email = sms_history("shared-contact"), email_history("shared-thread")
    for lead_id in ("acme-sam", "other-sam"):
        answer = await service.api.get(f"/api/leads/{lead_id}/messages")
        messages = answer.json()["messages"]
        assert len(messages) == len(sms) + len(email), lead_id
        assert {m["provider_message_id"] for m in messages} == {m["id"] for m in sms + email}, (
            lead_id
        )

    # Both leads were active within the window: neither campaign has anyone to reactivate.
    window = max(30, (datetime.now(UTC) - ANCHOR).days + 31)
    await add_campaign(service, "acme", "winback", "Acme misses you.", window)
    await add_campaign(service, "other", "winback", "Other misses you.", window)
    await run_reactivations(service)
    assert state.count("sms", "send") == 0 and state.sent == {}
    assert await db.fetchval("SELECT count(*) FROM reactivation_enrollments") == 0

    # One webhook message id in both clients: each stores it, and each lead is scored.
    await deliver_email(service, "wh-acme", "acme", "msg-shared", email_lead_id="shared-thread")
    await deliver_email(service, "wh-other", "other", "msg-shared", email_lead_id="shared-thread")
    await drain(service)
    stored = await db.fetch(
        "SELECT client_id, lead_id FROM messages WHERE provider_message_id = 'msg-shared'"
        " ORDER BY client_id"
    )
    assert [tuple(m) for m in stored] == [("acme", "acme-sam"), ("other", "other-sam")]
    scorings = await db.fetch(
        "SELECT lead_id, status FROM jobs WHERE type = 'lead_scoring' ORDER BY lead_id"
    )
    assert [tuple(s) for s in scorings] == [("acme-sam", "succeeded"), ("other-sam", "succeeded")]
    assert logs.errors() == []


async def test_campaign_and_lead_ids_with_colons_each_get_their_send(service, db, sandbox):
    state, _ = sandbox
    leads = [{"id": "b:c", "sms_contact_id": "c-bc"}, {"id": "c", "sms_contact_id": "c-c"}]
    await add_client(service, "acme", leads)
    await add_campaign(service, "acme", "a", "From campaign a.", 30)
    await add_campaign(service, "acme", "a:b", "From campaign a:b.", 30)

    await run_reactivations(service)

    # Both campaigns reach both leads: four sends, among them campaign `a` to lead `b:c` and
    # campaign `a:b` to lead `c`, whose keys once collided.
    sent = sorted((s["target"], s["body"]) for s in state.sent.values())
    assert sent == [
        ("c-bc", "From campaign a."),
        ("c-bc", "From campaign a:b."),
        ("c-c", "From campaign a."),
        ("c-c", "From campaign a:b."),
    ]
    enrollments = await db.fetch("SELECT state FROM reactivation_enrollments")
    assert [e["state"] for e in enrollments] == ["sent"] * 4
    assert await db.fetchval("SELECT count(*) FROM messages WHERE direction = 'outbound'") == 4


async def test_two_clients_may_each_run_a_campaign_of_the_same_id(service, db, sandbox):
    state, _ = sandbox
    await add_client(service, "acme", [{"id": "acme-1", "sms_contact_id": "c-acme-1"}])
    await add_client(service, "other", [{"id": "other-1", "sms_contact_id": "c-other-1"}])
    await add_campaign(service, "acme", "winback", "Acme misses you.", 30)
    await add_campaign(service, "other", "winback", "Other misses you.", 30)

    await run_reactivations(service)

    sent = sorted((s["target"], s["body"]) for s in state.sent.values())
    assert sent == [("c-acme-1", "Acme misses you."), ("c-other-1", "Other misses you.")]
    sends = await db.fetch(
        "SELECT client_id, lead_id, status FROM jobs WHERE type = 'reactivation_send'"
        " ORDER BY client_id"
    )
    assert [tuple(s) for s in sends] == [
        ("acme", "acme-1", "succeeded"),
        ("other", "other-1", "succeeded"),
    ]


async def test_every_client_scoped_job_carries_its_client(service, db, sandbox):
    await add_client(service, "acme", [{"id": "acme-1", "sms_contact_id": "c-acme-1"}])
    await add_client(service, "other", [{"id": "other-1", "sms_contact_id": "c-other-1"}])
    for client_id in ("acme", "other"):
        response = await service.api.post("/sync", json={"client_id": client_id})
        assert response.status_code == 202, response.text
        await add_campaign(service, client_id, "winback", "We miss you.", 30)
    step = {"after_s": 0, "channel": "sms", "text": "Checking in."}
    response = await service.api.post(
        "/api/followups", json={"lead_id": "other-1", "steps": [step]}
    )
    assert response.status_code == 201, response.text
    await deliver_email(service, "wh-1", "acme", "msg-1")
    response = await service.cron.get("/api/cron/followups")
    assert response.status_code == 202, response.text
    await run_reactivations(service)

    rows = await db.fetch(
        "SELECT j.type, j.client_id, l.client_id AS lead_client FROM jobs AS j"
        " LEFT JOIN leads AS l ON l.id = j.lead_id"
    )
    scoped = {
        "sync_all",
        "conversation_sync",
        "email_inbound",
        "lead_scoring",
        "followup_send",
        "reactivation_send",
    }
    assert {r["type"] for r in rows} >= scoped
    for row in rows:
        if row["type"] in scoped:
            assert row["client_id"] in ("acme", "other"), row
            assert row["lead_client"] in (None, row["client_id"]), row
        else:
            assert row["client_id"] is None, row
