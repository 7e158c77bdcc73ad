"""The budgeted runner: claim due jobs, run each under a timeout, record the outcome.

`Runner.drain(budget_s)` runs up to `concurrency` jobs at once until nothing is due or the
budget is spent. Its claim lets clients take turns and runs at most `client_concurrency` jobs
of one client at once, counted across every runner and worker (queries.sql, `claim`).

Each attempt is bounded by min(its timeout, what is left of the budget); an
attempt cut short by the budget is released back to `pending`, so when `drain` returns no job
it claimed is still `running`. Its claim-and-wait loop, `SlotLoop`, is the worker's too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from app.db import Database
from app.metrics import ATTEMPT_SECONDS, RUNNER_INVOCATIONS
from app.queue import hooks
from app.queue.job import ClaimedJob, JobContext
from app.queue.outcomes import Action, Outcome, OutcomeWriter, Record, Verdict, outcome_arrays
from app.queue.registry import Registry, UnknownJobType, registry
from app.queue.retry import Discard, RetryLater, Throttled, backoff_s
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
# When its jobs take less than a claim's round trip, a slot loop claims ahead: up to this many
# times its slots beyond those free, so one statement serves more jobs.
AHEAD_MAX = 3
# A job claimed ahead starts within this long or is given back: its lease runs from its claim.
AHEAD_WAIT_S = 1.0


def new_invocation_id() -> str:
    """A fresh runner invocation id. Its hex digits follow `run_` with no separator, so no run
    of them can pass for a phone number and be masked in the log lines that name it."""
    return f"run_{uuid.uuid4().hex[:12]}"


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
            "throttled": self.outcomes["throttled"],
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
        # How long a slot is held, a moving average (None: no slot given back yet).
        self.held_s: float | None = None

    @property
    def free(self) -> int:
        return self.size - self.busy

    def take(self) -> Callable[[], None]:
        """Hold one slot; the function returned gives it back (calling it again does nothing)."""
        self.busy += 1
        held = True
        taken = time.monotonic()

        def give_back() -> None:
            nonlocal held
            if held:
                held = False
                self.busy -= 1
                self.freed.set()
                took = time.monotonic() - taken
                self.held_s = took if self.held_s is None else 0.8 * self.held_s + 0.2 * took

        return give_back


class Runner:
    def __init__(
        self,
        db: Database,
        *,
        concurrency: int,
        job_timeout_s: float,
        lease_s: float,
        deps: Any = None,
        registry: Registry = registry,
        invocation_id: str | None = None,
        client_concurrency: int | None = None,
        fair: bool = True,
    ) -> None:
        """`client_concurrency`: the most jobs of one client running at once, across every
        runner and worker; None is half of `concurrency`, at least 1. `fair=False` claims in
        plain run_at order, with no turns, caps or priority (the benchmarks' baseline)."""
        self.db = db
        self.client_concurrency = (
            max(1, concurrency // 2) if client_concurrency is None else client_concurrency
        )
        self.fair = fair
        self.deps = deps
        self.job_timeout_s = job_timeout_s
        self.lease_s = lease_s
        self.registry = registry
        self.invocation_id = invocation_id or new_invocation_id()
        self.outcomes = OutcomeWriter(db, invocation_id=self.invocation_id)
        self.slots = Slots(concurrency)

    async def claim(self, limit: int) -> list[ClaimedJob]:
        """Lease up to `limit` due jobs to this runner. The outcomes its writer holds go in the
        same statement: stored first, then the claim, in one round trip and one commit."""
        token = str(uuid.uuid4())
        batch = self.outcomes.take()
        try:
            async with self.db.acquire() as conn:
                rows = await conn.fetch(
                    QUERIES["claim"],
                    *outcome_arrays([record for record, _ in batch]),
                    limit,
                    token,
                    self.invocation_id,
                    float(self.lease_s),
                    self.client_concurrency,
                    self.fair,
                )
        except Exception:
            self.outcomes.give_back(batch)
            raise
        except BaseException:
            self.outcomes.settle(batch, None)
            raise
        self.outcomes.settle(batch, {r["id"] for r in rows if r["stored"]})
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
            if not r["stored"]
        ]

    async def count_due(self) -> tuple[int, float]:
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
        attempts = SlotLoop(self, deadline)
        out_of_time = False
        try:
            while True:
                left = deadline - loop.time()
                out_of_time = left < MIN_CLAIM_S
                # Out of time, the fill only stores the outcomes it holds.
                await attempts.fill(claim=not out_of_time)
                if not attempts.in_flight:
                    break
                # Past the budget and its grace, stop waiting: the rest is cancelled below.
                if not await attempts.wait(at_most_s=max(left, 0) + CANCEL_GRACE_S):
                    break
        finally:
            await attempts.finish_in_flight()
        summary.outcomes = attempts.outcomes
        summary.released_stale = attempts.stale
        summary.remaining_due, summary.oldest_due_age_s = await self.count_due()
        summary.duration_ms = round((time.monotonic() - started) * 1000)
        cut_short = out_of_time or summary.outcomes["released"] > 0
        summary.stop_reason = "budget" if cut_short else "drained"
        # The summary kept for operators is the one answered and logged, stop_reason included.
        async with self.db.acquire() as conn:
            await conn.execute(
                QUERIES["record_invocation"],
                self.invocation_id,
                json.dumps(summary.as_dict()),
                time.monotonic() - started,
            )
        RUNNER_INVOCATIONS.labels(summary.stop_reason).inc()
        late = summary.oldest_due_age_s > OLDEST_DUE_WARN_S
        log.log(
            logging.WARNING if late else logging.INFO,
            "runner finished" + (": the oldest due job has waited too long" if late else ""),
            extra=summary.as_dict(),
        )
        return summary

    async def cancel_attempts(self, tasks: set[asyncio.Task[Outcome]]) -> list[Outcome]:
        """Cancel these attempts; each cancelled one releases its own job. The outcomes of
        those that ended within CANCEL_GRACE_S."""
        # One turn of the loop first: an attempt cancelled before it began would never run
        # the code that releases its job.
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        if not tasks:
            return []
        done, _ = await asyncio.wait(tasks, timeout=CANCEL_GRACE_S)
        return [t.result() for t in done if not t.cancelled()]

    def start(self, job: ClaimedJob, budget_deadline: float = math.inf) -> asyncio.Task[Outcome]:
        """Attempt `job` in a task of its own, holding one slot until its handler is done."""
        give_back = self.slots.take()
        task = asyncio.create_task(
            hooks.observed(self, job, self.attempt(job, budget_deadline, ran=give_back))
        )
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
        verdict = await self._run(job, started, budget_deadline)
        if ran is not None:
            ran()
        return await self._record(job, verdict, started)

    async def _run(self, job: ClaimedJob, started: float, budget_deadline: float) -> Verdict:
        """Call the job's handler and judge how it went."""
        error: str | None = None
        delay: float | None = None
        try:
            handler = self.registry.get(job.type)
        except UnknownJobType:
            return Verdict(Action.FAIL, "no handler for this job type")
        if job.attempt > job.max_attempts:
            return Verdict(Action.FAIL, "the runner was lost during the last attempt")
        timeout = min(handler.timeout_s or self.job_timeout_s, self.job_timeout_s)
        job_deadline = started + timeout
        deadline = min(job_deadline, budget_deadline)
        ctx = JobContext(job, self.db, self.deps, deadline)
        try:
            async with asyncio.timeout_at(deadline) as scope:
                await handler.fn(ctx)
        except asyncio.CancelledError:
            # Only cancel_attempts() cancels an attempt, when its runner must answer or its
            # worker stop: give the job back.
            return Verdict(Action.RELEASE, delay_s=RELEASE_DELAY_S)
        except TimeoutError:
            if not scope.expired():
                error = "TimeoutError raised by the handler"
            elif deadline < job_deadline:
                return Verdict(Action.RELEASE, delay_s=RELEASE_DELAY_S)
            else:
                error = f"attempt timed out after {timeout:g}s"
        except Throttled as exc:
            return Verdict(Action.THROTTLE, delay_s=exc.after)
        except RetryLater as exc:
            error, delay = str(exc), exc.after
        except Discard as exc:
            return Verdict(Action.FAIL, str(exc) or "discarded")
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
            return Verdict(Action.COMPLETE)
        if job.attempt >= job.max_attempts:
            return Verdict(Action.FAIL, error)
        return Verdict(Action.RETRY, error, backoff_s(job.attempt) if delay is None else delay)

    async def _record(self, job: ClaimedJob, verdict: Verdict, started: float) -> Outcome:
        stored = self.outcomes.submit(Record(job.id, job.token, verdict))
        try:
            updated = await asyncio.shield(stored)
        except asyncio.CancelledError:
            # The runner is answering: the write is already under way, so count what it did.
            updated = await stored
        # None: the write failed; the lease will expire and another runner takes the job.
        outcome = verdict.action.outcome if updated else "lease_lost"
        duration_ms = round((asyncio.get_running_loop().time() - started) * 1000)
        ATTEMPT_SECONDS.labels(job.type, outcome).observe(duration_ms / 1000)
        level = logging.WARNING if outcome in ("failed", "lease_lost") else logging.INFO
        delayed = verdict.action in (Action.RETRY, Action.THROTTLE)
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
                "error": verdict.error,
                "retry_in_s": round(verdict.delay_s, 3) if delayed else None,
            },
        )
        return outcome


