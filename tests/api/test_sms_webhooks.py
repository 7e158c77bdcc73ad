"""POST /webhooks/sms and /webhooks/sms/{client_id}: Twilio's signature, TwiML answers,
dedupe by MessageSid, and where a message lands."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx

from app.api.sms_webhooks import signature_valid, twilio_signature
from tests.support import PUBLIC_URL, SANDBOX_KEY, TWILIO_SID, assert_error, seed

PHONE = "+15558675310"
OURS = "+15005550006"
TEXT = "Could we move the viewing to Friday?"
SID_1 = "SM" + "a1" * 16
SID_2 = "SM" + "b2" * 16
CLIENT_TOKEN = "client-own-twilio-token-0123456789"
CLIENT_SID = "AC" + "c" * 32


def test_twilios_documented_example_signature():
    # The worked example of Twilio's webhook security page.
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    assert signature_valid("12345", url, list(reversed(params)), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_valid("12345", url, params[:-1], "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_valid("54321", url, params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
    assert not signature_valid("12345", url + "&x=1", params, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=")


def form(sid: str = SID_1, **fields: str) -> list[tuple[str, str]]:
    """An incoming-message webhook's fields as Twilio posts them."""
    values = {
        "ToCountry": "US",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": TEXT,
        "To": OURS,
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": TWILIO_SID,
        "From": PHONE,
        "ApiVersion": "2010-04-01",
    }
    values.update(fields)
    return list(values.items())


async def post(
    service,
    fields: list[tuple[str, str]],
    path: str = "/webhooks/sms",
    token: str = SANDBOX_KEY,
    query: str = "",
    signature: str | None = None,
) -> httpx.Response:
    url = f"{PUBLIC_URL}{path}" + (f"?{query}" if query else "")
    sign = signature if signature is not None else twilio_signature(token, url, fields)
    return await service.anon.post(
        path + (f"?{query}" if query else ""),
        content=urlencode(fields),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": sign,
        },
    )


