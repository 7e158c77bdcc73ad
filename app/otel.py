"""Tracing with OpenTelemetry (the `otel` extra); imported by app.tracing only when it is on.

What is exported, and nothing else:

- FastAPI's own server span for each request (FastAPI traces requests once given a tracer
  provider: app/main.py);
- a span for each database query inside a trace (asyncpg's instrumentation: the statement,
  never its parameters); a query outside any trace (a worker's poll) is left out;
- `job <type>`: one span per attempt, linked to the trace that enqueued the job (the
  `traceparent` stored with it), with job.id, job.type, job.attempt, outcome, client.id,
  runner.invocation_id and job.queue_wait_s (how long it was due before this attempt started);
- `<provider> <METHOD>`: one client span per provider call, inside its attempt, with the
  provider, the method, the host and the path (never the query string, never a body);
- `runner invocation`: one span per budgeted drain, with its summary.

No PII and no secret: the spans of handoff's own carry ids, counts and classes only, and every
span passes through `ScrubbingExporter` on its way out, which masks what `scrub` masks in log
lines and drops exception messages, stack traces and status descriptions (an exception's
class is kept).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import weakref
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from app.queue import hooks
from app.telemetry import scrub

if TYPE_CHECKING:
    from app.db import Database
    from app.queue.job import ClaimedJob
    from app.queue.outcomes import Outcome
    from app.queue.runner import DrainSummary, Runner
    from app.settings import Settings

log = logging.getLogger("handoff.tracing")

SCOPE = "handoff"
# W3C Trace Context, version 00: version-trace_id-parent_id-flags, lower-case hex.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# How long an attempt that is done waits for its job's traceparent before its span ends
# without the link (the read runs beside the handler; it is late only when the database is).
LOOKUP_WAIT_S = 2.0
# The traceparent and queue wait of the jobs just claimed, in one read per batch: the claim
# set started_at, so started_at - run_at is how long the job was due before it started.
JOB_TRACES = """
SELECT id, traceparent, extract(epoch FROM started_at - run_at)::float8 AS wait_s
FROM jobs WHERE id = ANY($1::bigint[])
"""
# Attributes that are identifiers: their digit runs are kept (as in log lines, ID_FIELDS).
ID_ATTRIBUTES = frozenset({"client.id", "runner.invocation_id", "job.type"})
# Exception details may quote PII (an address in a constraint's message): the class stays.
DROPPED_ATTRIBUTES = frozenset({"exception.message", "exception.stacktrace"})
FAILED_OUTCOMES = frozenset({"failed", "lease_lost"})


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, or None outside any trace."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The span context a stored traceparent names, or None when it names none."""
    match = _TRACEPARENT.fullmatch(value or "")
    if match is None:
        return None
    context = SpanContext(
        trace_id=int(match[1], 16),
        span_id=int(match[2], 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match[3], 16)),
    )
    return context if context.is_valid else None


