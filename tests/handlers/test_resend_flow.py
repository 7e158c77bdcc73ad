"""Email through the Resend adapter, end to end against the sandbox's Resend-shaped API: sync,
Resend's own `email.received` (signed the Svix way), scoring, and follow-up and reactivation
sends, each email sent once, a send whose answer is lost included."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from app.sandbox.resend import resend_state
from tests.conftest import SANDBOX_KEY, WEBHOOK_SECRET

ADDRESS = "ada@example.com"
STRANGER = "Bob <bob@example.net>"
CLIENT_FROM = "Acme Homes <hello@acme-homes.example>"
CLIENT_SECRET = "whsec_" + base64.b64encode(b"c" * 32).decode()
TEXT = "Is the loft on Elm Street still free? I could view it this weekend."


@pytest.fixture
def resend(sandbox):
    state, base = sandbox
    return resend_state(state), f"{base}/resend"


@pytest.fixture
def resend_service(start_service, resend):
    """The app with its global email account on Resend (the sandbox's)."""
    _, url = resend
    return start_service(
        email_provider_kind="resend",
        resend_api_key=SANDBOX_KEY,
        resend_from="Handoff <hello@handoff.example>",
        resend_api_url=url,
    )


async def add_lead(service, lead_id: str = "ada", email: str = ADDRESS, client: str = "acme"):
    await service.api.post("/api/clients", json={"id": client, "name": "Acme"})
    # An email_lead_id too, so the lead has an email identity however `identity()` reads it;
    # the Resend adapter's `address` reads `email`.
    lead = {"id": lead_id, "name": "Ada", "email": email, "email_lead_id": f"e-{lead_id}"}
    response = await service.api.post("/api/leads", json={"client_id": client, "leads": [lead]})
    assert response.status_code == 200, response.text


async def messages_of(service, lead_id: str) -> list[dict]:
    response = await service.api.get(f"/api/leads/{lead_id}/messages")
    assert response.status_code == 200, response.text
    return response.json()["messages"]


async def drain(service, db, rounds: int = 20) -> None:
    """Run jobs until none is due or waiting on a retry (a retry's wait is cut short)."""
    for _ in range(rounds):
        await service.run_jobs()
        waiting = await db.fetchval(
            "SELECT count(*) FROM jobs WHERE status IN ('pending', 'running')"
        )
        if waiting == 0:
            return
        await db.execute(
            "UPDATE jobs SET run_at = now() WHERE status = 'pending' AND run_at > now()"
        )
    raise AssertionError("jobs still waiting")


def svix_headers(secret: str, msg_id: str, body: bytes) -> dict[str, str]:
    """Svix's scheme, computed here from its definition: HMAC-SHA256 keyed with the secret's
    base64 key over `{svix-id}.{svix-timestamp}.{body}`, sent as `v1,<base64>`."""
    timestamp = str(int(time.time()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "svix-id": msg_id,
        "svix-timestamp": timestamp,
        "svix-signature": f"v1,{signature}",
        "content-type": "application/json",
    }


def email_received(email: dict) -> bytes:
    """Resend's `email.received` event for a received email (its webhook reference)."""
    event = {
        "type": "email.received",
        "created_at": "2026-02-22T23:41:12.126Z",
        "data": {
            "email_id": email["id"],
            "created_at": email["created_at"],
            "from": email["from"],
            "to": email["to"],
            "bcc": [],
            "cc": [],
            "message_id": email["message_id"],
            "subject": email["subject"],
            "attachments": [],
        },
    }
    return json.dumps(event).encode()


async def test_sync_pages_resend_to_the_end_and_stores_each_email_once(resend_service, resend, db):
    inbox, _ = resend
    service = resend_service
    await add_lead(service)
    then = datetime(2026, 11, 1, tzinfo=UTC)
    inbox.receive(f"Ada <{ADDRESS}>", "The loft", TEXT, at=then)
    for i in range(150):  # more than one page (100) of other people's email, newer than hers
        inbox.receive(STRANGER, f"Hello {i}", "not hers", at=then + timedelta(minutes=i + 1))
    inbox.send(
        "earlier-send",
        {"from": "x@handoff.example", "to": [ADDRESS], "subject": "Hi", "text": "Welcome!"},
    )
    inbox.send(
        None,
        {
            "from": "x@handoff.example",
            "to": ["bob@example.net"],
            "subject": "Hi",
            "text": "not hers",
        },
    )

    for _ in range(2):  # the second sync finds nothing new
        response = await service.api.post(
            "/sync", json={"client_id": "acme", "lead_id": "ada", "channels": ["email"]}
        )
        assert response.status_code == 202, response.text
        await drain(service, db)

    stored = await messages_of(service, "ada")
    assert sorted((m["direction"], m["text"]) for m in stored) == [
        ("inbound", TEXT),
        ("outbound", "Welcome!"),
    ]
    sync_jobs = await db.fetch("SELECT status FROM jobs WHERE type = 'conversation_sync'")
    assert {j["status"] for j in sync_jobs} == {"succeeded"}


async def test_email_received_is_fetched_stored_and_scored_once(start_service, resend, db, logs):
    inbox, url = resend
    service = start_service()  # the global account stays generic: the client has its own
    await add_lead(service, email="jane@example.org", lead_id="jane")
    account = {
        "kind": "resend",
        "settings": {
            "key": SANDBOX_KEY,
            "from_address": CLIENT_FROM,
            "url": url,
            "webhook_secret": CLIENT_SECRET,
        },
    }
    response = await service.api.put("/api/clients/acme/providers/email", json=account)
    assert response.status_code == 200, response.text
    followup = await service.api.post(
        "/api/followups",
        json={"lead_id": "jane", "steps": [{"after_s": 3600, "channel": "email", "text": "Hi"}]},
    )
    assert followup.status_code == 201, followup.text
    email = inbox.receive(
        "Jane Roe <jane@example.org>",
        "The loft",
        TEXT,
        to="hello@acme-homes.example",
        at=datetime.now(UTC),
    )
    body = email_received(email)

    # The global route, verified with WEBHOOK_SECRET, finds the client by the `to` address;
    # the client's route, verified with its own secret; Resend redelivering: one job.
    answers = [
        await service.anon.post(
            "/webhooks/email", content=body, headers=svix_headers(WEBHOOK_SECRET, "msg_1", body)
        ),
        await service.anon.post(
            "/webhooks/email", content=body, headers=svix_headers(WEBHOOK_SECRET, "msg_2", body)
        ),
        await service.anon.post(
            "/webhooks/email/acme",
            content=body,
            headers=svix_headers(CLIENT_SECRET, "msg_1", body),
        ),
    ]
    assert [a.status_code for a in answers] == [202, 202, 202], [a.text for a in answers]
    assert [a.json()["deduplicated"] for a in answers] == [False, True, True]
    # A wrong signature is refused.
    forged = svix_headers(CLIENT_SECRET, "msg_3", body)
    refused = await service.anon.post("/webhooks/email", content=body, headers=forged)
    assert refused.status_code == 401

    await drain(service, db)
    stored = await messages_of(service, "jane")
    assert [(m["direction"], m["text"]) for m in stored] == [("inbound", TEXT)]
    row = await db.fetchrow("SELECT subject, provider_message_id FROM messages")
    assert (row["subject"], row["provider_message_id"]) == ("The loft", email["id"])
    lead = (await service.api.get("/api/leads/jane")).json()
    assert lead["score"] in (1, 2, 3, 4) and lead["score_reason"]
    jobs = await db.fetch("SELECT type, status FROM jobs ORDER BY type")
    kinds = [(j["type"], j["status"]) for j in jobs if j["type"] != "followup_tick"]
    assert ("resend_inbound", "succeeded") in kinds and ("lead_scoring", "succeeded") in kinds
    assert sum(1 for j in kinds if j[0] == "resend_inbound") == 1
    # The reply stops the lead's pending follow-up.
    await db.execute("UPDATE followups SET created_at = now() - interval '2 hours'")
    assert (await service.cron.get("/api/cron/followups")).status_code == 202
    await drain(service, db)
    steps = (await service.api.get(f"/api/followups/{followup.json()['id']}")).json()["steps"]
    assert [s["state"] for s in steps] == ["stopped"]
    assert inbox.sent_to("jane@example.org") == []
    for line in logs.lines:
        assert "jane@example.org" not in line and TEXT not in line


async def test_email_received_for_nobodys_domain_is_refused(start_service, resend):
    inbox, _ = resend
    service = start_service()
    email = inbox.receive(STRANGER, "Hi", "x", to="sales@unknown.example", at=datetime.now(UTC))
    body = email_received(email)
    answer = await service.anon.post(
        "/webhooks/email", content=body, headers=svix_headers(WEBHOOK_SECRET, "m-1", body)
    )
    assert answer.status_code == 422 and answer.json()["error"] == "unknown_recipient"
    assert "unknown.example" not in answer.text


async def test_followup_and_reactivation_emails_are_sent_once_even_when_an_answer_is_lost(
    resend_service, resend, sandbox, db
):
    inbox, _ = resend
    state, _ = sandbox
    service = resend_service
    await add_lead(service)
    await add_lead(service, lead_id="grace", email="grace@example.com")
    response = await service.api.post(
        "/api/followups",
        json={
            "lead_id": "ada",
            "steps": [
                {"after_s": 0, "channel": "email", "text": "Still looking?", "subject": "The loft"}
            ],
        },
    )
    assert response.status_code == 201, response.text
    followup_id = response.json()["id"]

    inbox.lose_answers(1)  # Resend takes the first send, and its answer never arrives
    assert (await service.cron.get("/api/cron/followups")).status_code == 202
    await drain(service, db)

    sent = inbox.sent_to(ADDRESS)
    assert [(e["subject"], e["text"]) for e in sent] == [("The loft", "Still looking?")]
    assert state.count("email", "send") == 2  # the lost answer, then its retry
    steps = (await service.api.get(f"/api/followups/{followup_id}")).json()["steps"]
    assert [s["state"] for s in steps] == ["sent"]
    outbound = await db.fetch(
        "SELECT provider_message_id FROM messages WHERE lead_id = 'ada' AND direction = 'outbound'"
    )
    assert [m["provider_message_id"] for m in outbound] == [sent[0]["id"]]

    # A reactivation campaign by email reaches the inactive lead (grace) once.
    campaign = {
        "id": "winback",
        "client_id": "acme",
        "inactive_days": 30,
        "channel": "email",
        "subject": "News",
        "text": "It has been a while.",
    }
    response = await service.api.post("/api/reactivations", json=campaign)
    assert response.status_code == 201, response.text
    inbox.lose_answers(1)
    assert (await service.cron.get("/api/cron/reactivations")).status_code == 202
    await drain(service, db)
    assert [(e["subject"], e["text"]) for e in inbox.sent_to("grace@example.com")] == [
        ("News", "It has been a while.")
    ]
    # Ada was just written to (the follow-up): active, so not enrolled.
    assert len(inbox.sent_to(ADDRESS)) == 1
    sends = await db.fetch("SELECT status, attempts FROM jobs WHERE type = 'reactivation_send'")
    assert [(s["status"], s["attempts"]) for s in sends] == [("succeeded", 2)]
    assert state.count("email", "send") == 4
