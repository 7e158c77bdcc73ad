"""Storing attempt outcomes: one lease-guarded statement for the attempts that finished together.

An attempt hands its outcome to its runner's `OutcomeWriter` and waits until it is stored.
While one write is on the wire, outcomes that finish meanwhile gather and go out together in
the next one: a group commit with no timer, so a lone outcome is written at once, and under
load one round trip and one commit serve many jobs.

While a runner's slot loop turns, the writer holds outcomes instead: each one freed a slot,
so the loop's next claim is on its way and carries them (`take`), storing them and claiming
the next jobs in one round trip. What the loop will not carry, it `flush`es.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

from app.db import Database
from app.queue.sql import QUERIES

log = logging.getLogger("handoff.runner")

# How an attempt is counted and logged: its action's, or lease_lost when its write changed nothing.
Outcome = Literal["succeeded", "retried", "failed", "released", "throttled", "lease_lost"]
# last_error keeps this many characters of an error.
LAST_ERROR_CHARS = 500


class Action(Enum):
    """What an attempt asks of its job: the job's status after it, and the attempt's outcome.
    A release and a throttle also give the attempt back."""

    COMPLETE = "succeeded", "succeeded", False
    RETRY = "pending", "retried", False
    FAIL = "failed", "failed", False
    RELEASE = "pending", "released", True
    THROTTLE = "pending", "throttled", True

    def __init__(self, status: str, outcome: Outcome, gives_back: bool) -> None:
        self.status = status
        self.outcome = outcome
        self.gives_back = gives_back


@dataclass(frozen=True)
class Verdict:
    """How an attempt went: what to do with its job, why (an error with no PII), and when the
    job may run again."""

    action: Action
    error: str | None = None
    delay_s: float = 0.0


@dataclass(frozen=True)
class Record:
    job_id: int
    token: str
    verdict: Verdict


# An outcome handed over and the future its attempt waits on.
Pending = tuple[Record, "asyncio.Future[bool | None]"]


class OutcomeWriter:
    def __init__(self, db: Database, *, invocation_id: str = "") -> None:
        self.db = db
        self.invocation_id = invocation_id
        self._waiting: list[Pending] = []
        self._task: asyncio.Task[None] | None = None
        self._held = False

    def submit(self, record: Record) -> asyncio.Future[bool | None]:
        """Hand one outcome over; the future says how its write went. True: stored. False: the
        lease was lost, nothing changed. None: the database could not be reached; the lease
        will expire and the job run again. Once handed over, an outcome is written even if
        whoever waits on it is cancelled.
        """
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, future))
        if not self._held:
            self.flush()
        return future

    def hold(self) -> None:
        """Keep outcomes for the next claim to carry (`take`) until `release`."""
        self._held = True

    def release(self) -> None:
        """Write outcomes on their own again, those held so far at once."""
        self._held = False
        self.flush()

    def flush(self) -> None:
        """Write the outcomes waiting now, unless a write already under way will."""
        if self._waiting and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._write_all())

    def take(self) -> list[Pending]:
        """The held outcomes, for a claim to store; hand each to `settle` (or `give_back`)."""
        if not self._held:
            return []
        batch, self._waiting = self._waiting, []
        return batch

    def give_back(self, batch: list[Pending]) -> None:
        """Outcomes taken by a claim that failed: written by the next claim or on their own."""
        self._waiting[:0] = batch
        if not self._held:
            self.flush()

    @staticmethod
    def settle(batch: list[Pending], stored: set[int] | None) -> None:
        """Tell each outcome's waiter how its write went (`stored`: None when it failed)."""
        for record, future in batch:
            if not future.done():
                future.set_result(None if stored is None else record.job_id in stored)

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                stored: set[int] | None = await self.write([r for r, _ in batch])
            except Exception:
                log.warning(
                    "could not record job outcomes",
                    exc_info=True,
                    extra={"jobs": len(batch), "invocation_id": self.invocation_id},
                )
                stored = None
            except BaseException:
                # Cancelled (the loop is closing): nobody may wait on a write that never comes.
                self.settle(batch + self._waiting, None)
                self._waiting = []
                raise
            self.settle(batch, stored)

    async def write(self, records: list[Record]) -> set[int]:
        """Write `records` in one statement; the ids of the jobs whose lease still held."""
        async with self.db.acquire() as conn:
            rows = await conn.fetch(QUERIES["record_outcomes"], *outcome_arrays(records))
        return {row["id"] for row in rows}


def outcome_arrays(records: list[Record]) -> list[list[Any]]:
    """`records` as the parallel arrays the outcome statements take, sorted by job id so
    overlapping writers lock rows in one order."""
    records = sorted(records, key=lambda r: r.job_id)
    verdicts = [r.verdict for r in records]
    return [
        [r.job_id for r in records],
        [r.token for r in records],
        [v.action.status for v in verdicts],
        [float(v.delay_s) for v in verdicts],
        [v.error[:LAST_ERROR_CHARS] if v.error else None for v in verdicts],
        [v.action.gives_back for v in verdicts],
    ]
