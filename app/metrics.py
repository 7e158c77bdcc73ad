"""Prometheus metrics: what the queue is doing, by job type, never by anything about a lead.

Counters and histograms live in this process (an API process and a worker each export their
own); the queue's depth and the oldest due job's age are read from Postgres at scrape time (by
the route, with the queue's own statements), so every process reports the same, whole queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry()

JOBS_ENQUEUED = Counter(
    "handoff_jobs_enqueued",
    "Enqueue requests answered, by job type and whether an existing job absorbed them.",
    ["type", "deduplicated"],
    registry=REGISTRY,
)
ATTEMPT_SECONDS = Histogram(
    "handoff_job_attempt_duration_seconds",
    "Duration of job attempts, by job type and outcome.",
    ["type", "outcome"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
RUNNER_INVOCATIONS = Counter(
    "handoff_runner_invocations",
    "Runner invocations, by why they stopped.",
    ["stop_reason"],
    registry=REGISTRY,
)
WEBHOOK_REJECTIONS = Counter(
    "handoff_webhook_rejections",
    "Webhook deliveries refused, by reason (the error code answered).",
    ["reason"],
    registry=REGISTRY,
)
PROVIDER_CALLS = Counter(
    "handoff_provider_calls",
    "Outbound provider calls, by provider and status class (2xx ... 5xx, timeout, error).",
    ["provider", "status_class"],
    registry=REGISTRY,
)
MESSAGES_CUT = Counter(
    "handoff_message_text_truncated",
    "Messages stored with their text cut to the stored maximum, by channel.",
    ["channel"],
    registry=REGISTRY,
)
RUNNER_KICKS = Counter(
    "handoff_runner_kicks",
    "Runner kicks after a due job was enqueued, by outcome: started, coalesced (enough runners "
    "were on their way), or failed as timeout, error (no answer: refused, unreachable) or "
    "rejected (an answer other than 202).",
    ["outcome"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge(
    "handoff_queue_depth",
    "Jobs in the table, by status and type.",
    ["status", "type"],
    registry=REGISTRY,
)
OLDEST_DUE_AGE = Gauge(
    "handoff_oldest_due_job_age_seconds",
    "How long the oldest due pending job has been waiting (0 when none is due).",
    registry=REGISTRY,
)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def render(counts: Iterable[Mapping[str, Any]], oldest_due_age_s: float) -> bytes:
    """The exposition text, with the queue's state as just read
    (`app.queue.control.queue_state`: rows of status, type and count)."""
    QUEUE_DEPTH.clear()
    for row in counts:
        QUEUE_DEPTH.labels(row["status"], row["type"]).set(row["count"])
    OLDEST_DUE_AGE.set(oldest_due_age_s)
    return generate_latest(REGISTRY)
