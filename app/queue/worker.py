"""The long-running worker: the runner's claim and attempt, in a loop that never ends on its own.

It keeps up to `concurrency` jobs running, claims again as soon as a slot frees, and otherwise
sleeps until a NOTIFY says a job is due or the poll interval passes (a notification may be
lost; the poll is the floor). On `stop` it claims nothing more, gives running jobs `grace_s`
to finish, then cancels the rest, which releases them to `pending` for any other worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from app.queue.notify import CHANNEL
from app.queue.runner import Runner, SlotLoop

log = logging.getLogger("handoff.worker")

# After a database error, wait this long before claiming again.
ERROR_PAUSE_S = 1.0


class Worker:
    def __init__(
        self,
        runner: Runner,
        listen: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
        *,
        poll_interval_s: float,
        grace_s: float,
    ) -> None:
        self.runner = runner
        self.listen = listen
        self.poll_interval_s = poll_interval_s
        self.grace_s = grace_s
        self.wakeup = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._listen_failing = False

    @property
    def invocation_id(self) -> str:
        return self.runner.invocation_id

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; return with no claimed job left running."""
        extra = {"invocation_id": self.invocation_id}
        log.info("worker started", extra=extra)
        attempts = SlotLoop(self.runner)
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                await self._ensure_listening()
                # Before the claim: a notification that arrives while it runs still wakes the
                # wait below.
                self.wakeup.clear()
                try:
                    caught_up = await attempts.fill()
                except Exception:
                    log.warning("claim failed", exc_info=True, extra=extra)
                    await asyncio.wait([stopping], timeout=ERROR_PAUSE_S)
                    continue
                if caught_up:
                    # Nothing more is due: also wake on a notification or the poll interval.
                    woken = asyncio.create_task(self.wakeup.wait())
                    try:
                        await attempts.wait(stopping, woken, at_most_s=self.poll_interval_s)
                    finally:
                        woken.cancel()
                else:
                    await attempts.wait(stopping, at_most_s=None)
        finally:
            stopping.cancel()
            await attempts.finish_in_flight(self.grace_s)
            await self._unlisten()
            log.info("worker stopped", extra=extra)

    def _notified(self, *_: object) -> None:
        self.wakeup.set()

    async def _ensure_listening(self) -> None:
        if self.listen is None or (self._listener is not None and not self._listener.is_closed()):
            return
        try:
            self._listener = await self.listen()
            await self._listener.add_listener(CHANNEL, self._notified)
        except Exception:
            # Polling carries on; the next loop tries again, and says so only once per outage.
            if not self._listen_failing:
                log.warning(
                    "cannot listen for notifications; polling",
                    extra={"invocation_id": self.invocation_id},
                )
            self._listen_failing = True
            self._listener = None
        else:
            if self._listen_failing:
                log.info(
                    "listening for notifications again", extra={"invocation_id": self.invocation_id}
                )
            self._listen_failing = False

    async def _unlisten(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=2)