class Tracing:
    """The tracer provider and what handoff plugs into it; one per process while tracing is on."""

    def __init__(self, settings: Settings, exporter: SpanExporter | None = None) -> None:
        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, when set, name the service instead.
        named = os.environ.get("OTEL_SERVICE_NAME")
        self.provider = TracerProvider(
            resource=Resource.create({} if named else {"service.name": SCOPE}),
            # The SDK's own reading of OTEL_TRACES_SAMPLER (default: parent-based, always on).
            sampler=NoOrphanQueries(sampling._get_from_env_or_default()),  # noqa: SLF001
        )
        if exporter is None:
            self.exporter: SpanExporter = _otlp_exporter(settings)
            processor: Any = BatchSpanProcessor(ScrubbingExporter(self.exporter))
        else:
            self.exporter = exporter
            # Given an exporter (the tests' in-memory one), each span is exported as it ends.
            processor = SimpleSpanProcessor(ScrubbingExporter(exporter))
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer(SCOPE)
        self._asyncpg = AsyncPGInstrumentor()
        self._asyncpg.instrument(tracer_provider=self.provider)
        # One reader per runner: the attempts of one claim start together and share a read.
        self._lookups: weakref.WeakKeyDictionary[Runner, _JobTraces] = weakref.WeakKeyDictionary()
        hooks.traceparent = current_traceparent
        hooks.attempt_observer = self.observe_attempt

    def close(self) -> None:
        hooks.traceparent = hooks.no_traceparent
        hooks.attempt_observer = None
        self._asyncpg.uninstrument()
        self.provider.shutdown()

    async def observe_attempt(
        self, runner: Runner, job: ClaimedJob, attempt: Coroutine[Any, Any, Outcome]
    ) -> Outcome:
        """Run the attempt inside its span; link the span to the trace that enqueued the job.
        Tracing never stops an attempt: if the span cannot be started, the attempt runs bare."""
        try:
            lookups = self._lookups.get(runner)
            if lookups is None:
                lookups = self._lookups[runner] = _JobTraces(runner.db)
            found = lookups.get(job.id)
            attributes: dict[str, Any] = {
                "job.id": job.id,
                "job.type": job.type,
                "job.attempt": job.attempt,
                "runner.invocation_id": runner.invocation_id,
            }
            if job.client_id is not None:
                attributes["client.id"] = job.client_id
            span = self.tracer.start_span(
                f"job {job.type}", kind=SpanKind.CONSUMER, attributes=attributes
            )
        except Exception:
            log.warning("could not start an attempt's span", exc_info=True)
            return await attempt
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                outcome = await attempt
            finally:
                await _link_enqueue(span, found)
            span.set_attribute("outcome", outcome)
            if outcome in FAILED_OUTCOMES:
                span.set_status(Status(StatusCode.ERROR))
        return outcome

    async def drain(self, runner: Runner, budget_s: float) -> DrainSummary:
        """A runner invocation's span: a trace of its own, linked to the request that asked
        for it, whose children are its attempts."""
        asked_by = trace.get_current_span().get_span_context()
        links = [Link(asked_by)] if asked_by.is_valid else None
        with self.tracer.start_as_current_span(
            "runner invocation",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            links=links,
            attributes={
                "runner.invocation_id": runner.invocation_id,
                "runner.budget_s": float(budget_s),
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            summary = await runner.drain(budget_s)
            for key, value in summary.as_dict().items():
                if key != "invocation_id":
                    span.set_attribute(f"runner.{key}", value)
        return summary

    def provider_call(self, provider: str, method: str, url: str) -> ProviderCall:
        return ProviderCall(self.tracer, provider, method, url)


async def _link_enqueue(span: Any, found: asyncio.Future[Any]) -> None:
    """Add the link to the enqueuing trace and the queue wait, once the read is back. An
    attempt that is over is not cut short by a cancel here: its outcome is already known."""
    if found.done():
        row = found.result()
    else:
        try:
            row = await asyncio.wait_for(asyncio.shield(found), LOOKUP_WAIT_S)
        except (TimeoutError, asyncio.CancelledError):
            found.cancel()
            return
    if row is None:
        return
    traceparent, wait_s = row
    if wait_s is not None:
        span.set_attribute("job.queue_wait_s", round(max(wait_s, 0.0), 6))
    enqueued = parse_traceparent(traceparent)
    if enqueued is not None:
        span.add_link(enqueued, {"handoff.link": "enqueued"})


class NoOrphanQueries(sampling.Sampler):
    """Leaves out a query that belongs to no trace (a worker's poll for jobs, its LISTEN, an
    enqueue outside any request or attempt): one trace of one span each, every second, would
    bury the traces that matter. Every other span is the configured sampler's to decide."""

    def __init__(self, inner: sampling.Sampler) -> None:
        self.inner = inner

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> sampling.SamplingResult:
        if (
            kind is SpanKind.CLIENT
            and attributes
            and ("db.system" in attributes or "db.system.name" in attributes)
            and not trace.get_current_span(parent_context).get_span_context().is_valid
        ):
            return sampling.SamplingResult(sampling.Decision.DROP)
        return self.inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"NoOrphanQueries{{{self.inner.get_description()}}}"


class _JobTraces:
    """Reads jobs' traceparent and queue wait: one read at a time, and the jobs asked for while
    it is on the wire go together in the next (the attempts of one claim start together)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._waiting: list[tuple[int, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None

    def get(self, job_id: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((job_id, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._read_all())
        return future

    async def _read_all(self) -> None:
        # Not a traced query: the read serves the spans, it is no part of the work.
        with suppress_instrumentation():
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    async with self.db.acquire() as conn:
                        rows = await conn.fetch(JOB_TRACES, [job_id for job_id, _ in batch])
                    found = {r["id"]: (r["traceparent"], r["wait_s"]) for r in rows}
                except Exception:
                    log.debug("could not read jobs' traceparent", exc_info=True)
                    found = {}
                for job_id, future in batch:
                    if not future.done():
                        future.set_result(found.get(job_id))


class ProviderCall:
    """One provider call's client span: the provider, the method, the host and the path."""

    def __init__(self, tracer: trace.Tracer, provider: str, method: str, url: str) -> None:
        self._tracer = tracer
        parts = urlsplit(url)
        self._name = f"{provider} {method.upper()}"
        self._attributes: dict[str, Any] = {
            "provider": provider,
            "http.request.method": method.upper(),
            "server.address": parts.hostname or "",
            "url.path": scrub(parts.path),
        }
        if parts.port is not None:
            self._attributes["server.port"] = parts.port
        self._span: Any = None
        self._scope: Any = None

    def __enter__(self) -> ProviderCall:
        self._scope = self._tracer.start_as_current_span(
            self._name,
            kind=SpanKind.CLIENT,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = self._scope.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if error is not None and self._span.is_recording():
            self._span.set_attribute("error.type", type(error).__name__)
            self._span.set_status(Status(StatusCode.ERROR))
        self._scope.__exit__(kind, error, tb)

    def answered(self, status: int) -> None:
        self._span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self._span.set_status(Status(StatusCode.ERROR))

    def failed(self, outcome: str) -> None:
        """A call with no answer: `timeout` or `error`."""
        self._span.set_attribute("provider.outcome", outcome)


def _otlp_exporter(settings: Settings) -> SpanExporter:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, when set, is the full address and wins; else traces go
    # to /v1/traces under OTEL_EXPORTER_OTLP_ENDPOINT, as the OTLP/HTTP specification says.
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return OTLPSpanExporter()
    base = (settings.otel_exporter_otlp_endpoint or "").rstrip("/")
    return OTLPSpanExporter(endpoint=f"{base}/v1/traces")


class ScrubbingExporter(SpanExporter):
    """Passes each span on with what `scrub` masks in log lines masked in its name, status,
    attributes, events and links, and exception messages, stack traces and status descriptions
    dropped."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    # A status's description is an exception's text: only its code goes on.
    status = span.status
    if status.description:
        status = Status(status.status_code)
    return ReadableSpan(
        name=scrub(span.name),
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=[
            Event(scrub(e.name), scrub_attributes(e.attributes), e.timestamp) for e in span.events
        ],
        links=[Link(link.context, scrub_attributes(link.attributes)) for link in span.links],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in (attributes or {}).items():
        if key in DROPPED_ATTRIBUTES:
            continue
        phones = key not in ID_ATTRIBUTES
        if isinstance(value, str):
            clean[key] = scrub(value, phones=phones)
        elif isinstance(value, Sequence) and not isinstance(value, bytes):
            clean[key] = tuple(
                scrub(item, phones=phones) if isinstance(item, str) else item for item in value
            )
        else:
            clean[key] = value
    return clean
