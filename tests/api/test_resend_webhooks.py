"""Resend's `email.received` at /webhooks/email: which client it belongs to, and its shape."""

from __future__ import annotations

import json

from tests.conftest import WEBHOOK_SECRET
from tests.support import assert_error, seed, signed

KEY = "re_0123456789abcdef"


def event(to: list[str], **data: object) -> bytes:
    body = {
        "type": "email.received",
        "created_at": "2026-02-22T23:41:12.126Z",
        "data": {
            "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
            "created_at": "2026-02-22T23:41:11.894719+00:00",
            "from": "Jane <jane@example.org>",
            "to": to,
            "bcc": [],
            "cc": [],
            "message_id": "<example+123>",
            "subject": "Sending this example",
            "attachments": [],
            **data,
        },
    }
    return json.dumps(body).encode()


async def resend_account(service, client_id: str, from_address: str) -> None:
    account = {"kind": "resend", "settings": {"key": KEY, "from_address": from_address}}
    response = await service.api.put(f"/api/clients/{client_id}/providers/email", json=account)
    assert response.status_code == 200, response.text


async def deliver(service, body: bytes, msg_id: str = "msg_1"):
    headers = signed(WEBHOOK_SECRET, body, msg_id=msg_id, prefix="svix")
    return await service.anon.post("/webhooks/email", content=body, headers=headers)


async def client_of(db, job_id: str) -> str:
    return await db.fetchval("SELECT client_id FROM jobs WHERE id = $1::bigint", int(job_id))


async def test_the_client_is_found_by_address_then_by_domain(service, db):
    for client in ("acme", "globex", "initech"):
        await seed(service, client_id=client, leads=0)
    await resend_account(service, "acme", "Acme <sales@shared.example>")
    await resend_account(service, "globex", "support@shared.example")
    await resend_account(service, "initech", "hello@initech.example")

    exact = await deliver(service, event(["Support <SUPPORT@shared.example>"]))
    assert exact.status_code == 202, exact.text
    assert await client_of(db, exact.json()["job_id"]) == "globex"

    by_domain = await deliver(service, event(["anyone@initech.example"], email_id="e-2"))
    assert await client_of(db, by_domain.json()["job_id"]) == "initech"

    both = await deliver(service, event(["other@shared.example"], email_id="e-3"))
    assert_error(both, 422, "ambiguous_recipient")
    nobody = await deliver(service, event(["x@nowhere.example"], email_id="e-4"))
    assert_error(nobody, 422, "unknown_recipient")


async def test_a_malformed_resend_event_is_refused_naming_the_field(service):
    body = event([], email_id="")
    answer = await deliver(service, body)
    assert_error(answer, 422, "validation_error")
    assert "email_id" in answer.json()["detail"]


async def test_redeliveries_of_one_email_are_one_job(service, db):
    await seed(service, leads=0)
    await resend_account(service, "acme", "hello@acme.example")
    answers = [await deliver(service, event(["hello@acme.example"]), f"msg_{i}") for i in range(3)]
    assert [a.json()["deduplicated"] for a in answers] == [False, True, True]
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'resend_inbound'") == 1


async def test_with_a_global_resend_account_the_senders_lead_names_the_client(
    start_service, sandbox, db
):
    _, base = sandbox
    service = start_service(
        email_provider_kind="resend",
        resend_api_key=KEY,
        resend_from="hello@handoff.example",
        resend_api_url=f"{base}/resend",
    )
    for client in ("acme", "globex"):
        await seed(service, client_id=client, leads=0)
    lead = {"id": "jane", "email": "Jane@Example.org"}
    response = await service.api.post("/api/leads", json={"client_id": "globex", "leads": [lead]})
    assert response.status_code == 200, response.text

    found = await deliver(service, event(["hello@handoff.example"]))
    assert found.status_code == 202, found.text
    assert await client_of(db, found.json()["job_id"]) == "globex"

    lead = {"id": "jane-too", "email": "jane@example.org"}
    await service.api.post("/api/leads", json={"client_id": "acme", "leads": [lead]})
    both = await deliver(service, event(["hello@handoff.example"], email_id="e-2"))
    assert_error(both, 422, "ambiguous_recipient")
    stranger = event(["hello@handoff.example"], email_id="e-3", **{"from": "x@nowhere.example"})
    assert_error(await deliver(service, stranger), 422, "unknown_recipient")