def assert_twiml(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert response.text.endswith("<Response/>")


async def lead_with_phone(service, client_id: str = "acme") -> str:
    [lead] = await seed(service, client_id, leads=1, phone=PHONE)
    return lead


async def test_a_signed_message_is_stored_once_on_the_lead_with_that_number(service, db):
    lead = await lead_with_phone(service)
    first = await post(service, form())
    again = await post(service, form())  # Twilio redelivers
    assert_twiml(first)
    assert_twiml(again)
    jobs = await db.fetch("SELECT client_id, enqueue_count FROM jobs WHERE type = 'sms_inbound'")
    assert [(j["client_id"], j["enqueue_count"]) for j in jobs] == [("acme", 2)]

    await service.run_jobs()
    rows = await db.fetch(
        "SELECT lead_id, channel, direction, text, provider_message_id FROM messages"
    )
    assert [tuple(r) for r in rows] == [(lead, "sms", "inbound", TEXT, SID_1)]
    scoring = await db.fetch("SELECT lead_id FROM jobs WHERE type = 'lead_scoring'")
    assert [r["lead_id"] for r in scoring] == [lead]

    assert_twiml(await post(service, form()))  # after it ran: still once, forever
    await service.run_jobs()
    assert await db.fetchval("SELECT count(*) FROM messages") == 1


async def test_a_message_stops_the_leads_pending_follow_ups(service, db):
    lead = await lead_with_phone(service)
    steps = [{"after_s": 3600, "channel": "sms", "text": "Still interested?"}]
    response = await service.api.post("/api/followups", json={"lead_id": lead, "steps": steps})
    assert response.status_code == 201, response.text
    assert_twiml(await post(service, form()))
    await service.run_jobs()
    states = await db.fetch("SELECT state FROM followup_steps")
    assert [s["state"] for s in states] == ["stopped"]


async def test_a_new_number_on_a_clients_route_becomes_a_new_lead(service, db):
    await seed(service, "acme", leads=0)
    assert_twiml(await post(service, form(), path="/webhooks/sms/acme"))
    await service.run_jobs()
    lead = await db.fetchrow("SELECT id, client_id, phone FROM leads")
    assert lead["client_id"] == "acme" and lead["phone"] == PHONE
    assert lead["id"].startswith("lead_")
    stored = await db.fetchval("SELECT lead_id FROM messages WHERE provider_message_id = $1", SID_1)
    assert stored == lead["id"]


async def test_a_global_message_no_single_client_is_told_for_is_422(service, db):
    await seed(service, "acme", leads=0)
    body = assert_error(await post(service, form()), 422, "unknown_recipient")
    assert PHONE not in body["detail"]
    await lead_with_phone(service, "acme")
    await lead_with_phone(service, "beta")  # the same number at two clients
    assert_error(await post(service, form()), 422, "unknown_recipient")
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'sms_inbound'") == 0


async def test_the_global_route_finds_the_client_whose_number_was_texted(service, db):
    await seed(service, "acme", leads=0)
    await seed(service, "beta", leads=0)
    account = {
        "kind": "twilio",
        "settings": {
            "account_sid": TWILIO_SID,
            "auth_token": SANDBOX_KEY,
            "sender": "+15005550111",
        },
    }
    response = await service.api.put("/api/clients/beta/providers/sms", json=account)
    assert response.status_code == 200, response.text
    assert_twiml(await post(service, form(To="+15005550111")))
    job = await db.fetchrow("SELECT client_id FROM jobs WHERE type = 'sms_inbound'")
    assert job["client_id"] == "beta"


async def test_a_clients_own_account_signs_its_route(service, db):
    await seed(service, "acme", leads=0)
    account = {
        "kind": "twilio",
        "settings": {"account_sid": CLIENT_SID, "auth_token": CLIENT_TOKEN, "sender": OURS},
    }
    response = await service.api.put("/api/clients/acme/providers/sms", json=account)
    assert response.status_code == 200, response.text
    fields = form(AccountSid=CLIENT_SID)
    # The global token does not sign for a client with its own account.
    assert_error(await post(service, fields, path="/webhooks/sms/acme"), 401, "invalid_signature")
    ok = await post(service, fields, path="/webhooks/sms/acme", token=CLIENT_TOKEN)
    assert_twiml(ok)
    # No such client: the same answer as a wrong signature.
    missing = await post(service, fields, path="/webhooks/sms/nobody")
    assert_error(missing, 401, "invalid_signature")


async def test_unsigned_wrong_or_tampered_deliveries_are_refused(service, db):
    await lead_with_phone(service)
    assert_error(await post(service, form(), signature=""), 401, "invalid_signature")
    assert_error(await post(service, form(), token="not-the-token-123"), 401, "invalid_signature")
    url = f"{PUBLIC_URL}/webhooks/sms"
    tampered = twilio_signature(SANDBOX_KEY, url, form())
    response = await post(service, form(Body="Send money"), signature=tampered)
    assert_error(response, 401, "invalid_signature")
    # The query string is part of what is signed.
    assert_twiml(await post(service, form(), query="source=twilio"))
    signed_without = twilio_signature(SANDBOX_KEY, url, form(SID_2))
    response = await post(service, form(SID_2), query="source=x", signature=signed_without)
    assert_error(response, 401, "invalid_signature")
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'sms_inbound'") == 1


async def test_signed_but_malformed_is_422_naming_the_field(service):
    await lead_with_phone(service)
    fields = [(k, v) for k, v in form() if k != "MessageSid"]
    body = assert_error(await post(service, fields), 422, "validation_error")
    assert "MessageSid" in body["detail"]
    body = assert_error(await post(service, form(From="whatsapp:+1555")), 422, "validation_error")
    assert "From" in body["detail"] and "whatsapp" not in body["detail"]


async def test_a_body_past_the_cap_is_413(service):
    fields = form(Body="x" * (70 * 1024))
    assert_error(await post(service, fields), 413, "payload_too_large")


async def test_without_public_url_or_token_the_route_is_503(start_service):
    no_url = start_service(public_url=None)
    assert_error(await post(no_url, form()), 503, "not_configured")
    no_token = start_service(twilio_auth_token=None)
    assert_error(await post(no_token, form()), 503, "not_configured")
