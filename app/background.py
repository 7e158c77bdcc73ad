"""Work that goes on after its response: a runner kick, a kicked runner's drain.

Each task is kept here until it ends, so the process can wind them down when it stops. On
Vercel it is also handed to `wait_until` (the `vercel` package's functions API): an invocation
may be stopped once it has answered, and `wait_until` keeps it alive, up to the function's
maxDuration, until the task is done. Elsewhere (VERCEL_ENV unset) the process simply runs
the task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("handoff.background")


class Background:
    def __init__(self, *, on_vercel: bool) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        # Imported once, at start-up (it takes a tenth of a second), and only on Vercel:
        # elsewhere there is no invocation to keep alive.
        self.wait_until = vercel_wait_until() if on_vercel else None

    def start(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` in a task of its own, in the caller's context; on Vercel, the caller's
        invocation stays alive until the task ends."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._ended)
        if self.wait_until is not None:
            try:
                self.wait_until(task)
            except Exception:
                # The invocation of this context has ended: the task runs, unprotected.
                log.warning("could not keep the invocation alive for a task", exc_info=True)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed", exc_info=task.exception())

    async def aclose(self, grace_s: float) -> None:
        """Give the tasks `grace_s` to end, then cancel the rest and wait for their clean-up."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def vercel_wait_until() -> Callable[[Awaitable[object]], None] | None:
    """`vercel.functions.wait_until`, or None where the package is not installed."""
    try:
        from vercel.functions import wait_until
    except ImportError:
        return None
    return wait_until