class SlotLoop:
    """The claim and wait that the runner and the worker share: claim a job for each free slot
    and start it, then wait until a slot frees, an attempt ends or something the caller also
    waits on happens; at the end, cancel what is still in flight.

    While it turns, the runner's writer holds finished outcomes: each freed a slot, so the next
    claim follows and stores them in its own statement (one round trip for both). Outcomes no
    claim will carry soon are flushed: by a fill that claims nothing, by a wait that no freed
    slot ends at once, and at the finish.

    When jobs take less time than a claim's round trip, it claims ahead (up to AHEAD_MAX times
    its slots more) and starts those jobs as slots free, claiming again once none is left: one
    statement then stores and claims many more jobs than there are slots. A job claimed ahead
    that has not started within AHEAD_WAIT_S, or when the loop stops, is given back to
    `pending` with its attempt, ready at once."""

    def __init__(self, runner: Runner, budget_deadline: float = math.inf) -> None:
        self.runner = runner
        self.budget_deadline = budget_deadline
        self.in_flight: set[asyncio.Task[Outcome]] = set()
        self.outcomes: Counter[str] = Counter()
        self.stale = 0  # jobs claimed back from a runner whose lease expired
        self.ready: deque[tuple[ClaimedJob, float]] = deque()  # claimed ahead, when
        self.given_back: list[asyncio.Future[bool | None]] = []  # their writes, if not started
        self.round_trip_s = 0.0  # how long the last claim took
        runner.slots.freed.clear()
        runner.outcomes.hold()

    async def fill(self, claim: bool = True) -> bool:
        """Claim a job for each free slot and start it (`claim` False: only store the held
        outcomes, and give back what was claimed ahead). True when a slot was left empty (or
        none was free): nothing more is known to be due."""
        if not claim:
            self.give_back_ready()
            self.runner.outcomes.flush()
            return True
        self.start_ready()
        if self.ready:
            return False
        free = self.runner.slots.free
        limit = free + self.ahead()
        if limit == 0:
            self.runner.outcomes.flush()
            return True
        loop = asyncio.get_running_loop()
        sent = loop.time()
        claimed = await self.runner.claim(limit)
        now = loop.time()
        self.round_trip_s = now - sent
        for job in claimed:
            self.stale += job.stale
            self.ready.append((job, now))
        self.start_ready()
        return len(claimed) < limit

    def ahead(self) -> int:
        """How many jobs to claim beyond the free slots: as many as the slots would run during
        one round trip, at most AHEAD_MAX times the slots; none when jobs are slow or the
        lease leaves no room for a wait."""
        slots, runner = self.runner.slots, self.runner
        if slots.held_s is None or runner.lease_s - runner.job_timeout_s < 2 * AHEAD_WAIT_S:
            return 0
        rounds = self.round_trip_s / max(slots.held_s, 1e-6)
        return slots.size * min(AHEAD_MAX, int(rounds))

    def start_ready(self) -> None:
        """Start jobs claimed ahead in the free slots; give back those that waited too long."""
        slots = self.runner.slots
        now = asyncio.get_running_loop().time()
        while self.ready and slots.free > 0:
            job, claimed_at = self.ready.popleft()
            if now - claimed_at > AHEAD_WAIT_S:
                self.give_back(job)
            else:
                self.in_flight.add(self.runner.start(job, self.budget_deadline))

    def give_back_ready(self) -> None:
        while self.ready:
            self.give_back(self.ready.popleft()[0])

    def give_back(self, job: ClaimedJob) -> None:
        """A job claimed but never started goes back to `pending` with its attempt."""
        record = Record(job.id, job.token, Verdict(Action.RELEASE))
        self.given_back = [f for f in self.given_back if not f.done()]
        self.given_back.append(self.runner.outcomes.submit(record))

    async def wait(self, *also: asyncio.Future[Any], at_most_s: float | None) -> bool:
        """Wait until a slot frees (its outcome then goes with the next claim), an attempt ends
        or one of `also` is done. False: timed out."""
        slots = self.runner.slots
        if not slots.freed.is_set() and not self.ready:
            # No slot freed since the last wait: no claim is about to carry what is held.
            self.runner.outcomes.flush()
        freed = asyncio.ensure_future(slots.freed.wait())
        try:
            done, _ = await asyncio.wait(
                {*self.in_flight, freed, *also},
                timeout=at_most_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            freed.cancel()
        # Cleared before the next claim counts free slots: a slot freed after this still
        # wakes the next wait.
        slots.freed.clear()
        finished = {task for task in self.in_flight if task.done()}
        self.in_flight -= finished
        self.outcomes.update(task.result() for task in finished)
        return bool(done)

    async def finish_in_flight(self, grace_s: float = 0.0) -> None:
        """Give back what was claimed ahead; give the attempts in flight `grace_s` to end, then
        cancel the rest."""
        self.give_back_ready()
        self.runner.outcomes.release()
        if self.in_flight and grace_s > 0:
            await asyncio.wait(self.in_flight, timeout=grace_s)
        self.outcomes.update(await self.runner.cancel_attempts(self.in_flight))
        self.in_flight = set()
        # Stored (or failed) before the caller answers: no job claimed ahead is left running.
        await asyncio.gather(*self.given_back)
        self.given_back = []
