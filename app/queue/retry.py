"""Retry policy: a pure backoff function and the two exceptions a handler raises to steer it.

    Exception
     ├── RetryLater(after=)   try again after this many seconds (a 429's Retry-After), or
     │                        after the policy's backoff when `after` is None
     ├── Throttled(after=)    not yet: a rate limit has no token for this job for `after`
     │                        seconds; the job goes back to wait for it, the attempt given back
     └── Discard              give up now: the job is failed with this message

Any other exception fails the attempt; the job is retried with `backoff_s` until it runs out
of attempts. Messages of RetryLater and Discard are stored as `last_error`, so they must hold
no PII; a throttle leaves last_error as it was.
"""

from __future__ import annotations

import random

BASE_S = 1.0
CAP_S = 300.0
JITTER = 0.2


class RetryLater(Exception):
    """Run the job again after `after` seconds, or after the backoff (counts as an attempt)."""

    def __init__(self, reason: str, *, after: float | None = None) -> None:
        super().__init__(reason)
        self.after = None if after is None else max(0.0, after)


class Throttled(Exception):
    """Put the job back until `after` seconds from now, without counting the attempt: it was
    stopped before doing anything, because a rate limit has no token for it yet."""

    def __init__(self, reason: str, *, after: float) -> None:
        super().__init__(reason)
        self.after = max(0.0, after)


class Discard(Exception):
    """Fail the job now, without further attempts."""


def backoff_s(attempt: int, *, base: float = BASE_S, cap: float = CAP_S) -> float:
    """Delay before the attempt after `attempt` (1-based): ~1 s, ~2 s, ~4 s ... capped, ±20 %."""
    raw = base * 2 ** min(max(attempt - 1, 0), 32)
    return min(cap, raw) * random.uniform(1 - JITTER, 1 + JITTER)
