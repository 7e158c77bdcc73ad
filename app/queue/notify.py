"""Waking workers: NOTIFY when a due job is enqueued, coalesced and off the enqueue path.

A `pg_notify` inside the enqueue transaction would serialize every commit behind the notify
queue's lock. Instead, an enqueue that created a due job only pokes this process's Notifier,
which sends NOTIFY from a pooled connection of its own: at once when the enqueue has already
committed, after a short window when it is part of a transaction still open (so the job is
visible when workers look), and never more than one per window: a burst of enqueues wakes
workers once at its start and once more at the end of each window. A worker that misses one
still polls, so a lost notification costs latency, never a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from app.db import Database

CHANNEL = "handoff_jobs"
# At most one NOTIFY per window per process.
WINDOW_S = 0.02

log = logging.getLogger("handoff.notify")

# One Notifier per event loop (the app and a worker may share a process in tests and locally).
_notifiers: dict[asyncio.AbstractEventLoop, Notifier] = {}
# Whatever else wants to hear of a due job (the runner kicker), per event loop: each is called
# with `committed`, in the enqueueing task's context; each must be cheap and never raise.
_listeners: dict[asyncio.AbstractEventLoop, list[Callable[[bool], None]]] = {}


def job_due(*, committed: bool = True) -> None:
    """Called after enqueueing a job that is due now; cheap, never blocks, never fails.
    `committed`: False when the enqueue belongs to a transaction that is still open."""
    with contextlib.suppress(RuntimeError):
        loop = asyncio.get_running_loop()
        notifier = _notifiers.get(loop)
        if notifier is not None:
            notifier.poke(committed=committed)
        for listener in _listeners.get(loop, ()):
            listener(committed)


@contextlib.contextmanager
def listening(listener: Callable[[bool], None]) -> Iterator[None]:
    """Call `listener(committed)` on each due job enqueued in this event loop, in this block."""
    loop = asyncio.get_running_loop()
    _listeners.setdefault(loop, []).append(listener)
    try:
        yield
    finally:
        _listeners[loop].remove(listener)
        if not _listeners[loop]:
            del _listeners[loop]


class Notifier:
    def __init__(self, db: Database, window_s: float = WINDOW_S) -> None:
        self.db = db
        self.window_s = window_s
        self._pending = asyncio.Event()
        self._now = False  # a poke from an enqueue that has committed
        self._open = False  # a poke from an enqueue whose transaction may still be open
        self._task: asyncio.Task[None] | None = None

    def poke(self, *, committed: bool = True) -> None:
        if committed:
            self._now = True
        else:
            self._open = True
        self._pending.set()

    async def __aenter__(self) -> Notifier:
        _notifiers[asyncio.get_running_loop()] = self
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        _notifiers.pop(asyncio.get_running_loop(), None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            if not self._now:
                # Let the enqueue's own transaction commit first.
                await asyncio.sleep(self.window_s)
            # An open transaction's poke sent along with a committed one gets one more NOTIFY.
            again = self._now and self._open
            self._pending.clear()
            self._now = self._open = False
            try:
                async with self.db.acquire() as conn:
                    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
            except Exception:
                log.warning("could not notify workers", exc_info=True)
            # The pokes of the next window share one NOTIFY at its end.
            await asyncio.sleep(self.window_s)
            if again:
                self.poke()
