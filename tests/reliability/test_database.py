"""Postgres stopped and started under load, with the API and a worker each in a process of
its own: only 202 or 503-with-Retry-After meanwhile, each within 5 s; afterwards everything
recovers by itself, every accepted request has its job, and the worker did not die."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass

import asyncpg
import httpx
import psutil

from app.db import async_url
from app.migrations import upgrade_to_head
from tests.conftest import WEBHOOK_SECRET
from tests.support import assert_error, eventually, seed, signed

CLIENTS = 4
OUTAGE_S = 3.0
TEXT = "Outage text: ring me on +44 20 7946 0958 before Friday."
PHONE = "+44 20 7946 0958"


@dataclass
class Answer:
    kind: str  # "sync" or "webhook"
    key: str  # the lead, or the webhook id
    status: int
    started: float
    at: float
    response: httpx.Response


def delivery(webhook_id: str, n: int) -> tuple[bytes, dict[str, str]]:
    event = {
        "type": "email.received",
        "data": {
            "client_id": "acme",
            "message_id": f"outage-msg-{n}",
            "email_lead_id": f"e-acme-lead-{n % 10}",
            "from": f"Lead {n % 10} <lead{n % 10}@example.com>",
            "subject": "About the outage",
            "text": TEXT,
            "received_at": "2026-11-28T10:00:00Z",
        },
    }
    body = json.dumps(event).encode()
    return body, signed(WEBHOOK_SECRET, body, msg_id=webhook_id)


class Load:
    """Clients sending POST /sync and webhooks back to back until told to stop."""

    def __init__(self, service, leads: list[str]) -> None:
        self.service = service
        self.leads = leads
        self.answers: list[Answer] = []
        self.stopping = asyncio.Event()
        self.counter = itertools.count()
        # Short of the client default, long past the contract's 5 s: a hung request shows
        # up as a slow answer, not as a test that never ends.
        self.timeout = httpx.Timeout(15)

    async def one(self, client: httpx.AsyncClient, n: int) -> None:
        started = time.monotonic()
        if n % 2:
            lead = self.leads[n % len(self.leads)]
            kind, key = "sync", lead
            response = await client.post(
                "/sync", json={"client_id": "acme", "lead_id": lead}, timeout=self.timeout
            )
        else:
            kind, key = "webhook", f"outage-wh-{n}"
            body, headers = delivery(key, n)
            response = await self.service.anon.post(
                "/webhooks/email", content=body, headers=headers, timeout=self.timeout
            )
        now = time.monotonic()
        self.answers.append(Answer(kind, key, response.status_code, started, now, response))

    async def client(self) -> None:
        while not self.stopping.is_set():
            await self.one(self.service.api, next(self.counter))
            await asyncio.sleep(0.05)

    async def run(self) -> None:
        await asyncio.gather(*(self.client() for _ in range(CLIENTS)))

    def since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.at > moment]


async def test_postgres_restart_under_load_loses_no_accepted_job(
    cluster, start_process_service, start_worker, process_logs, pii
):
    pii.add(TEXT, PHONE, "20 7946 0958", "About the outage")
    url = cluster.url
    await asyncio.to_thread(upgrade_to_head, url)
    service = await start_process_service(database_url=url)
    leads = await seed(service, leads=10)
    worker = start_worker(
        database_url=url, job_timeout_s=3, lease_grace_s=1, worker_poll_interval_s=0.2
    )
    load = Load(service, leads)
    running = asyncio.create_task(load.run())

    await asyncio.sleep(1.5)
    assert {a.status for a in load.answers} == {202}, "all is well before the outage"
    await cluster.stop("fast")
    down_at = time.monotonic()
    await asyncio.sleep(OUTAGE_S)
    ready = await service.anon.get("/readyz")
    assert_error(ready, 503)
    restart_at = time.monotonic()
    await cluster.start()
    up_at = time.monotonic()

    async def recovered() -> bool:
        fresh = load.since(up_at + 0.5)
        return {a.kind for a in fresh if a.status == 202} == {"sync", "webhook"}

    await eventually(recovered, 15, what="the API answered 202 again by itself")
    recovered_at = time.monotonic()
    await asyncio.sleep(1.5)
    load.stopping.set()
    await running
    unexpected = [(a.kind, a.status, a.response.text) for a in load.answers if a.status != 202]
    unexpected = [u for u in unexpected if u[1] != 503]
    assert unexpected == [], "\n".join(
        [repr(u) for u in unexpected[:5]]
        + [json.dumps(e) for e in process_logs.errors("server")[:5]]
    )
    db = await asyncpg.connect(async_url(url).replace("+asyncpg", ""))
    try:
        await check_outcome(db, service, worker, load, down_at, restart_at, recovered_at)
    finally:
        await db.close()
    # The server never failed a request for anything but the outage.
    server_errors = process_logs.errors("server")
    assert server_errors == [], server_errors[:3]
    assert "Traceback" not in process_logs.stderr()
    # The worker saw the outage as warnings (claims failing, outcomes not recorded), and lived.
    assert any(r["level"] == "warning" for r in process_logs.records("worker"))


async def check_outcome(db, service, worker, load, down_at, restart_at, recovered_at) -> None:
    """What the answers promised, checked against the database afterwards."""
    statuses = {a.status for a in load.answers}
    assert statuses <= {202, 503}, [(a.status, a.response.text) for a in load.answers][:5]
    during = [a for a in load.answers if down_at < a.started and a.at < restart_at]
    assert during and {a.status for a in during} == {503}, "the outage was seen as 503"
    for answer in load.answers:
        elapsed = answer.at - answer.started
        assert elapsed < 5, f"an answer took {elapsed:.1f} s"
        if answer.status == 503:
            assert_error(answer.response, 503)
            assert answer.response.headers["Retry-After"].isdigit()
    assert {a.status for a in load.since(recovered_at)} == {202}, "recovered for good"
    assert (await service.anon.get("/readyz")).status_code == 200

    # Every request that was accepted has its job.
    accepted: set[int] = set()
    for answer in load.answers:
        if answer.status != 202:
            continue
        body = answer.response.json()
        accepted.update(int(j["id"]) for j in body.get("jobs", []))
        if "job_id" in body:
            accepted.add(int(body["job_id"]))
    found = await db.fetch("SELECT id FROM jobs WHERE id = ANY($1::bigint[])", list(accepted))
    assert {r["id"] for r in found} == accepted, "an accepted job was lost"
    delivered = {a.key for a in load.answers if a.kind == "webhook" and a.status == 202}
    keys = await db.fetch("SELECT dedupe_key FROM jobs WHERE type = 'email_inbound'")
    assert {r["dedupe_key"].removeprefix("email_inbound:") for r in keys} >= delivered

    # The sender retries what was refused; afterwards every delivery has exactly one job.
    refused = {
        a.key: int(a.key.rsplit("-", 1)[1])
        for a in load.answers
        if a.kind == "webhook" and a.status == 503
    }
    for key, n in refused.items():
        body, headers = delivery(key, n)
        answer = await service.anon.post("/webhooks/email", content=body, headers=headers)
        assert answer.status_code == 202, answer.text
    sent = {a.key for a in load.answers if a.kind == "webhook"}
    rows = await db.fetch(
        "SELECT dedupe_key, count(*) AS n FROM jobs WHERE type = 'email_inbound' GROUP BY 1"
    )
    assert {r["dedupe_key"].removeprefix("email_inbound:") for r in rows} == sent
    assert {r["n"] for r in rows} == {1}

    # The worker lived through it and drains everything, jobs from after the outage included.
    async def drained() -> bool:
        return await db.fetchval("SELECT count(*) = 0 FROM jobs WHERE status NOT IN ('succeeded')")

    await eventually(drained, 40, step_s=0.25, what="the worker drained every job")
    assert worker.poll() is None, "the worker died during the outage"
    assert service.process.poll() is None
    scored = await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'lead_scoring'")
    assert scored > 0


def postgres_processes(cluster) -> list[psutil.Process]:
    postmaster = psutil.Process(cluster.server.get_pid())
    return [postmaster, *postmaster.children(recursive=True)]


async def test_a_database_that_stops_answering_still_gets_503_within_5_s(
    cluster, start_process_service, process_logs, pii
):
    """Postgres frozen (SIGSTOP), as a network partition or a stalled primary looks from the
    app: connections stay open and nothing answers. Routes still answer 503 with Retry-After
    within 5 s, and recover when it thaws."""
    pii.add(TEXT, PHONE, "About the outage")
    url = cluster.url
    await asyncio.to_thread(upgrade_to_head, url)
    service = await start_process_service(database_url=url)
    [lead] = await seed(service, leads=1)
    body, headers = delivery("frozen-wh", 0)
    requests = {
        "sync": lambda: service.api.post("/sync", json={"client_id": "acme", "lead_id": lead}),
        "readyz": lambda: service.anon.get("/readyz"),
        "jobs": lambda: service.api.get("/api/jobs"),
        "lead": lambda: service.api.get(f"/api/leads/{lead}"),
        "webhook": lambda: service.anon.post("/webhooks/email", content=body, headers=headers),
    }
    # Warm both pools, so requests find open connections to a server that will not answer.
    for _ in range(3):
        for name, send in requests.items():
            assert (await send()).status_code < 300, name
    frozen = postgres_processes(cluster)
    for process in frozen:
        process.suspend()
    try:

        async def timed(name: str, send) -> tuple[str, float, httpx.Response | None]:
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(send(), timeout=8)
            except TimeoutError:
                response = None
            return name, time.monotonic() - started, response

        answers = await asyncio.gather(*(timed(n, s) for n, s in requests.items()))
    finally:
        for process in frozen:
            process.resume()
    slow = [(name, round(elapsed, 1)) for name, elapsed, _ in answers if elapsed >= 5]
    assert slow == [], f"no answer within 5 s while the database hung: {slow}"
    for name, _, response in answers:
        assert_error(response, 503)
        assert response.headers["Retry-After"].isdigit(), name

    async def recovered() -> bool:
        return all([(await send()).status_code < 300 for send in requests.values()])

    await eventually(recovered, 15, what="every route recovered after the thaw")
