"""`python -m app.worker`: a long-running worker on the same settings as the API.

It drains continuously, wakes within a second of an enqueue (LISTEN/NOTIFY, polling as a
fallback), and on SIGTERM or SIGINT stops claiming, lets running jobs finish within a grace
period, releases the rest and exits 0 with no job left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid

import asyncpg

from app import tracing
from app.db import Database, asyncpg_dsn
from app.queue.retention import schedule_pruning
from app.queue.worker import Worker
from app.runtime import open_runtime
from app.settings import Settings, load_settings
from app.telemetry import configure_logging, log_context

PRUNE_EVERY_S = 600


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run one worker until `stop` is set."""
    invocation_id = f"worker-{uuid.uuid4().hex[:12]}"
    # Every line this worker logs, its notifier's and pruning's included, names it.
    log_context(invocation_id=invocation_id)
    tracing.setup(settings)
    async with open_runtime(settings) as runtime:
        if settings.listens_through_pooler:
            # A transaction-mode pooler runs LISTEN on whichever server connection that
            # statement gets and passes no notification on, so this worker does not LISTEN at
            # all: it polls.
            logging.getLogger("handoff.worker").warning(
                "DATABASE_URL goes through a transaction-mode pooler, where LISTEN receives no "
                "notifications, and DATABASE_DIRECT_URL is unset: this worker finds new jobs "
                "only by polling every %s s; set DATABASE_DIRECT_URL to the database's direct "
                "address",
                settings.worker_poll_interval_s,
            )
        direct = asyncpg_dsn(settings.direct_url or settings.database_url)
        listen = lambda: asyncpg.connect(direct, timeout=5)  # noqa: E731
        worker = Worker(
            runtime.runner(invocation_id),
            None if settings.listens_through_pooler else listen,
            poll_interval_s=settings.worker_poll_interval_s,
            grace_s=settings.worker_grace_s,
        )
        pruning = asyncio.create_task(keep_pruning(runtime.db, settings, stop))
        await worker.run(stop)
        await pruning


async def keep_pruning(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    """Upsert the hourly prune job now and then; the runner side does so on each call."""
    while not stop.is_set():
        try:
            async with db.acquire() as conn:
                await schedule_pruning(
                    conn, settings.job_retention_days, settings.failed_job_retention_days
                )
        except Exception:
            logging.getLogger("handoff.worker").warning("could not schedule pruning", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=PRUNE_EVERY_S)


def main() -> None:
    settings = load_settings()
    configure_logging()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(settings, stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
