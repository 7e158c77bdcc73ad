"""Hostile input: long URLs, big and slow bodies, deep nesting, text Postgres cannot store,
times it cannot hold, oversized text. Each answer is prompt, JSON and in the contract's shape,
and nothing a caller or provider sent is lost."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, quote_plus, urlsplit

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from app.handlers.scoring import MAX_PROMPT_CHARS, transcript
from app.handlers.store import CUT_MARKER, MAX_TEXT_BYTES
from app.telemetry import register_secret, scrub
from tests.conftest import API_TOKEN, WEBHOOK_SECRET
from tests.support import ServerThread, assert_error, seed, signed

MIB = 1024 * 1024
FFFD = "\ufffd"
JSON = {"content-type": "application/json"}


async def raw_exchange(base_url: str, head: str, body_parts: list[bytes], *, read_s: float):
    """Send a request head and body parts on a raw connection, then read what comes back
    within `read_s`: (status, headers, body, seconds from the last byte sent to the answer).
    The body parts may be far shorter than the head declares: the point is whether the server
    answers without waiting for the rest."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.encode())
        for part in body_parts:
            writer.write(part)
            await writer.drain()
        sent = time.monotonic()
        raw = await asyncio.wait_for(reader.read(65536), timeout=read_s)
        took = time.monotonic() - sent
    finally:
        writer.close()
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body, took


def post_head(path: str, *, token: str | None, length: int | None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: handoff.test", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    lines.append(
        f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    )
    return "\r\n".join(lines) + "\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def email_event(message_id: str, **data: str) -> bytes:
    """A signed-webhook body for an email.received event; `data` overrides its fields. JSON's
    ensure_ascii sends NUL and lone surrogates as escapes, as a sender would."""
    fields = {
        "client_id": "acme",
        "message_id": message_id,
        "from": "someone@example.com",
        "subject": "s",
        "text": "t",
        "received_at": "2026-01-01T10:00:00Z",
        **data,
    }
    return json.dumps({"type": "email.received", "data": fields}).encode()


async def post_signed(service, body: bytes, msg_id: str) -> httpx.Response:
    headers = signed(WEBHOOK_SECRET, body, msg_id=msg_id)
    return await service.anon.post("/webhooks/email", content=body, headers=headers)


# --- 1. a long URL stalls nothing ----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "a" * 65_000,
        "a" * 65_000 + "@",
        "a@" + "b" * 65_000,
        "x" * 30_000 + "@" + "y." * 20_000,
        "@a" * 30_000,
        "1 " * 30_000 + "x",
        "1-" * 30_000 + "x",
        "(1" * 30_000,
    ],
    ids=["letters", "letters-at", "at-letters", "dots", "ats", "spaced-digits", "dashes", "parens"],
)
def test_scrubbing_hostile_text_takes_linear_time(text):
    started = time.perf_counter()
    scrub(text)
    # Quadratic scanning of 65,000 characters took seconds; linear takes milliseconds.
    assert time.perf_counter() - started < 0.5


def test_scrubbing_still_masks_what_it_must():
    line = scrub("from ada.l+x@mail.example.com, call +1 (303) 555-0177 on 2026-12-02")
    assert line == "from [email], call [phone] on 2026-12-02"
    assert len(scrub("z" * 100_000)) < 3_000  # cut after scrubbing: a log line stays a line


async def test_a_long_request_line_answers_at_once_and_stalls_nothing(service):
    slowest = 0.0
    done = asyncio.Event()

    async def probe():
        nonlocal slowest
        while not done.is_set():
            started = time.monotonic()
            assert (await service.anon.get("/healthz")).status_code == 200
            slowest = max(slowest, time.monotonic() - started)
            await asyncio.sleep(0.01)

    prober = asyncio.create_task(probe())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        response = await client.get("/healthz?" + "a" * 60_000)
    took = time.monotonic() - started
    await asyncio.sleep(0.1)
    done.set()
    await prober
    assert response.status_code < 500
    assert took < 1.0, f"a 60 KB request line took {took:.2f} s"
    # Quadratic scrubbing held /healthz for seconds; a second is a safety bound, not a target.
    assert slowest < 1.0, f"/healthz waited {slowest:.2f} s beside it"


