"""Waking workers: NOTIFY when a due job is enqueued, coalesced and off the enqueue path.

A `pg_notify` inside the enqueue transaction would serialize every commit behind the notify
queue's lock. Instead, an enqueue that created a due job only pokes this process's Notifier,
which sends one NOTIFY per short window from a pooled connection of its own. A worker that
misses one still polls, so a lost notification costs latency, never a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.db import Database

CHANNEL = "handoff_jobs"
# At most one NOTIFY per window per process: a burst of enqueues wakes workers once.
WINDOW_S = 0.02

log = logging.getLogger("handoff.notify")

# One Notifier per event loop (the app and a worker may share a process in tests and locally).
_notifiers: dict[asyncio.AbstractEventLoop, Notifier] = {}


def job_due() -> None:
    """Called after enqueueing a job that is due now; cheap, never blocks, never fails."""
    with contextlib.suppress(RuntimeError):
        notifier = _notifiers.get(asyncio.get_running_loop())
        if notifier is not None:
            notifier.poke()


class Notifier:
    def __init__(self, db: Database, window_s: float = WINDOW_S) -> None:
        self.db = db
        self.window_s = window_s
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
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
            # Let the enqueue's own transaction commit first, and gather the rest of a burst.
            await asyncio.sleep(self.window_s)
            self._pending.clear()
            try:
                async with self.db.acquire() as conn:
                    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
            except Exception:
                log.warning("could not notify workers", exc_info=True)
