"""Where an observer (app/tracing.py) plugs into the queue, so the queue imports none.

Both are module-level and set once at start-up; with nothing set they cost one call each.

- `traceparent()`: the W3C traceparent of the current trace, stored with a job when an
  enqueue creates it (never when it deduplicates).
- `attempt_observer`: wraps each attempt's coroutine (given the runner and the job) in the
  attempt's own task, so whatever the handler does runs inside it; it returns the attempt's
  outcome unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.queue.job import ClaimedJob
    from app.queue.outcomes import Outcome
    from app.queue.runner import Runner

AttemptObserver = Callable[
    ["Runner", "ClaimedJob", Coroutine[Any, Any, "Outcome"]], Coroutine[Any, Any, "Outcome"]
]


def no_traceparent() -> str | None:
    return None


traceparent: Callable[[], str | None] = no_traceparent
attempt_observer: AttemptObserver | None = None


def observed(
    runner: Runner, job: ClaimedJob, attempt: Coroutine[Any, Any, Outcome]
) -> Coroutine[Any, Any, Outcome]:
    """The attempt, wrapped by the observer when one is set."""
    if attempt_observer is None:
        return attempt
    return attempt_observer(runner, job, attempt)
