"""Tracing end to end, with the SDK's in-memory exporter behind handoff's own export path: one
trace from /sync to the provider call (by link), a deduplicated /sync, and no PII or secret in
any exported span of a full flow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app import tracing
from app.api.sms_webhooks import twilio_signature
from app.sandbox.data import sms_history
from app.settings import Settings
from tests.support import (
    EMAIL_SHAPED,
    PUBLIC_URL,
    ROOT,
    SANDBOX_KEY,
    SECRETS,
    TWILIO_SID,
    seed,
)

PHONE = "+15550104242"
INBOUND_TEXT = "What times do you have next week?"
FOLLOW_UP_TEXT = "Are you free for a call?"
MASKED = re.compile(r"\[(email|phone|secret)\]")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, exporting (through handoff's scrubbing exporter) to memory."""
    exporter = InMemorySpanExporter()
    assert tracing.setup(Settings(), exporter=exporter) is not None
    yield exporter
    tracing.shutdown()


@pytest.fixture
def traced(spans, start_service):
    return start_service(sms_provider_kind="twilio")


def named(exported: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in exported if s.name == name]


def server_span(exported: tuple[ReadableSpan, ...], route: str) -> list[ReadableSpan]:
    return [s for s in exported if s.kind == SpanKind.SERVER and s.name == route]


async def sync(service, lead: str) -> dict:
    body = {"client_id": "acme", "lead_id": lead, "channels": ["sms"]}
    response = await service.api.post("/sync", json=body)
    assert response.status_code == 202, response.text
    [job] = response.json()["jobs"]
    return job