# --- 2. authentication before the body; every JSON body capped ------------------------------


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_huge_body_without_a_token_is_refused_before_it_is_read(service, declared):
    megabyte = b"[" + b"1," * (MIB // 2 - 1)
    head = post_head("/sync", token=None, length=60 * MIB if declared else None)
    parts = [megabyte] if declared else [chunk(megabyte)]
    status, headers, body, took = await raw_exchange(service.base_url, head, parts, read_s=5)
    assert status == 401 and took < 1.0, (status, took)
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == "unauthorized"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_the_limit_with_a_token_is_413_while_reading(service, declared):
    head = post_head("/sync", token=API_TOKEN, length=60 * MIB if declared else None)
    data = b" " * (MIB + 1024)
    parts = [data[: MIB // 2]] if declared else [chunk(data)]
    status, headers, body, took = await raw_exchange(service.base_url, head, parts, read_s=5)
    assert status == 413 and took < 1.0, (status, took)
    assert json.loads(body)["error"] == "payload_too_large"


BODY_ROUTES = ["/sync", "/api/clients", "/api/leads", "/api/followups", "/api/reactivations"]


@pytest.mark.parametrize("path", BODY_ROUTES)
async def test_every_json_route_caps_its_body(service, path):
    limit = {"/api/leads": 4 * MIB, "/api/followups": 2 * MIB}.get(path, MIB)
    padded = b"{" + b" " * limit + b"}"
    assert_error(await service.api.post(path, content=padded), 413, "payload_too_large")
    # Just under the limit the body is read and judged on its content.
    under = b"{" + b" " * (limit - 2) + b"}"
    response = await service.api.post(path, content=under)
    assert response.status_code == 422, response.text


async def test_the_leads_route_takes_bodies_over_1_mib(service):
    await seed(service, leads=0)
    leads = [
        # Names and addresses in any script arrive escaped: six bytes a character.
        {"id": f"big-{n}", "name": "é" * 200, "email": f"{n}@" + "é" * 300}
        for n in range(1000)
    ]
    body = json.dumps({"client_id": "acme", "leads": leads}).encode()
    assert len(body) > 1.2 * MIB
    response = await service.api.post("/api/leads", content=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json() == {"upserted": 1000}


# --- 4. deep nesting and times Postgres cannot hold -----------------------------------------


async def test_a_deeply_nested_body_is_422_and_the_connection_lives_on(service):
    deep = b"[" * 200_000 + b"]" * 200_000
    async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:
        headers = signed(WEBHOOK_SECRET, deep, msg_id="deep-1")
        assert_error(await client.post("/webhooks/email", content=deep, headers=headers), 422)
        # The same keep-alive connection still serves.
        assert (await client.get("/healthz")).status_code == 200
    assert_error(await service.api.post("/sync", content=deep[: MIB - 2]), 422)


@pytest.mark.parametrize("at", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_a_received_at_postgres_cannot_hold_is_refused_at_intake(service, db, at):
    await seed(service, leads=0)
    response = await post_signed(service, email_event("m-range", received_at=at), "range")
    assert_error(response, 422, "validation_error")
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


# --- 5. a slow upload is the client's problem -----------------------------------------------


async def test_a_body_that_arrives_too_slowly_is_408_not_a_database_outage(service):
    head = post_head("/sync", token=API_TOKEN, length=100)
    status, headers, body, _ = await raw_exchange(
        service.base_url, head, [b'{"client_id": '], read_s=10
    )
    assert status == 408, body
    assert json.loads(body)["error"] == "request_timeout"


# --- 3 and 7. text Postgres cannot store, and text too long to keep whole -------------------


class FakeProviders:
    """An SMS history and an AI provider that answer with crafted JSON."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.sms_pages = [
            # Escapes as a provider would send them: NUL and a lone surrogate.
            b'{"messages": [{"id": "s1\\u0000", "direction": "inbound", '
            b'"body": "nul \\u0000 and lone \\ud800 here", "sent_at": "2026-01-01T10:00:00Z"}],'
            b' "next_cursor": "2"}',
            json.dumps(
                {
                    "messages": [
                        {
                            "id": "s2",
                            "direction": "inbound",
                            "body": "é" * 40_000,
                            "sent_at": "2026-01-02T10:00:00Z",
                        },
                        {
                            "id": "s3",
                            "direction": "outbound",
                            "body": "the rest is kept",
                            "sent_at": "2026-01-03T10:00:00Z",
                        },
                    ],
                    "next_cursor": None,
                }
            ).encode(),
        ]
        app = FastAPI()

        @app.get("/sms/contacts/{contact}/messages")
        async def history(cursor: str | None = None) -> Response:
            page = self.sms_pages[0 if cursor is None else int(cursor) - 1]
            return Response(page, media_type="application/json")

        @app.post("/ai/chat/completions")
        async def complete(request: Request) -> Response:
            sent = await request.json()
            self.prompts.append(sent["messages"][-1]["content"])
            content = json.dumps({"score": 3, "reason": "warm \x00 lead \ud800"})
            reply = {"choices": [{"message": {"role": "assistant", "content": content}}]}
            return Response(json.dumps(reply), media_type="application/json")

        self.server = ServerThread(app)


@pytest.fixture
def fake_providers():
    fake = FakeProviders()
    with fake.server:
        yield fake


async def test_provider_text_postgres_cannot_store_is_kept_and_the_history_whole(
    start_service, db, fake_providers
):
    base = fake_providers.server.base_url
    service = start_service(sms_provider_url=f"{base}/sms", ai_provider_url=f"{base}/ai")
    [lead] = await seed(service, leads=1)
    response = await service.api.post(
        "/sync", json={"client_id": "acme", "lead_id": lead, "channels": ["sms"]}
    )
    assert response.status_code == 202
    await service.run_jobs()
    job = await db.fetchrow("SELECT status, last_error FROM jobs")
    assert job["status"] == "succeeded", job["last_error"]
    rows = await db.fetch(
        "SELECT provider_message_id, text FROM messages WHERE lead_id = $1 ORDER BY sent_at", lead
    )
    assert [r["provider_message_id"] for r in rows] == [f"s1{FFFD}", "s2", "s3"]
    assert rows[0]["text"] == f"nul {FFFD} and lone {FFFD} here"
    # 80,000 bytes of text: cut to 64 KiB with a marker, and counted.
    assert rows[1]["text"].endswith(CUT_MARKER)
    assert len(rows[1]["text"].encode()) <= MAX_TEXT_BYTES
    assert rows[2]["text"] == "the rest is kept"
    metrics = (await service.api.get("/metrics")).text
    assert 'handoff_message_text_truncated_total{channel="sms"} 1.0' in metrics


async def test_an_ai_reply_postgres_cannot_store_is_kept(start_service, db, fake_providers):
    base = fake_providers.server.base_url
    service = start_service(ai_provider_url=f"{base}/ai")
    [lead] = await seed(service, leads=1)
    # Lots of long inbound text: what reaches the model stays bounded.
    for n in range(40):
        await db.execute(
            "INSERT INTO messages"
            " (client_id, lead_id, channel, direction, text, provider_message_id, sent_at)"
            " VALUES ('acme', $1, 'sms', 'inbound', $2, $3, now() - make_interval(mins => $4))",
            lead,
            "long words " * 3_000,
            f"long-{n}",
            n,
        )
    await db.execute(
        "INSERT INTO jobs (type, dedupe_key, dedupe_scope, client_id, lead_id)"
        " VALUES ('lead_scoring', 'lead_scoring:x', 'forever', 'acme', $1)",
        lead,
    )
    await service.run_jobs()
    job = await db.fetchrow("SELECT status, last_error FROM jobs")
    assert job["status"] == "succeeded", job["last_error"]
    scored = await db.fetchrow("SELECT score, score_reason FROM leads WHERE id = $1", lead)
    assert scored["score"] == 3 and scored["score_reason"] == f"warm {FFFD} lead {FFFD}"
    [prompt] = fake_providers.prompts
    assert len(prompt) <= MAX_PROMPT_CHARS


def test_the_prompt_keeps_the_newest_messages_within_its_bound():
    class Row:
        def __init__(self, n: int) -> None:
            self.sent_at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=n)
            self.channel, self.direction, self.subject = "email", "inbound", "s" * 1_000
            self.text = f"message {n} " + "x" * 5_000

    rows = [Row(n) for n in reversed(range(50))]  # newest first, as the handler reads them
    text = transcript(rows)
    assert len(text) <= MAX_PROMPT_CHARS
    assert "message 49 " in text and "message 0 " not in text
    assert text.index("message 48 ") < text.index("message 49 ")  # oldest first


async def test_a_webhook_with_text_postgres_cannot_store_is_accepted_and_stored(service, db):
    await seed(service, leads=0)
    body = email_event(
        "nul-1",
        **{
            "from": "Nul \x00 Sender <nul.sender@example.com>",
            "subject": "lone \ud800 subject",
            "text": "nul \x00 text",
        },
    )
    response = await post_signed(service, body, "nul-1")
    assert response.status_code == 202, response.text
    await service.run_jobs()
    stored = await db.fetchrow("SELECT text, subject FROM messages WHERE channel = 'email'")
    assert stored["text"] == f"nul {FFFD} text" and stored["subject"] == f"lone {FFFD} subject"
    statuses = await db.fetch("SELECT type, status FROM jobs ORDER BY id")
    assert statuses[0]["status"] == "succeeded"


async def test_api_text_postgres_cannot_store_is_kept(service, db):
    [lead] = await seed(service, leads=1)
    response = await service.api.post(
        "/api/leads", json={"client_id": "acme", "leads": [{"id": lead, "name": "A\x00da"}]}
    )
    assert response.status_code == 200, response.text
    assert (await service.api.get(f"/api/leads/{lead}")).json()["name"] == f"A{FFFD}da"
    step = {"after_s": 60, "channel": "sms", "text": "hi \ud800 there"}
    body = json.dumps({"lead_id": lead, "steps": [step]}).encode()
    response = await service.api.post("/api/followups", content=body, headers=JSON)
    assert response.status_code == 201, response.text
    assert await db.fetchval("SELECT text FROM followup_steps") == f"hi {FFFD} there"


# --- 7. a lead's messages answer is bounded in bytes -----------------------------------------


async def test_a_leads_messages_answer_is_bounded_in_bytes(service, db):
    [lead] = await seed(service, leads=1)
    big = "m" * 60_000
    await db.execute(
        "INSERT INTO messages"
        " (client_id, lead_id, channel, direction, text, provider_message_id, sent_at)"
        " SELECT 'acme', $1, 'sms', 'inbound', $2 || n, 'big-' || n,"
        " now() - make_interval(mins => n)"
        " FROM generate_series(1, 100) AS n",
        lead,
        big,
    )
    response = await service.api.get(f"/api/leads/{lead}/messages")
    assert response.status_code == 200
    messages = response.json()["messages"]
    assert sum(len(m["text"]) for m in messages) <= 4 * MIB
    assert 0 < len(messages) < 100
    assert messages[-1]["provider_message_id"] == "big-1"  # the newest kept, oldest first
    assert response.headers["x-messages-truncated"] == "true"
    few = await service.api.get(f"/api/leads/{lead}/messages?limit=3")
    assert len(few.json()["messages"]) == 3 and "x-messages-truncated" not in few.headers


# --- 6. secrets: every form masked; signatures decoded strictly -------------------------------


def test_every_form_of_a_secret_is_masked_in_log_lines():
    secret = "s3cr3t/Token+with=odd chars"
    register_secret(secret)
    raw = secret.encode()
    forms = [
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]
    for form in forms:
        assert form not in scrub(f"GET /hook?token={form}&x=1"), form
    key = base64.b64encode(b"k" * 24).decode()
    register_secret(f"whsec_{key}")
    urlsafe_key = key.replace("+", "-").replace("/", "_").rstrip("=")
    for form in (key, quote(key, safe=""), urlsafe_key):
        assert form not in scrub(f"secret was {form}."), form


async def test_a_signature_with_junk_in_its_base64_is_refused(service, db):
    await seed(service, leads=0)
    body = email_event("junk-1")
    headers = signed(WEBHOOK_SECRET, body, msg_id="junk-1")
    version, signature = headers["webhook-signature"].split(",", 1)
    # Lenient base64 skips characters outside its alphabet: this still decodes to the right MAC.
    headers["webhook-signature"] = f"{version},{signature[:8]}!*{signature[8:]}"
    response = await service.anon.post("/webhooks/email", content=body, headers=headers)
    assert_error(response, 401, "invalid_signature")
    headers["webhook-signature"] = f"{version},{signature}"
    assert (
        await service.anon.post("/webhooks/email", content=body, headers=headers)
    ).status_code == 202
