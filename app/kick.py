"""Runner kicks: once an enqueue has committed a due job, a runner is on its way at once
instead of at the next minute's cron.

The kick is an HTTP call to the runner route (`RUNNER_KICK_URL`; on Vercel, by default, the
deployment's own `/api/cron/background-jobs`) with the cron's bearer secret and a kick token in
`x-handoff-kick`. The runner takes up the kick's slot, answers 202 at once and drains after its
answer, so neither the enqueueing request nor the kick waits for the drain; both are kept alive
past their responses by `app.background` (Vercel's `wait_until`).

Bounded and coalesced in Postgres (`app.queue.kicks`): at most RUNNER_KICK_MAX kicked runners
on their way or running at once, at most one new kick per WINDOW_S, and a kicked runner that
finds jobs still due once it has let its slot go kicks once more. In each process one kick is
under way at a time; enqueues meanwhile only ask for another after it.

Nothing depends on a kick: one that fails, hangs or is refused is logged, counted in
`handoff_runner_kicks_total`, frees its slot, and the cron runner drains what it would have.
After a failure this process sends no kick for FAILURE_BACKOFF_S.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx

from app import tracing
from app.background import Background
from app.db import Database
from app.metrics import RUNNER_KICKS
from app.queue import Runner
from app.queue.kicks import KickSlots
from app.queue.notify import WINDOW_S as COMMIT_WAIT_S
from app.settings import Settings
from app.telemetry import register_secret

log = logging.getLogger("handoff.kick")

RUNNER_PATH = "/api/cron/background-jobs"
KICK_HEADER = "x-handoff-kick"
BYPASS_HEADER = "x-vercel-protection-bypass"
# The runner answers a kick before it drains: a kick not answered by then has failed.
KICK_TIMEOUT_S = 5.0
# At most one new kick per window, across every process: a burst adds one runner per window.
WINDOW_S = 0.1
# After a failed kick this process sends none for this long (one warning, not one per enqueue).
FAILURE_BACKOFF_S = 5.0
# One task kicks for at most this long before handing on to a task of the latest enqueue's.
HAND_ON_S = 2.0
# A slot that no runner took up lapses after this (its kicker died before giving it up).
UNCONFIRMED_S = 2 * KICK_TIMEOUT_S
# A runner's slot lapses this long after the longest its function may run (it died).
HELD_GRACE_S = 60.0
# Jobs that became due this long before a runner's kick, or later, may have come after its
# last look; once its slot is free it kicks again for them (see Kicker._drain).
FRESH_S = 1.0


def kick_url(settings: Settings) -> str | None:
    """Where kicks go: RUNNER_KICK_URL; on Vercel, unset, this deployment's runner route (in
    production by its production domain, in a preview by the deployment's own URL, so a preview
    never kicks production); elsewhere, `vercel dev` and a pulled `.env` included, none."""
    if settings.runner_kick_url:
        return settings.runner_kick_url
    hosts = {
        "production": settings.vercel_project_production_url,
        "preview": settings.vercel_url,
    }
    host = hosts.get(settings.vercel_env or "")
    return f"https://{host}{RUNNER_PATH}" if host else None


def loggable(url: str) -> str:
    """The URL without credentials, query or fragment: safe for a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class Kicker:
    def __init__(
        self, settings: Settings, db: Database, http: httpx.AsyncClient, background: Background
    ) -> None:
        self.url = kick_url(settings)
        self.http = http
        self.background = background
        self.slots = KickSlots(
            db,
            size=settings.runner_kick_max,
            window_s=WINDOW_S,
            unconfirmed_s=UNCONFIRMED_S,
            held_s=settings.runner_max_duration_s + HELD_GRACE_S,
        )
        self.headers = {"Authorization": f"Bearer {settings.cron_secret}"}
        if settings.vercel_automation_bypass_secret:
            register_secret(settings.vercel_automation_bypass_secret)
            self.headers[BYPASS_HEADER] = settings.vercel_automation_bypass_secret
        # On Vercel without CRON_SECRET the runner route answers 503: nothing to kick.
        self.enabled = self.url is not None and bool(settings.cron_secret)
        if self.url is not None and not self.enabled:
            log.warning("runner kicks are off: CRON_SECRET is not set")
        self._again = False  # an enqueue asked for a kick since the last one began
        self._open = False  # ... and its transaction may still have been open
        self._asker = contextvars.copy_context()  # the context of the latest enqueue that asked
        self._task: asyncio.Task[None] | None = None
        self._quiet_until = 0.0

    def poke(self, committed: bool = True) -> None:
        """A due job was enqueued: make sure a kick follows. Cheap, never blocks, never raises;
        called in the enqueueing request's context, whose invocation the kick keeps alive."""
        if not self.enabled:
            return
        self._again = True
        self._open = self._open or not committed
        self._asker = contextvars.copy_context()
        if self._task is None or self._task.done():
            self._task = self.background.start(self._kick_while_asked())

    async def _kick_while_asked(self) -> None:
        loop = asyncio.get_running_loop()
        hand_on_at = loop.time() + HAND_ON_S
        while self._again:
            if loop.time() >= hand_on_at:
                # This task keeps alive the invocation that started it; under steady enqueues
                # it would do so for good. The next kicks go to a task of the latest asker's.
                self._task = self._asker.run(self.background.start, self._kick_while_asked())
                return
            if loop.time() < self._quiet_until:
                self._again = self._open = False
                return
            if self._open:
                # Let the enqueue's own transaction commit first, as the notifier does.
                await asyncio.sleep(COMMIT_WAIT_S)
            self._again = self._open = False
            try:
                await self._kick_once()
            except Exception:
                # The database is down, most likely: the cron runner drains later.
                RUNNER_KICKS.labels("error").inc()
                self._quiet_until = loop.time() + FAILURE_BACKOFF_S
                log.warning("runner kick failed: no slot could be taken", exc_info=True)
            if self._again:
                await asyncio.sleep(WINDOW_S)

    async def _kick_once(self) -> None:
        token = await self.slots.acquire()
        if token is None:
            RUNNER_KICKS.labels("coalesced").inc()
            return
        outcome, detail = await self._send(token)
        RUNNER_KICKS.labels(outcome).inc()
        if outcome == "started":
            return
        await self.slots.give_up(token)
        self._quiet_until = asyncio.get_running_loop().time() + FAILURE_BACKOFF_S
        log.warning(
            "runner kick failed; the cron runner drains instead",
            extra={"outcome": outcome, "kick_url": loggable(str(self.url)), **detail},
        )

    async def _send(self, token: uuid.UUID) -> tuple[str, dict[str, object]]:
        headers = {**self.headers, KICK_HEADER: str(token)}
        try:
            response = await self.http.post(str(self.url), headers=headers, timeout=KICK_TIMEOUT_S)
        except httpx.TimeoutException:
            return "timeout", {"timeout_s": KICK_TIMEOUT_S}
        except httpx.HTTPError as error:
            return "error", {"error_type": type(error).__name__}
        if response.status_code == 202:
            return "started", {}
        return "rejected", {"status": response.status_code}

    async def take_up(self, token: str, runner: Runner, budget_s: float) -> str | None:
        """The runner's side of a kick: hold its slot and drain after answering. The drain's
        invocation id, or None when the slot is not held (the kick was given up or lapsed)."""
        try:
            parsed = uuid.UUID(token)
        except ValueError:
            return None
        kicked_at = await self.slots.confirm(parsed)
        if kicked_at is None:
            return None
        since = kicked_at - timedelta(seconds=FRESH_S)
        self.background.start(self._drain(parsed, runner, budget_s, since))
        return runner.invocation_id

    async def _drain(
        self, token: uuid.UUID, runner: Runner, budget_s: float, since: datetime
    ) -> None:
        processed = 0
        try:
            summary = await tracing.drain(runner, budget_s)
            processed = sum(summary.outcomes.values())
        finally:
            due = await self.slots.release(token, since)
        # A job that came while this runner held its slot may have had its kick refused, and
        # this runner may have looked for the last time before it came: counted once the slot
        # was free, it gets a kick now. Jobs due since before this runner's kick it would have
        # claimed, so it kicks for those only if it ran anything: a job no runner can claim
        # (its row locked elsewhere) is never kicked for in a loop.
        if due.fresh or (due.all and processed):
            self.poke()
