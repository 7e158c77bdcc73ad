"""Storing attempt outcomes: one lease-guarded statement for the attempts that finished together.

An attempt hands its outcome to its runner's `OutcomeWriter` and waits until it is stored.
While one write is on the wire, outcomes that finish meanwhile gather and go out together in
the next one: a group commit with no timer, so a lone outcome is written at once, and under
load one round trip and one commit serve many jobs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Literal

from app.db import Database
from app.queue.sql import QUERIES

log = logging.getLogger("handoff.runner")

Action = Literal["complete", "retry", "fail", "release"]
# The job's status after each action; a release also gives the attempt back.
STATUS: dict[Action, str] = {
    "complete": "succeeded",
    "retry": "pending",
    "fail": "failed",
    "release": "pending",
}


@dataclass(frozen=True)
class Record:
    job_id: int
    token: str
    action: Action
    delay_s: float = 0.0
    error: str | None = None


class OutcomeWriter:
    def __init__(self, db: Database, *, owner: str = "") -> None:
        self.db = db
        self.owner = owner
        self._waiting: list[tuple[Record, asyncio.Future[bool | None]]] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, record: Record) -> asyncio.Future[bool | None]:
        """Hand one outcome over; the future says how its write went. True: stored. False: the
        lease was lost, nothing changed. None: the database could not be reached; the lease
        will expire and the job run again. Once handed over, an outcome is written even if
        whoever waits on it is cancelled.
        """
        future: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((record, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write_all())
        return future

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                stored: set[int] | None = await self.write([r for r, _ in batch])
            except Exception:
                log.warning(
                    "could not record job outcomes",
                    exc_info=True,
                    extra={"jobs": len(batch), "invocation_id": self.owner},
                )
                stored = None
            except BaseException:
                # Cancelled (the loop is closing): nobody may wait on a write that never comes.
                for _, future in batch + self._waiting:
                    if not future.done():
                        future.set_result(None)
                self._waiting = []
                raise
            for record, future in batch:
                if not future.done():
                    future.set_result(None if stored is None else record.job_id in stored)

    async def write(self, records: list[Record]) -> set[int]:
        """Write `records` in one statement; the ids of the jobs whose lease still held."""
        records = sorted(records, key=lambda r: r.job_id)
        async with self.db.acquire() as conn:
            rows = await conn.fetch(
                QUERIES["record_outcomes"],
                [r.job_id for r in records],
                [r.token for r in records],
                [STATUS[r.action] for r in records],
                [float(r.delay_s) for r in records],
                [r.error for r in records],
                [r.action == "release" for r in records],
            )
        return {row["id"] for row in rows}
