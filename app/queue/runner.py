"""The budgeted runner: claim due jobs, run each under a timeout, record the outcome.

`Runner.drain(budget_s)` runs up to `concurrency` jobs at once until nothing is due or the
budget is spent. Each attempt is bounded by min(its timeout, what is left of the budget); an
attempt cut short by the budget is released back to `pending`, so when `drain` returns no job
it claimed is still `running`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import Database
from app.metrics import ATTEMPT_SECONDS, RUNNER_INVOCATIONS
from app.queue.outcomes import Action, OutcomeWriter, Record
from app.queue.registry import Registry, UnknownJobType, registry
from app.queue.retry import Discard, RetryLater, backoff_s
from app.queue.sql import QUERIES

log = logging.getLogger("handoff.runner")

# Below this much budget no new job is claimed: it could do no useful work.
MIN_CLAIM_S = 1.0
# How long past the budget stragglers that ignore cancellation may take before we stop waiting.
CANCEL_GRACE_S = 1.0
# Delay before a released job may be claimed again.
RELEASE_DELAY_S = 1.0
# A runner's summary is logged as a warning when the oldest due job has waited longer.
OLDEST_DUE_WARN_S = 300.0

Outcome = Literal["succeeded", "retried", "failed", "released", "lease_lost"]


def new_invocation_id() -> str:
    """A fresh runner invocation id. Its hex digits follow `run_` with no separator, so no run
    of them can pass for a phone number and be masked in the log lines that name it."""
    return f"run_{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    type: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    client_id: str | None
    lead_id: str | None
    dedupe_key: str
    stale: bool
    token: str


@dataclass
class JobContext:
    """What a handler gets: its job, the database, the app's dependencies and its deadline."""

    job: ClaimedJob
    db: Database
    deps: Any
    deadline: float  # on the event loop's clock

    @property
    def engine(self) -> AsyncEngine:
        return self.db.engine

    def time_left(self) -> float:
        return self.deadline - asyncio.get_running_loop().time()


@dataclass
class DrainSummary:
    invocation_id: str
    outcomes: Counter[str] = field(default_factory=Counter)
    released_stale: int = 0
    remaining_due: int = 0
    oldest_due_age_s: float = 0.0
    duration_ms: int = 0
    stop_reason: Literal["drained", "budget"] = "drained"

    def as_dict(self) -> dict[str, Any]:
        return {
            "invocation_id": self.invocation_id,
            "processed": sum(self.outcomes.values()),
            "succeeded": self.outcomes["succeeded"],
            "retried": self.outcomes["retried"],
            "failed": self.outcomes["failed"],
            "released": self.outcomes["released"],
            "released_stale": self.released_stale,
            "remaining_due": self.remaining_due,
            "oldest_due_age_s": self.oldest_due_age_s,
            "duration_ms": self.duration_ms,
            "stop_reason": self.stop_reason,
        }


