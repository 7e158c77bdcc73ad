"""The queue core: enqueue, claim, run and record jobs. Knows nothing of what jobs do."""

from app.queue.enqueue import Enqueued, JobSpec, enqueue, enqueue_many
from app.queue.job import ClaimedJob, JobContext
from app.queue.registry import Handler, Registry, handler, registry
from app.queue.retry import Discard, RetryLater, Throttled, backoff_s
from app.queue.runner import DrainSummary, Runner

__all__ = [
    "ClaimedJob",
    "Discard",
    "DrainSummary",
    "Enqueued",
    "Handler",
    "JobContext",
    "JobSpec",
    "Registry",
    "RetryLater",
    "Runner",
    "Throttled",
    "backoff_s",
    "enqueue",
    "enqueue_many",
    "handler",
    "registry",
]
