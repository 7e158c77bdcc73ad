"""The time box of the batch loops that hand their rest over to a follow-on job.

sync_all, followups_tick and reactivations_tick each work through rows in batches, and stop
to enqueue a follow-on job rather than run past their attempt's timeout.
"""

from __future__ import annotations

import asyncio

from app.queue import JobContext

# Rows a batch loop takes per statement.
BATCH = 1_000
# A loop hands over when less than this, plus twice its slowest batch so far, is left of its
# attempt: room for one more batch as slow as the slowest, and for the hand-over itself.
RESERVE_S = 2.0


class TimeBox:
    """Times a job's batches and says when the next one might not fit in its attempt."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx
        self._clock = asyncio.get_running_loop().time
        self._started = self._clock()
        self.slowest_s = 0.0

    def start(self) -> None:
        """A batch begins."""
        self._started = self._clock()

    def out_of_time(self) -> bool:
        """The batch begun last is done: whether the rest should go to a follow-on job."""
        self.slowest_s = max(self.slowest_s, self._clock() - self._started)
        return self._ctx.time_left() < RESERVE_S + 2 * self.slowest_s
