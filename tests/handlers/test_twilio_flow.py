"""SMS through the Twilio adapter end to end, against the sandbox's Twilio endpoints: sync,
inbound, scoring, follow-up and reactivation sends, each message once, a lost answer included."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from app.api.sms_webhooks import twilio_signature
from app.sandbox.data import sms_history
from tests.support import PUBLIC_URL, SANDBOX_KEY, TWILIO_SID, seed

PHONE = "+15550104242"
OTHER_PHONE = "+15550104343"


@pytest.fixture
def twilio_service(start_service):
    return start_service(sms_provider_kind="twilio", provider_timeout_s=1)


async def texts_to(sandbox, number: str, body: str) -> list[dict]:
    """The texts of `body` the sandbox's Twilio account sent to `number` (its synthetic history
    aside), asked the way Twilio is asked."""
    _, base = sandbox
    async with httpx.AsyncClient(auth=(TWILIO_SID, SANDBOX_KEY)) as http:
        response = await http.get(
            f"{base}/twilio/2010-04-01/Accounts/{TWILIO_SID}/Messages.json",
            params={"To": number, "PageSize": 1000},
        )
    assert response.status_code == 200, response.text
    return [m for m in response.json()["messages"] if m["body"] == body]


async def run_until(service, done, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while not await done():
        assert time.monotonic() < deadline, "not done in time"
        await service.run_jobs(budget_s=5)
        await asyncio.sleep(0.3)


async def test_sync_stores_the_numbers_history_once_by_sid(twilio_service, db):
    service = twilio_service
    [lead] = await seed(service, leads=1, phone=PHONE)
    for _ in range(2):
        body = {"client_id": "acme", "lead_id": lead, "channels": ["sms"]}
        response = await service.api.post("/sync", json=body)
        assert response.status_code == 202, response.text
        await service.run_jobs()
    rows = await db.fetch(
        "SELECT direction, text, provider_message_id FROM messages WHERE lead_id = $1"
        " ORDER BY sent_at",
        lead,
    )
    history = sms_history(PHONE)
    assert [(r["direction"], r["text"]) for r in rows] == [
        (m["direction"], m["body"]) for m in history
    ]
    assert all(r["provider_message_id"].startswith("SM") for r in rows)


async def test_a_lead_without_a_phone_is_not_synced_through_twilio(twilio_service, db):
    service = twilio_service
    [lead] = await seed(service, leads=1)  # an sms_contact_id, but no phone
    body = {"client_id": "acme", "lead_id": lead, "channels": ["sms"]}
    assert (await service.api.post("/sync", json=body)).status_code == 202
    await service.run_jobs()
    job = await db.fetchrow("SELECT status, last_error FROM jobs WHERE type = 'conversation_sync'")
    assert job["status"] == "failed" and "no sms identity" in job["last_error"]


async def test_inbound_is_stored_once_and_scored(twilio_service, db):
    service = twilio_service
    [lead] = await seed(service, leads=1, phone=PHONE)
    fields = [
        ("MessageSid", "SM" + "d4" * 16),
        ("AccountSid", TWILIO_SID),
        ("From", PHONE),
        ("To", "+15005550006"),
        ("Body", "What times do you have next week?"),
    ]
    signature = twilio_signature(SANDBOX_KEY, f"{PUBLIC_URL}/webhooks/sms", fields)
    for _ in range(2):
        response = await service.anon.post(
            "/webhooks/sms", data=dict(fields), headers={"X-Twilio-Signature": signature}
        )
        assert response.status_code == 200 and "<Response/>" in response.text
    await service.run_jobs()
    assert await db.fetchval("SELECT count(*) FROM messages WHERE lead_id = $1", lead) == 1
    assert await db.fetchval("SELECT score FROM leads WHERE id = $1", lead) is not None


async def test_a_follow_up_whose_answer_is_lost_is_sent_once(twilio_service, sandbox, db):
    service = twilio_service
    state, _ = sandbox
    [lead] = await seed(service, leads=1, phone=PHONE)
    # Twilio takes the send, then the answer never comes: the attempt times out.
    state.add_fault("sms", "accept_then_hang", times=1, kind="send", hang_s=5)
    steps = [{"after_s": 0, "channel": "sms", "text": "Are you free for a call?"}]
    response = await service.api.post("/api/followups", json={"lead_id": lead, "steps": steps})
    assert response.status_code == 201, response.text
    followup = response.json()["id"]

    async def sent() -> bool:
        assert (await service.cron.get("/api/cron/followups")).status_code == 202
        row = await db.fetchrow("SELECT state FROM followup_steps WHERE followup_id = $1", followup)
        return row["state"] == "sent"

    await run_until(service, sent)
    texts = await texts_to(sandbox, PHONE, "Are you free for a call?")
    assert len(texts) == 1
    assert state.count("sms", "send") == 1, "the retry sent again"
    step = await db.fetchrow("SELECT provider_message_id FROM followup_steps")
    assert step["provider_message_id"] == texts[0]["sid"]
    attempts = await db.fetchval("SELECT attempts FROM jobs WHERE type = 'followup_send'")
    assert attempts == 2
    stored = await db.fetch("SELECT provider_message_id FROM messages WHERE direction = 'outbound'")
    assert [r["provider_message_id"] for r in stored] == [texts[0]["sid"]]


async def test_a_reactivation_reaches_each_number_once(twilio_service, sandbox, db):
    service = twilio_service
    state, _ = sandbox
    response = await service.api.post("/api/clients", json={"id": "acme", "name": "Acme"})
    assert response.status_code == 200
    leads = [{"id": "a", "phone": PHONE}, {"id": "b", "phone": "+1 (555) 010-4343"}]
    response = await service.api.post("/api/leads", json={"client_id": "acme", "leads": leads})
    assert response.status_code == 200, response.text
    state.add_fault("sms", "accept_then_hang", times=1, kind="send", hang_s=5)
    campaign = {
        "id": "winback",
        "client_id": "acme",
        "inactive_days": 30,
        "channel": "sms",
        "text": "It has been a while: any questions?",
    }
    assert (await service.api.post("/api/reactivations", json=campaign)).status_code == 201
    assert (await service.cron.get("/api/cron/reactivations")).status_code == 202

    async def both_sent() -> bool:
        rows = await db.fetch("SELECT state FROM reactivation_enrollments")
        return len(rows) == 2 and all(r["state"] == "sent" for r in rows)

    await run_until(service, both_sent)
    for number in (PHONE, OTHER_PHONE):
        assert len(await texts_to(sandbox, number, campaign["text"])) == 1, number
    assert state.count("sms", "send") == 2


async def test_a_clients_own_twilio_account_is_the_one_called(service, sandbox, db):
    # The global account stays generic; the client's own account is Twilio (the sandbox's).
    state, base = sandbox
    [lead] = await seed(service, leads=1, phone=PHONE)
    own_sid = "AC" + "fe" * 16
    account = {
        "kind": "twilio",
        "settings": {
            "account_sid": own_sid,
            "auth_token": SANDBOX_KEY,
            "sender": "+15005550123",
            "url": f"{base}/twilio",
        },
    }
    response = await service.api.put("/api/clients/acme/providers/sms", json=account)
    assert response.status_code == 200, response.text
    steps = [{"after_s": 0, "channel": "sms", "text": "From our own number"}]
    response = await service.api.post("/api/followups", json={"lead_id": lead, "steps": steps})
    assert response.status_code == 201, response.text
    assert (await service.cron.get("/api/cron/followups")).status_code == 202
    await service.run_jobs()
    async with httpx.AsyncClient(auth=(own_sid, SANDBOX_KEY)) as http:
        listed = await http.get(
            f"{base}/twilio/2010-04-01/Accounts/{own_sid}/Messages.json",
            params={"To": PHONE, "From": "+15005550123"},
        )
    assert [m["body"] for m in listed.json()["messages"]] == ["From our own number"]
    assert state.count("sms", "send") == 1 and not state.sent  # not the generic API
