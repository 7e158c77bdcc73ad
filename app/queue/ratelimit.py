"""Token buckets in Postgres, shared by every runner and worker: a rate limit on any key.

The queue knows nothing of what a key limits. Whoever calls a limited service takes a token
just before each call; with none to take, it raises `Throttled` (app/queue/retry.py), and the
job goes back until a token will be there, its attempt given back and no slot held meanwhile.

A bucket is GCRA (the generic cell rate algorithm): one instant per key, the earliest time the
next token is free, moved one interval on by each token taken. Tokens are evenly spaced, with
no burst. A take may reserve a token a little ahead and wait for it; a service's own "slow
down" (a 429's Retry-After) pushes the instant to when it said, so every process waits alike.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from app.db import Database
from app.queue.sql import QUERIES

# A refused take comes back after its wait plus up to this many intervals, so the jobs refused
# together do not all come back for the same token.
SPREAD_INTERVALS = 4.0
# Tokens are spaced this much wider than the rate asks: a call runs a little after its token
# when its event loop is busy, and the next one may run on time, so calls bunch slightly; the
# margin keeps every window under the limit all the same.
MARGIN = 1.03


@dataclass(frozen=True)
class Take:
    """A take's answer. Granted: the token is due in `wait_s` (wait, then call). Refused: no
    token for `wait_s`, nothing taken."""

    granted: bool
    wait_s: float


def interval_s(per_min: float) -> float:
    """Seconds between two tokens of a bucket allowing `per_min` takes a minute."""
    return 60.0 / per_min * MARGIN


async def take_token(db: Database, key: str, per_min: float, *, ahead_s: float = 0.0) -> Take:
    """Take one token of bucket `key` (`per_min` a minute), reserving it up to `ahead_s`
    seconds ahead."""
    async with db.acquire() as conn:
        row = await conn.fetchrow(QUERIES["take_token"], key, interval_s(per_min), float(ahead_s))
    return Take(row["granted"], float(row["wait_s"]))


def turn_after(wait_s: float, per_min: float) -> float:
    """When a job refused a token for `wait_s` should come back: its wait, spread a little."""
    return wait_s + random.uniform(0, SPREAD_INTERVALS * interval_s(per_min))


async def hold_off(db: Database, key: str, seconds: float) -> None:
    """No token of bucket `key` for the next `seconds`, whatever it held."""
    async with db.acquire() as conn:
        await conn.execute(QUERIES["hold_off_bucket"], key, float(seconds))
