"""The peers: procrastinate and pgqueuer, driven through their own public APIs.

Each peer gets a database of its own on the same server, its own schema as its installer
writes it, and its default (durable) settings. Where a peer offers a cheaper and a costlier
way to do the same thing, the benchmark uses the cheaper one, so a ratio never flatters
handoff by handicapping a peer; the choices are spelled out where they are made.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg

from bench.common import execute, recreate_db

# A job body: gets the job's payload (a dict; may be empty) and returns when done.
Body = Callable[[dict[str, Any]], Awaitable[None]]


async def _noop(_: dict[str, Any]) -> None:
    return None


class Procrastinate:
    name = "procrastinate"
    database = "bench_procrastinate"

    def __init__(self) -> None:
        self.url = ""
        self.app: Any = None
        self.task: Any = None

    async def create(self) -> None:
        import procrastinate

        self.url = await recreate_db(self.database)
        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self.url))
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    async def reset(self) -> None:
        await execute(
            self.url,
            "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers,"
            " procrastinate_workers RESTART IDENTITY CASCADE",
        )

    async def open(self, pool_size: int, body: Body | None = None) -> None:
        import procrastinate

        connector = procrastinate.PsycopgConnector(
            conninfo=self.url, min_size=pool_size, max_size=pool_size
        )
        self.app = procrastinate.App(connector=connector)

        run = body or _noop

        @self.app.task(name="job")
        async def job(**payload: Any) -> None:
            await run(payload)

        self.task = job
        await self.app.open_async()

    async def close(self) -> None:
        if self.app is not None:
            await self.app.close_async()
        self.app = None

    async def enqueue(self, key: str) -> None:
        # Plain defer_async, no queueing_lock: procrastinate's dedupe turns a duplicate into
        # an exception (AlreadyEnqueued), and a new key only adds a unique-index check.
        await self.task.defer_async(k=key)

    async def enqueue_batch(self, keys: list[str]) -> None:
        # batch_defer_async cannot deduplicate: one queueing_lock already taken rejects the
        # whole batch. So every job of the batch is inserted, duplicates included.
        await self.task.batch_defer_async(*({"k": k} for k in keys))

    async def prefill(self, count: int, payload: dict[str, Any] | None = None) -> None:
        for start in range(0, count, 1000):
            n = min(1000, count - start)
            await self.task.batch_defer_async(*({**(payload or {})} for _ in range(n)))

    async def drain(self, concurrency: int) -> None:
        """Run a worker until the queue is empty (wait=False), `concurrency` jobs at once."""
        await self.app.run_worker_async(
            concurrency=concurrency,
            wait=False,
            install_signal_handlers=False,
            # No LISTEN: the queue is full from the start, and wait=False stops at the first
            # empty fetch anyway.
            listen_notify=False,
            # Its default heartbeat (10 s) and stall checks are left as they are.
        )


class Pgqueuer:
    name = "pgqueuer"
    database = "bench_pgqueuer"
    entrypoint = "job"

    def __init__(self) -> None:
        self.url = ""
        self.pool: asyncpg.Pool | None = None
        self.queries: Any = None
        self.body: Body = _noop

    async def create(self) -> None:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        self.url = await recreate_db(self.database)
        conn = await asyncpg.connect(self.url)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    async def reset(self) -> None:
        await execute(
            self.url, "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics RESTART IDENTITY"
        )

    async def open(self, pool_size: int, body: Body | None = None) -> None:
        from pgqueuer.db import AsyncpgPoolDriver
        from pgqueuer.queries import Queries

        self.pool = await asyncpg.create_pool(self.url, min_size=pool_size, max_size=pool_size)
        self.queries = Queries(AsyncpgPoolDriver(self.pool))
        self.body = body or _noop

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        self.pool = None

    async def enqueue(self, key: str) -> None:
        # Plain enqueue, no dedupe_key (see Procrastinate.enqueue).
        await self.queries.enqueue(self.entrypoint, None)

    async def enqueue_batch(self, keys: list[str]) -> None:
        # pgqueuer deduplicates in bulk: dedupe_key per job, duplicates skipped.
        n = len(keys)
        await self.queries.enqueue(
            [self.entrypoint] * n, [None] * n, [0] * n, dedupe_key=keys, on_conflict="skip"
        )

    async def prefill(self, count: int, payload: dict[str, Any] | None = None) -> None:
        import json

        data = json.dumps(payload).encode() if payload else None
        for start in range(0, count, 1000):
            n = min(1000, count - start)
            await self.queries.enqueue([self.entrypoint] * n, [data] * n, [0] * n)

    def _manager(self, concurrency: int) -> Any:
        import json

        from pgqueuer.db import AsyncpgPoolDriver
        from pgqueuer.qm import QueueManager
        from pgqueuer.queries import Queries

        assert self.pool is not None
        qm = QueueManager(Queries(AsyncpgPoolDriver(self.pool)))
        body = self.body

        # "Concurrency 8" as pgqueuer spells it fastest: the entrypoint's concurrency_limit
        # (enforced in its dequeue statement) with batches of the same size. Its other knob,
        # max_concurrent_tasks (which needs batch_size <= half of it), drained about half as
        # fast at the same concurrency on this machine, so it is not used.
        @qm.entrypoint(self.entrypoint, concurrency_limit=concurrency)
        async def job(job: Any) -> None:
            await body(json.loads(job.payload) if job.payload else {})

        return qm

    async def drain(self, concurrency: int) -> None:
        """Run a queue manager in drain mode: it returns once the queue is empty."""
        from pgqueuer.types import QueueExecutionMode

        await self._manager(concurrency).run(
            mode=QueueExecutionMode.drain,
            batch_size=concurrency,
            dequeue_timeout=timedelta(seconds=1),
        )

    async def worker(self, stop: asyncio.Event, concurrency: int) -> None:
        """A long-running queue manager (LISTEN/NOTIFY), until `stop` is set."""
        qm = self._manager(concurrency)

        async def stopper() -> None:
            await stop.wait()
            qm.shutdown.set()

        watcher = asyncio.create_task(stopper())
        try:
            await qm.run(batch_size=concurrency)
        finally:
            watcher.cancel()


def quiet_peer_logs() -> None:
    """Both peers log every job at INFO; handoff's runner too. Keep all of them at WARNING."""
    for name in ("procrastinate", "pgqueuer", "handoff"):
        logging.getLogger(name).setLevel(logging.WARNING)
