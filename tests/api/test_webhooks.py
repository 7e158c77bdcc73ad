"""POST /webhooks/email: Standard Webhooks verification, limits, dedupe and storage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import WEBHOOK_SECRET
from tests.support import assert_error, gather_limited, seed, signed

URL = "/webhooks/email"
MIB = 1024 * 1024

# Distinctive values, so a log line echoing any of them is easy to spot.
SENDER_ADDRESS = "zelda.quux@example.org"
SENDER = f"Zelda Quux <{SENDER_ADDRESS}>"
SUBJECT = "Pineapple marmalade proposal"
TEXT = "Please ring me about the pineapple marmalade contract next Tuesday."
RECEIVED_AT = "2024-05-01T12:34:56+00:00"
OTHER_SECRET = "whsec_" + base64.b64encode(b"a different secret entirely!").decode()


def event(message_id: str = "msg-1", *, client_id: str = "acme", **data: object) -> dict:
    body: dict = {
        "client_id": client_id,
        "message_id": message_id,
        "from": SENDER,
        "subject": SUBJECT,
        "text": TEXT,
        "received_at": RECEIVED_AT,
    }
    body.update(data)
    return {"type": "email.received", "data": body}


def encode(payload: object) -> bytes:
    return json.dumps(payload).encode()


async def deliver(service, payload: object, msg_id: str = "delivery-1", **kw) -> httpx.Response:
    body = encode(payload)
    return await service.anon.post(
        URL, content=body, headers=signed(WEBHOOK_SECRET, body, msg_id=msg_id, **kw)
    )


async def jobs_of(db, type: str = "email_inbound") -> list:
    return await db.fetch("SELECT id, enqueue_count FROM jobs WHERE type = $1", type)


async def test_valid_delivery_is_accepted_and_enqueued(service, db, logs):
    response = await deliver(service, event())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["deduplicated"] is False
    assert isinstance(body["job_id"], str) and body["job_id"]

    [job] = await jobs_of(db)
    assert str(job["id"]) == body["job_id"]
    assert job["enqueue_count"] == 1
    assert logs.errors() == []


async def test_replayed_delivery_is_deduplicated(service, db):
    first = await deliver(service, event(), msg_id="delivery-replayed")
    second = await deliver(service, event(), msg_id="delivery-replayed")
    assert first.status_code == second.status_code == 202, second.text
    assert first.json()["deduplicated"] is False
    assert second.json() == {"job_id": first.json()["job_id"], "deduplicated": True}

    [job] = await jobs_of(db)
    assert str(job["id"]) == first.json()["job_id"]
    assert job["enqueue_count"] == 2


async def test_distinct_delivery_ids_make_distinct_jobs(service, db):
    first = await deliver(service, event("m-a"), msg_id="delivery-a")
    second = await deliver(service, event("m-b"), msg_id="delivery-b")
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] != second.json()["job_id"]
    assert len(await jobs_of(db)) == 2


async def test_burst_of_duplicate_deliveries_makes_one_job(service, db, logs):
    # A provider retrying hard: the same delivery 200 times, 32 at once. Dedupe must be an
    # answer under any concurrency, never an error or a second job.
    body = encode(event())
    headers = signed(WEBHOOK_SECRET, body, msg_id="delivery-burst")
    responses = await gather_limited(
        32, [service.anon.post(URL, content=body, headers=headers) for _ in range(200)]
    )

    assert [r.status_code for r in responses] == [202] * 200
    answers = [r.json() for r in responses]
    assert len({a["job_id"] for a in answers}) == 1
    assert sum(not a["deduplicated"] for a in answers) == 1

    [job] = await jobs_of(db)
    assert str(job["id"]) == answers[0]["job_id"]
    assert job["enqueue_count"] == 200
    assert logs.errors() == []


async def test_svix_header_names_are_accepted(service, db):
    response = await deliver(service, event(), msg_id="delivery-svix", prefix="svix")
    assert response.status_code == 202, response.text
    assert response.json()["deduplicated"] is False

    # The delivery id is the same whichever header names carried it.
    again = await deliver(service, event(), msg_id="delivery-svix", prefix="webhook")
    assert again.status_code == 202, again.text
    assert again.json() == {"job_id": response.json()["job_id"], "deduplicated": True}
    assert len(await jobs_of(db)) == 1


async def test_any_listed_valid_signature_is_enough(service):
    # Standard Webhooks lets a sender list several signatures (secret rotation).
    body = encode(event())
    headers = signed(WEBHOOK_SECRET, body, msg_id="delivery-rotated")
    stale = signed(OTHER_SECRET, body, msg_id="delivery-rotated")["webhook-signature"]
    headers["webhook-signature"] = f"{stale} {headers['webhook-signature']}"
    response = await service.anon.post(URL, content=body, headers=headers)
    assert response.status_code == 202, response.text


def _drop(name: str):
    def change(headers: dict[str, str]) -> None:
        del headers[name]

    return change


def _set(name: str, value: str):
    def change(headers: dict[str, str]) -> None:
        headers[name] = value

    return change


def _drop_all(headers: dict[str, str]) -> None:
    for part in ("id", "timestamp", "signature"):
        del headers[f"webhook-{part}"]


BAD_HEADERS = {
    "no id": _drop("webhook-id"),
    "no timestamp": _drop("webhook-timestamp"),
    "no signature": _drop("webhook-signature"),
    "no headers at all": _drop_all,
    "signature garbage": _set("webhook-signature", "garbage"),
    "signature v1 alone": _set("webhook-signature", "v1"),
    "signature not base64": _set("webhook-signature", "v1,!!!notbase64"),
    "signature empty": _set("webhook-signature", ""),
    "signature too many commas": _set("webhook-signature", "v1,abc,def"),
    "signature unknown version": _set(
        "webhook-signature", "v9," + base64.b64encode(b"x" * 32).decode()
    ),
    "timestamp not numeric": _set("webhook-timestamp", "soon"),
    "timestamp empty": _set("webhook-timestamp", ""),
    "timestamp absurd": _set("webhook-timestamp", "9" * 40),
    "id changed after signing": _set("webhook-id", "delivery-other"),
}


async def test_missing_or_malformed_signature_headers_are_401(service, db, logs):
    # One service for every case keeps this fast; each case is named when it goes wrong.
    body = encode(event())
    wrong = {}
    for case, change in BAD_HEADERS.items():
        headers = signed(WEBHOOK_SECRET, body, msg_id="delivery-bad")
        change(headers)
        response = await service.anon.post(URL, content=body, headers=headers)
        try:
            assert_error(response, 401)
        except AssertionError:
            wrong[case] = (response.status_code, response.text[:200])
    assert wrong == {}
    assert await jobs_of(db) == []
    assert logs.errors() == []


async def test_signature_by_another_secret_is_401(service, db):
    body = encode(event())
    response = await service.anon.post(
        URL, content=body, headers=signed(OTHER_SECRET, body, msg_id="delivery-forged")
    )
    assert_error(response, 401)
    assert await jobs_of(db) == []


async def test_body_changed_after_signing_is_401(service, db):
    headers = signed(WEBHOOK_SECRET, encode(event()), msg_id="delivery-tampered")
    tampered = encode(event(client_id="someone-else"))
    response = await service.anon.post(URL, content=tampered, headers=headers)
    assert_error(response, 401)
    assert await jobs_of(db) == []


@pytest.mark.parametrize("offset", [timedelta(minutes=-10), timedelta(minutes=10)], ids=str)
async def test_timestamp_outside_tolerance_is_401(service, db, offset):
    response = await deliver(service, event(), at=datetime.now(UTC) + offset)
    assert_error(response, 401)
    assert await jobs_of(db) == []


async def test_timestamp_within_tolerance_is_accepted(service):
    # Clocks drift: a delivery two minutes old is still within the five-minute tolerance.
    response = await deliver(service, event(), at=datetime.now(UTC) - timedelta(minutes=2))
    assert response.status_code == 202, response.text


def _raw_signature(body: bytes, msg_id: str, timestamp: str) -> str:
    """The Standard Webhooks HMAC over raw bytes, which the library refuses to sign."""
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@pytest.mark.parametrize("correctly_signed", [False, True], ids=["plausible", "hmac-over-bytes"])
async def test_body_that_is_not_utf8_is_refused(service, db, logs, correctly_signed):
    body = b'\xff\xfe{"type": "email.received", "data": {"text": "\xe9t\xe9"}}'
    timestamp = str(int(datetime.now(UTC).timestamp()))
    signature = (
        _raw_signature(body, "delivery-latin1", timestamp)
        if correctly_signed
        else "v1," + base64.b64encode(b"\x00" * 32).decode()
    )
    headers = {
        "webhook-id": "delivery-latin1",
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    response = await service.anon.post(URL, content=body, headers=headers)
    assert response.status_code in (401, 422), response.text
    assert_error(response, response.status_code)
    assert await jobs_of(db) == []
    assert logs.errors() == []


def _oversized_event() -> bytes:
    # Valid, well-formed JSON: size is the only thing wrong with it.
    return encode(event(html="x" * (MIB + 10)))


@pytest.mark.parametrize("sign", [True, False], ids=["signed", "unsigned"])
async def test_body_over_1mib_by_content_length_is_413(service, db, sign):
    body = _oversized_event()
    assert len(body) > MIB
    # Unsigned too: the size is checked before the signature, so no HMAC is spent on it.
    headers = (
        signed(WEBHOOK_SECRET, body, msg_id="delivery-big")
        if sign
        else {"content-type": "application/json"}
    )
    response = await service.anon.post(URL, content=body, headers=headers)
    assert_error(response, 413)
    assert await jobs_of(db) == []


@pytest.mark.parametrize("sign", [True, False], ids=["signed", "unsigned"])
async def test_body_over_1mib_sent_chunked_is_413(service, db, sign):
    body = _oversized_event()
    headers = (
        signed(WEBHOOK_SECRET, body, msg_id="delivery-big-chunked")
        if sign
        else {"content-type": "application/json"}
    )

    async def chunks():
        # No Content-Length: the limit has to be enforced while the body arrives.
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = await service.anon.post(URL, content=chunks(), headers=headers)
    assert "content-length" not in response.request.headers
    assert_error(response, 413)
    assert await jobs_of(db) == []


async def test_body_of_exactly_1mib_is_not_too_large(service, db):
    padding = MIB - len(encode(event(html="")))
    body = encode(event(html="x" * padding))
    assert len(body) == MIB
    response = await service.anon.post(
        URL, content=body, headers=signed(WEBHOOK_SECRET, body, msg_id="delivery-1mib")
    )
    assert response.status_code == 202, response.text
    assert len(await jobs_of(db)) == 1


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b'{"type": "email.received", "data": ', b""],
    ids=["text", "truncated", "empty"],
)
async def test_signed_body_that_is_not_json_is_422(service, db, body):
    response = await service.anon.post(
        URL, content=body, headers=signed(WEBHOOK_SECRET, body, msg_id="delivery-nonjson")
    )
    assert_error(response, 422)
    assert await jobs_of(db) == []


def _without(field: str) -> dict:
    payload = event()
    del payload["data"][field]
    return payload


MISSING_FIELDS = {
    "no message_id": _without("message_id"),
    "no received_at": _without("received_at"),
    "no client_id": _without("client_id"),
    "no from": _without("from"),
    "no text": _without("text"),
    "no subject": _without("subject"),
    "no data": {"type": "email.received"},
    "data not an object": {"type": "email.received", "data": "hello"},
    "no type": {"data": event()["data"]},
    "a list": [event()],
    "received_at not a time": event(received_at="yesterday-ish"),
}


async def test_signed_json_with_missing_or_bad_fields_is_422(service, db, logs):
    wrong = {}
    for n, (case, payload) in enumerate(MISSING_FIELDS.items()):
        response = await deliver(service, payload, msg_id=f"delivery-incomplete-{n}")
        try:
            assert_error(response, 422)
        except AssertionError:
            wrong[case] = (response.status_code, response.text[:200])
    assert wrong == {}
    assert await jobs_of(db) == []
    assert logs.errors() == []


async def test_other_event_types_are_ignored(service, db):
    payload = {"type": "email.bounced", "data": {"message_id": "m-1"}}
    response = await deliver(service, payload, msg_id="delivery-bounce")
    assert response.status_code == 202, response.text
    assert response.json() == {"ignored": True}
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_unset_webhook_secret_fails_closed(start_service, db):
    service = start_service(webhook_secret=None)
    response = await deliver(service, event(), msg_id="delivery-unconfigured")
    assert_error(response, 503)
    # Unsigned requests must not get further either.
    response = await service.anon.post(URL, content=encode(event()))
    assert_error(response, 503)
    assert await jobs_of(db) == []


async def test_known_lead_gets_the_message_after_the_jobs_run(service, db, logs):
    [lead] = await seed(service, leads=1)
    payload = event("prov-msg-1", email_lead_id=f"e-{lead}")
    response = await deliver(service, payload, msg_id="delivery-known")
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]

    summary = await service.run_jobs()
    assert summary["failed"] == 0, summary
    job = (await service.api.get(f"/api/jobs/{job_id}")).json()
    assert job["status"] == "succeeded", job

    messages = (await service.api.get(f"/api/leads/{lead}/messages")).json()["messages"]
    assert len(messages) == 1, messages
    [message] = messages
    assert message["channel"] == "email"
    assert message["direction"] == "inbound"
    assert message["text"] == TEXT
    assert message["provider_message_id"] == "prov-msg-1"
    assert datetime.fromisoformat(message["sent_at"]) == datetime.fromisoformat(RECEIVED_AT)

    # The delivery is deduplicated forever, even after its job finished, so a late
    # provider retry neither makes a second job nor stores the message twice.
    again = await deliver(service, payload, msg_id="delivery-known")
    assert again.status_code == 202, again.text
    assert again.json() == {"job_id": job_id, "deduplicated": True}
    await service.run_jobs()
    messages = (await service.api.get(f"/api/leads/{lead}/messages")).json()["messages"]
    assert len(messages) == 1, messages

    assert_no_pii_in_logs(logs)


async def test_unknown_sender_becomes_a_new_lead_with_the_message(service, db, logs):
    seeded = await seed(service, leads=2)
    response = await deliver(service, event("prov-msg-new"), msg_id="delivery-new-lead")
    assert response.status_code == 202, response.text

    summary = await service.run_jobs()
    assert summary["failed"] == 0, summary
    job = (await service.api.get(f"/api/jobs/{response.json()['job_id']}")).json()
    assert job["status"] == "succeeded", job

    # The stored message is scored next; that job names the lead it landed on.
    scoring = (await service.api.get("/api/jobs", params={"type": "lead_scoring"})).json()["jobs"]
    assert len(scoring) == 1, scoring
    lead = scoring[0]["lead_id"]
    assert lead and lead not in seeded

    lead_body = (await service.api.get(f"/api/leads/{lead}")).json()
    assert lead_body["client_id"] == "acme"
    messages = (await service.api.get(f"/api/leads/{lead}/messages")).json()["messages"]
    assert [(m["provider_message_id"], m["text"]) for m in messages] == [("prov-msg-new", TEXT)]
    for other in seeded:
        assert (await service.api.get(f"/api/leads/{other}/messages")).json()["messages"] == []

    assert_no_pii_in_logs(logs)


def assert_no_pii_in_logs(logs) -> None:
    assert logs.lines, "the service logged nothing at all"
    forbidden = [
        SENDER_ADDRESS,
        SUBJECT,
        TEXT,
        "pineapple",
        WEBHOOK_SECRET,
        WEBHOOK_SECRET.removeprefix("whsec_"),
    ]
    for line in logs.lines:
        for value in forbidden:
            assert value.lower() not in line.lower(), f"log line leaks {value!r}: {line}"
