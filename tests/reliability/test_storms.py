"""Duplicate storms: ten thousand identical requests at 64 connections against a server in a
process of its own. Every one is answered 202, one job exists per dedupe key, and that job
counts every request it answered."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter

import httpx

from app.sandbox.data import sms_history
from tests.conftest import API_TOKEN, WEBHOOK_SECRET
from tests.support import eventually, seed, signed

REQUESTS = 10_000
CONNECTIONS = 64
DELIVERIES = 250  # distinct webhook ids, each delivered REQUESTS / DELIVERIES times
SENDER = "Storm Sender <storm.sender@example.org>"
TEXT = "Storm text: please call me on +1 415 555 0142 about the offer."
PHONE = "+1 415 555 0142"


async def storm(service, requests: list[dict]) -> list[httpx.Response]:
    """Send every request over CONNECTIONS keep-alive connections, one request in flight on
    each. One client per connection: httpcore's pool scans every connection per request, and
    one pool of 64 would cost the client more CPU than the server spends answering."""
    queue = iter(enumerate(requests))
    answers: list[httpx.Response | None] = [None] * len(requests)

    async def connection() -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        # Plain HTTP on loopback: no TLS context (loading CA files costs 40 ms per client).
        client = httpx.AsyncClient(
            base_url=service.base_url,
            limits=limits,
            timeout=60,
            verify=False,  # noqa: S501
        )
        async with client as c:
            for index, request in queue:
                answers[index] = await c.request(**request)

    # The client's own per-request INFO line would cost it as much as the request.
    client_log = logging.getLogger("httpx")
    level = client_log.level
    client_log.setLevel(logging.WARNING)
    try:
        await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))
    finally:
        client_log.setLevel(level)
    return answers


def assert_quiet(process_logs, logs, requests: int) -> None:
    """No error line from the server process, nothing on its stderr but uvicorn's banner."""
    served = [r for r in process_logs.records("server") if r.get("logger") == "uvicorn.access"]
    assert len(served) >= requests, "the server's log lines were all read"
    assert process_logs.errors("server") == []
    assert "Traceback" not in process_logs.stderr("server")
    assert logs.errors() == []


async def test_ten_thousand_duplicate_syncs_make_one_job_per_channel(
    start_process_service, db, process_logs, logs
):
    service = await start_process_service()
    [lead] = await seed(service, leads=1)
    request = {
        "method": "POST",
        "url": "/sync",
        "json": {"client_id": "acme", "lead_id": lead},
        "headers": {"Authorization": f"Bearer {API_TOKEN}"},
    }
    started = time.monotonic()
    answers = await storm(service, [request] * REQUESTS)
    elapsed = time.monotonic() - started

    assert Counter(r.status_code for r in answers) == {202: REQUESTS}
    bodies = [r.json()["jobs"] for r in answers]
    # Every answer names the same two jobs; exactly one answer created each of them.
    assert {tuple((j["type"], j["id"]) for j in jobs) for jobs in bodies} == {
        tuple(("conversation_sync", j["id"]) for j in bodies[0])
    }
    assert len(bodies[0]) == 2
    created = Counter(j["id"] for jobs in bodies for j in jobs if not j["deduplicated"])
    assert created == {j["id"]: 1 for j in bodies[0]}
    rows = await db.fetch("SELECT id, dedupe_key, status, enqueue_count FROM jobs ORDER BY id")
    assert len(rows) == 2, rows
    assert {r["dedupe_key"] for r in rows} == {
        f"conversation_sync:{lead}:sms",
        f"conversation_sync:{lead}:email",
    }
    assert [(r["status"], r["enqueue_count"]) for r in rows] == [("pending", REQUESTS)] * 2
    assert sum(r["enqueue_count"] for r in rows) == REQUESTS * 2  # two channels per request
    assert elapsed < 120, "a generous bound: the storm must not stall"
    assert_quiet(process_logs, logs, REQUESTS)