def traceparent_of(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_sync_job_attempt_and_provider_call_form_one_trace_by_link(traced, spans, db):
    [lead] = await seed(traced, leads=1, phone=PHONE)
    job = await sync(traced, lead)
    [request] = server_span(spans.get_finished_spans(), "POST /sync")
    stored = await db.fetchval("SELECT traceparent FROM jobs WHERE id = $1", int(job["id"]))
    assert stored == traceparent_of(request)

    summary = await traced.run_jobs()
    exported = spans.get_finished_spans()
    [attempt] = named(exported, "job conversation_sync")
    assert attempt.kind == SpanKind.CONSUMER
    attributes = dict(attempt.attributes)
    wait = attributes.pop("job.queue_wait_s")
    assert isinstance(wait, float) and wait >= 0
    assert attributes == {
        "job.id": int(job["id"]),
        "job.type": "conversation_sync",
        "job.attempt": 1,
        "client.id": "acme",
        "runner.invocation_id": summary["invocation_id"],
        "outcome": "succeeded",
    }
    # Linked to the request that enqueued the job, not its child.
    [link] = attempt.links
    assert (link.context.trace_id, link.context.span_id) == (
        request.context.trace_id,
        request.context.span_id,
    )
    assert attempt.context.trace_id != request.context.trace_id

    # Its parent is the runner invocation, which carries the summary.
    [invocation] = named(exported, "runner invocation")
    assert attempt.parent.span_id == invocation.context.span_id
    assert invocation.attributes["runner.invocation_id"] == summary["invocation_id"]
    assert invocation.attributes["runner.succeeded"] == summary["succeeded"] >= 1
    assert invocation.attributes["runner.stop_reason"] == summary["stop_reason"]
    # The runner route's request asked for the invocation: linked, not its parent.
    [cron] = server_span(exported, "POST /api/cron/background-jobs")
    assert invocation.parent is None
    assert [link.context.span_id for link in invocation.links] == [cron.context.span_id]

    # The provider calls are the attempt's children, with no query string (Twilio's To=…).
    calls = named(exported, "sms GET")
    assert calls
    for call in calls:
        assert call.kind == SpanKind.CLIENT
        assert call.context.trace_id == attempt.context.trace_id
        assert call.parent.span_id == attempt.context.span_id
        assert call.attributes["provider"] == "sms"
        assert call.attributes["http.response.status_code"] == 200
        assert call.attributes["url.path"].endswith("/Messages.json")
        assert "?" not in json.dumps(dict(call.attributes))
    # The attempt's own queries are its children too.
    queries = [s for s in exported if s.parent and s.parent.span_id == attempt.context.span_id]
    assert any(s.attributes.get("db.system") == "postgresql" for s in queries)


async def test_a_deduplicated_sync_links_to_the_job_it_found(traced, spans, db):
    [lead] = await seed(traced, leads=1, phone=PHONE)
    first = await sync(traced, lead)
    again = await sync(traced, lead)
    assert again["deduplicated"] and again["id"] == first["id"]
    requests = server_span(spans.get_finished_spans(), "POST /sync")
    assert len(requests) == 2 and requests[0].context.trace_id != requests[1].context.trace_id
    stored = await db.fetchval("SELECT traceparent FROM jobs WHERE id = $1", int(first["id"]))
    assert stored == traceparent_of(requests[0])

    await traced.run_jobs()
    [attempt] = named(spans.get_finished_spans(), "job conversation_sync")
    assert [link.context.span_id for link in attempt.links] == [requests[0].context.span_id]


async def test_no_pii_and_no_secret_in_any_exported_span_of_a_full_flow(traced, spans, db):
    service = traced
    [lead] = await seed(service, leads=1, phone=PHONE, email="jane.doe@example.org")
    # Sync, then an inbound text (its webhook), which is stored and scored.
    await sync(service, lead)
    fields = [
        ("MessageSid", "SM" + "d4" * 16),
        ("AccountSid", TWILIO_SID),
        ("From", PHONE),
        ("To", "+15005550006"),
        ("Body", INBOUND_TEXT),
    ]
    signature = twilio_signature(SANDBOX_KEY, f"{PUBLIC_URL}/webhooks/sms", fields)
    response = await service.anon.post(
        "/webhooks/sms", data=dict(fields), headers={"X-Twilio-Signature": signature}
    )
    assert response.status_code == 200
    await service.run_jobs()
    assert await db.fetchval("SELECT score FROM leads WHERE id = $1", lead) is not None
    # A follow-up, sent through Twilio.
    steps = [{"after_s": 0, "channel": "sms", "text": FOLLOW_UP_TEXT}]
    response = await service.api.post("/api/followups", json={"lead_id": lead, "steps": steps})
    assert response.status_code == 201, response.text
    assert (await service.cron.get("/api/cron/followups")).status_code == 202
    for _ in range(3):
        await service.run_jobs()
    sent = await db.fetchval("SELECT state FROM followup_steps")
    assert sent == "sent"

    exported = spans.get_finished_spans()
    names = {s.name for s in exported}
    # Every kind of span was there to scan: requests, queries, attempts, provider calls.
    assert {"POST /sync", "POST /webhooks/sms", "runner invocation"} <= names
    jobs = {"job conversation_sync", "job sms_inbound", "job lead_scoring", "job followup_send"}
    assert jobs <= names, names
    assert {"sms GET", "sms POST", "ai POST"} <= names, names
    assert any(s.attributes.get("db.system") == "postgresql" for s in exported)

    texts = {INBOUND_TEXT, FOLLOW_UP_TEXT} | {m["body"] for m in sms_history(PHONE)}
    digits = PHONE.removeprefix("+")
    for span in exported:
        for where, text in span_texts(span):
            assert not any(secret in text for secret in SECRETS), f"a secret in {where}: {text}"
            assert not EMAIL_SHAPED.search(text), f"an email address in {where}: {text}"
            assert digits not in text and "5550104242" not in text, f"a phone in {where}: {text}"
            assert not any(t in text for t in texts), f"message text in {where}: {text}"
            # Nothing had to be masked on the way out: the spans carry none to begin with.
            assert not MASKED.search(text), f"masked on export in {where}: {text}"


def span_texts(span: ReadableSpan) -> Iterator[tuple[str, str]]:
    """Every text an exported span carries: its name, status, attributes (keys and values), its
    events' and links' and its resource's."""
    yield "name", span.name
    yield "status", span.status.description or ""
    for where, attributes in [
        ("attributes", span.attributes),
        ("resource", span.resource.attributes),
        *((f"event {e.name}", e.attributes) for e in span.events),
        *(("link", link.attributes) for link in span.links),
    ]:
        for key, value in (attributes or {}).items():
            yield f"{span.name} {where} key", key
            yield f"{span.name} {where} {key}", json.dumps(value, default=str)
    for event in span.events:
        yield "event name", event.name


def test_with_the_endpoint_unset_no_tracer_provider_is_set_up(tmp_path):
    """A fresh process: the app built with OTEL_EXPORTER_OTLP_ENDPOINT unset loads no
    OpenTelemetry SDK and none of handoff's tracing, and sets no provider."""
    probe = """
import sys
from opentelemetry import trace
from app import tracing
from app.main import create_app
from app.queue import hooks
from app.settings import Settings

create_app(Settings(database_url="postgresql://u@127.0.0.1:1/x"))
loaded = sorted(m for m in sys.modules if m == "app.otel" or m.startswith("opentelemetry.sdk"))
print(repr((loaded, tracing.enabled(), type(trace.get_tracer_provider()).__name__,
            hooks.attempt_observer, hooks.traceparent is hooks.no_traceparent)))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == repr(([], False, "ProxyTracerProvider", None, True))


def test_the_endpoint_turns_tracing_on_with_the_otlp_exporter():
    settings = Settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318/")
    try:
        assert tracing.setup(settings) is not None
        assert tracing.enabled() and tracing.fastapi_telemetry()["tracer_provider"]
        assert tracing._tracing.exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    finally:
        tracing.shutdown()
    assert not tracing.enabled() and tracing.fastapi_telemetry() is None


def test_otel_sdk_disabled_keeps_tracing_off(monkeypatch):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.setup(Settings(otel_exporter_otlp_endpoint="http://127.0.0.1:4318")) is None
    assert not tracing.enabled()


def test_a_bad_endpoint_is_refused_by_name():
    with pytest.raises(ValueError, match="otel_exporter_otlp_endpoint"):
        Settings(otel_exporter_otlp_endpoint="127.0.0.1:4318")


def test_the_export_path_masks_what_log_lines_mask_and_drops_exception_text():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import Link, Status, StatusCode

    from app.otel import ScrubbingExporter
    from app.telemetry import register_secret

    register_secret(SANDBOX_KEY)  # as the app registers its settings' secrets at start-up
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(exporter)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("for jane@example.org") as other:
        pass
    with tracer.start_as_current_span(
        "call", links=[Link(other.get_span_context(), {"to": PHONE})]
    ) as span:
        span.set_attribute("url.path", f"/leads/{PHONE}")
        span.set_attribute("tokens", (SANDBOX_KEY, "plain"))
        span.set_attribute("client.id", "client-2026120512")
        span.record_exception(ValueError("jane@example.org said hello"))
        span.set_status(Status(StatusCode.ERROR, "jane@example.org"))
    provider.shutdown()
    first, second = exporter.get_finished_spans()
    assert first.name == "for [email]"
    assert second.attributes["url.path"] == "/leads/[phone]"
    assert second.attributes["tokens"] == ("[secret]", "plain")
    # An identifier keeps its digits, as in log lines.
    assert second.attributes["client.id"] == "client-2026120512"
    [event] = second.events
    assert dict(event.attributes) == {"exception.type": "ValueError", "exception.escaped": "False"}
    assert second.status.status_code == StatusCode.ERROR and not second.status.description
    assert dict(second.links[0].attributes) == {"to": "[phone]"}


async def test_a_query_is_traced_inside_a_trace_and_left_out_outside_any(spans, db):
    await db.fetchval("SELECT 1")  # a worker's poll, say: no trace of its own
    assert spans.get_finished_spans() == ()
    with tracing._tracing.tracer.start_as_current_span("request") as parent:
        await db.fetchval("SELECT 2")
    query, request = spans.get_finished_spans()
    assert request.name == "request" and query.attributes["db.system"] == "postgresql"
    assert query.parent.span_id == parent.get_span_context().span_id


async def test_a_cancelled_attempt_releases_its_job_and_ends_its_span(spans, database_url, db):
    import asyncio

    from app.db import Database
    from app.queue import JobContext, Registry, Runner, enqueue

    jobs = Registry()
    started = asyncio.Event()

    @jobs.handler("slow", dedupe="active")
    async def slow(ctx: JobContext) -> None:
        started.set()
        await asyncio.sleep(30)

    database = await Database.open(database_url)
    try:
        with tracing._tracing.tracer.start_as_current_span("request"):
            async with database.acquire() as conn:
                job = await enqueue(conn, "slow", "k", registry=jobs)
        runner = Runner(database, registry=jobs, concurrency=1, job_timeout_s=60, lease_s=90)
        [claimed] = await runner.claim(1)
        task = runner.start(claimed)
        await asyncio.wait_for(started.wait(), 10)
        assert await runner.cancel_attempts({task}) == ["released"]
    finally:
        await database.close()
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", int(job.id)) == "pending"
    [attempt] = named(spans.get_finished_spans(), "job slow")
    assert attempt.attributes["outcome"] == "released" and len(attempt.links) == 1


def test_spans_reach_an_otlp_http_collector_at_the_endpoint():
    """The real exporter, to a collector stand-in on loopback: the spans arrive at /v1/traces
    as OTLP protobuf."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        tracing.setup(Settings(otel_exporter_otlp_endpoint=endpoint))
        with tracing._tracing.tracer.start_as_current_span("job conversation_sync"):
            pass
        tracing.shutdown()  # exports what is queued
    finally:
        tracing.shutdown()
        server.shutdown()
    [(path, content_type, body)] = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "handoff"
    assert [s.name for s in resource.scope_spans[0].spans] == ["job conversation_sync"]


async def test_a_workers_attempt_is_a_root_span_linked_to_its_enqueue(spans, database_url, db):
    import asyncio

    from app.db import Database
    from app.queue import JobContext, Registry, Runner, enqueue
    from app.queue.worker import Worker

    jobs = Registry()
    done = asyncio.Event()

    @jobs.handler("quick", dedupe="active")
    async def quick(ctx: JobContext) -> None:
        done.set()

    database = await Database.open(database_url)
    stop = asyncio.Event()
    try:
        runner = Runner(database, registry=jobs, concurrency=2, job_timeout_s=10, lease_s=20)
        worker = asyncio.create_task(Worker(runner, None, poll_interval_s=0.1, grace_s=1).run(stop))
        with tracing._tracing.tracer.start_as_current_span("request") as request:
            async with database.acquire() as conn:
                await enqueue(conn, "quick", "k", registry=jobs)
        await asyncio.wait_for(done.wait(), 10)
        stop.set()
        await asyncio.wait_for(worker, 10)
    finally:
        stop.set()
        await database.close()
    [attempt] = named(spans.get_finished_spans(), "job quick")
    assert attempt.parent is None and attempt.attributes["outcome"] == "succeeded"
    assert [link.context.span_id for link in attempt.links] == [request.get_span_context().span_id]