class Slots:
    """How many handlers may run at once. A slot frees when its handler is done, while its
    outcome may still be on its way to the database."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self.freed = asyncio.Event()

    @property
    def free(self) -> int:
        return self.size - self.busy

    def take(self) -> Callable[[], None]:
        """Hold one slot; the function returned gives it back (calling it again does nothing)."""
        self.busy += 1
        held = True

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self.busy -= 1
                self.freed.set()

        return give_back


class Runner:
    def __init__(
        self,
        db: Database,
        *,
        deps: Any = None,
        concurrency: int = 4,
        job_timeout_s: float = 120,
        lease_s: float = 150,
        jobs: Registry = registry,
        invocation_id: str | None = None,
    ) -> None:
        self.db = db
        self.deps = deps
        self.job_timeout_s = job_timeout_s
        self.lease_s = lease_s
        self.jobs = jobs
        self.invocation_id = invocation_id or new_invocation_id()
        self.outcomes = OutcomeWriter(db, owner=self.invocation_id)
        self.slots = Slots(concurrency)

    async def claim(self, limit: int) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs to this runner."""
        token = str(uuid.uuid4())
        async with self.db.acquire() as conn:
            rows = await conn.fetch(
                QUERIES["claim"], limit, token, self.invocation_id, float(self.lease_s)
            )
        return [
            ClaimedJob(
                r["id"],
                r["type"],
                json.loads(r["payload"]),
                r["attempts"],
                r["max_attempts"],
                r["client_id"],
                r["lead_id"],
                r["dedupe_key"],
                r["stale"],
                token,
            )
            for r in rows
        ]

    async def due(self) -> tuple[int, float]:
        """How many jobs the next runner would find, and how long the oldest due one waited."""
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(QUERIES["count_due"])
        return int(row["due"]), round(float(row["oldest_s"]), 3)

    async def drain(self, budget_s: float) -> DrainSummary:
        """Run due jobs until none is due or the budget is spent; never leave one running."""
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        deadline = loop.time() + budget_s
        summary = DrainSummary(self.invocation_id)
        in_flight: set[asyncio.Task[Outcome]] = set()
        out_of_time = False
        try:
            while True:
                left = deadline - loop.time()
                out_of_time = left < MIN_CLAIM_S
                self.slots.freed.clear()
                if self.slots.free > 0 and not out_of_time:
                    for job in await self.claim(self.slots.free):
                        summary.released_stale += job.stale
                        in_flight.add(self.start(job, deadline))
                if not in_flight:
                    break
                # Wake when a handler is done (its slot is free while its outcome is being
                # written, so the next claim overlaps that write) or an attempt has ended.
                freed = asyncio.ensure_future(self.slots.freed.wait())
                done, _ = await asyncio.wait(
                    {*in_flight, freed},
                    timeout=max(left, 0) + CANCEL_GRACE_S,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                freed.cancel()
                if not done:
                    break
                finished = {task for task in in_flight if task.done()}
                in_flight -= finished
                summary.outcomes.update(task.result() for task in finished)
        finally:
            summary.outcomes.update(await self.stop(in_flight))
        summary.remaining_due, summary.oldest_due_age_s = await self.due()
        summary.duration_ms = round((time.monotonic() - started) * 1000)
        cut_short = out_of_time or summary.outcomes["released"] > 0
        summary.stop_reason = "budget" if cut_short else "drained"
        # The summary kept for operators is the one answered and logged, stop_reason included.
        async with self.db.acquire() as conn:
            await conn.execute(
                QUERIES["record_invocation"], self.invocation_id, json.dumps(summary.as_dict())
            )
        RUNNER_INVOCATIONS.labels(summary.stop_reason).inc()
        late = summary.oldest_due_age_s > OLDEST_DUE_WARN_S
        log.log(
            logging.WARNING if late else logging.INFO,
            "runner finished" + (": the oldest due job has waited too long" if late else ""),
            extra=summary.as_dict(),
        )
        return summary

    async def stop(self, tasks: set[asyncio.Task[Outcome]]) -> list[Outcome]:
        """Cancel what is still in flight; each cancelled attempt releases its own job."""
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        done, _ = await asyncio.wait(tasks, timeout=CANCEL_GRACE_S)
        return [t.result() for t in done if not t.cancelled()]

    def start(self, job: ClaimedJob, budget_deadline: float = math.inf) -> asyncio.Task[Outcome]:
        """Attempt `job` in a task of its own, holding one slot until its handler is done."""
        give_back = self.slots.take()
        task = asyncio.create_task(self.attempt(job, budget_deadline, ran=give_back))
        task.add_done_callback(lambda _: give_back())
        return task

    async def attempt(
        self,
        job: ClaimedJob,
        budget_deadline: float = math.inf,
        *,
        ran: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run one claimed job once, within its timeout and the budget, and record how it went.

        `ran` is called once the handler is done, before the outcome is written."""
        started = asyncio.get_running_loop().time()
        action, error, delay = await self._run(job, started, budget_deadline)
        if ran is not None:
            ran()
        return await self._record(job, action, started, error=error, delay=delay)

    async def _run(
        self, job: ClaimedJob, started: float, budget_deadline: float
    ) -> tuple[Action, str | None, float]:
        """Call the job's handler; what to record: the action, the error and the delay."""
        error: str | None = None
        delay: float | None = None
        try:
            handler = self.jobs.get(job.type)
        except UnknownJobType:
            return "fail", "no handler for this job type", 0.0
        if job.attempt > job.max_attempts:
            return "fail", "the runner was lost during the last attempt", 0.0
        timeout = min(handler.timeout_s or self.job_timeout_s, self.job_timeout_s)
        job_deadline = started + timeout
        deadline = min(job_deadline, budget_deadline)
        ctx = JobContext(job, self.db, self.deps, deadline)
        try:
            async with asyncio.timeout_at(deadline) as scope:
                await handler.fn(ctx)
        except asyncio.CancelledError:
            # Only drain() cancels an attempt, when it must answer: give the job back.
            return "release", None, RELEASE_DELAY_S
        except TimeoutError:
            if not scope.expired():
                error = "TimeoutError raised by the handler"
            elif deadline < job_deadline:
                return "release", None, RELEASE_DELAY_S
            else:
                error = f"attempt timed out after {timeout:g}s"
        except RetryLater as exc:
            error, delay = str(exc), exc.after
        except Discard as exc:
            return "fail", str(exc) or "discarded", 0.0
        except Exception as exc:
            error = f"unexpected error: {type(exc).__name__}"
            log.warning(
                "job raised",
                exc_info=True,
                extra={
                    "job_id": str(job.id),
                    "type": job.type,
                    "invocation_id": self.invocation_id,
                },
            )
        else:
            return "complete", None, 0.0
        if job.attempt >= job.max_attempts:
            return "fail", error, 0.0
        return "retry", error, backoff_s(job.attempt) if delay is None else delay

    async def _record(
        self,
        job: ClaimedJob,
        action: Action,
        started: float,
        *,
        error: str | None = None,
        delay: float = 0.0,
    ) -> Outcome:
        outcome: Outcome = {
            "complete": "succeeded",
            "retry": "retried",
            "fail": "failed",
            "release": "released",
        }[action]
        record = Record(job.id, job.token, action, delay, error[:500] if error else None)
        stored = self.outcomes.submit(record)
        try:
            updated = await asyncio.shield(stored)
        except asyncio.CancelledError:
            # drain() is answering: the write is already under way, so count what it did.
            updated = await stored
        if not updated:
            # None: the write failed; the lease will expire and another runner takes the job.
            outcome = "lease_lost"
        duration_ms = round((asyncio.get_running_loop().time() - started) * 1000)
        ATTEMPT_SECONDS.labels(job.type, outcome).observe(duration_ms / 1000)
        level = logging.WARNING if outcome in ("failed", "lease_lost") else logging.INFO
        log.log(
            level,
            "job attempt finished",
            extra={
                "job_id": str(job.id),
                "type": job.type,
                "outcome": outcome,
                "attempt": job.attempt,
                "duration_ms": duration_ms,
                "lead_id": job.lead_id,
                "invocation_id": self.invocation_id,
                "error": error,
                "retry_in_s": round(delay, 3) if action == "retry" else None,
            },
        )
        return outcome