async def test_ten_thousand_webhook_redeliveries_make_one_job_per_delivery_id(
    start_process_service, db, process_logs, logs, pii
):
    pii.add(TEXT, PHONE, "415 555 0142", "Storm subject")
    service = await start_process_service()
    await seed(service, leads=1)
    deliveries = []
    for n in range(DELIVERIES):
        event = {
            "type": "email.received",
            "data": {
                "client_id": "acme",
                "message_id": f"storm-msg-{n}",
                "from": SENDER,
                "subject": f"Storm subject {n}",
                "text": TEXT,
                "received_at": "2026-11-28T10:00:00Z",
            },
        }
        body = json.dumps(event).encode()
        # Half the senders use the Svix header names: both must deduplicate alike.
        prefix = "svix" if n % 2 else "webhook"
        headers = signed(WEBHOOK_SECRET, body, msg_id=f"storm-wh-{n}", prefix=prefix)
        deliveries.append(
            {"method": "POST", "url": "/webhooks/email", "content": body, "headers": headers}
        )
    # Redeliveries interleaved, as a provider retrying on timeouts would send them.
    requests = [deliveries[i % DELIVERIES] for i in range(REQUESTS)]
    answers = await storm(service, requests)

    assert Counter(r.status_code for r in answers) == {202: REQUESTS}
    by_delivery: dict[str, set[str]] = {}
    fresh = Counter()
    for request, answer in zip(requests, answers, strict=True):
        body = answer.json()
        delivery = request["headers"].get("webhook-id") or request["headers"]["svix-id"]
        by_delivery.setdefault(delivery, set()).add(body["job_id"])
        fresh[delivery] += not body["deduplicated"]
    assert all(len(ids) == 1 for ids in by_delivery.values()), "one job per delivery id"
    assert fresh == {f"storm-wh-{n}": 1 for n in range(DELIVERIES)}
    rows = await db.fetch("SELECT id, dedupe_key, enqueue_count FROM jobs")
    assert len(rows) == DELIVERIES
    assert {str(r["id"]) for r in rows} == {i for ids in by_delivery.values() for i in ids}
    assert {r["enqueue_count"] for r in rows} == {REQUESTS // DELIVERIES}
    assert sum(r["enqueue_count"] for r in rows) == REQUESTS
    assert_quiet(process_logs, logs, REQUESTS)


async def test_duplicate_syncs_racing_a_worker_that_finishes_the_jobs(
    start_process_service, start_worker, db, process_logs, logs
):
    """A sync job is deduplicated only while pending or running: with a worker finishing it
    mid-storm, later requests create the next one. The upsert racing those state changes must
    still answer every request 202, count each in exactly one job, and never fail."""
    service = await start_process_service()
    [lead] = await seed(service, leads=1)
    worker = start_worker(runner_concurrency=4, worker_poll_interval_s=0.1)
    requests = 3_000
    request = {
        "method": "POST",
        "url": "/sync",
        "json": {"client_id": "acme", "lead_id": lead, "channels": ["sms"]},
        "headers": {"Authorization": f"Bearer {API_TOKEN}"},
    }
    answers = await storm(service, [request] * requests)

    assert Counter(r.status_code for r in answers) == {202: requests}
    named = [r.json()["jobs"][0] for r in answers]
    rows = await db.fetch("SELECT id, status, enqueue_count FROM jobs ORDER BY id")
    assert len(rows) > 1, "the worker finished jobs during the storm"
    assert {str(r["id"]) for r in rows} == {j["id"] for j in named}
    assert sum(r["enqueue_count"] for r in rows) == requests
    assert sum(not j["deduplicated"] for j in named) == len(rows), "one creator per job"
    answered = Counter(j["id"] for j in named)
    assert {str(r["id"]): r["enqueue_count"] for r in rows} == answered
    assert sum(r["status"] in ("pending", "running") for r in rows) <= 1

    async def drained() -> bool:
        return await db.fetchval("SELECT bool_and(status = 'succeeded') FROM jobs")

    await eventually(drained, 20, what="the worker finished the last job")
    assert worker.poll() is None
    # However many times the conversation was synced, each message is stored once.
    stored = await db.fetchval("SELECT count(*) FROM messages")
    assert stored == len(sms_history(f"c-{lead}"))
    assert process_logs.errors("worker") == []
    assert_quiet(process_logs, logs, requests)
