"""B11 `real_handler_drain`: the app's own `conversation_sync` handler, drained by the runner,
against procrastinate making the same GET per job.

Each job syncs one lead's SMS history from the local provider (bench/http.py), which answers
every request at once with an empty history: what a job costs is then the queue, the handler's
own work (its lead read, its provider client, its empty store) and one HTTP round trip. Both
systems call the provider through the same HTTP client, the one the app builds
(`app.runtime.provider_http`), so neither is handicapped by its client.

`python -m bench.handlers profile [--count N] [--cprofile FILE]` runs one handoff drain on its
own (no peers, no rounds), to be profiled from outside (py-spy) or with cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from bench.common import (
    Check,
    CpuPerJob,
    Row,
    Settings,
    apply_handoff_schema,
    checkpoint,
    drop_db,
    execute,
    fetchval,
    open_handoff,
    per_round,
    recreate_db,
    reset_handoff,
    rotated,
    warm_pool,
)
from bench.drain import CONCURRENCY, DRAIN_BUDGET_S, JOB_TIMEOUT_S, LEASE_S, POOL_SIZE
from bench.peers import Procrastinate

HANDLERS_DB = "bench_handoff_handlers"
CLIENT = "bench"
SYSTEMS = ["handoff runner", "procrastinate"]


def app_settings(provider_url: str) -> Any:
    """The app's settings with the local provider as its SMS provider, nothing from the
    environment."""
    from app.settings import Settings as AppSettings

    return AppSettings(_env_file=None, sms_provider_url=provider_url, sms_provider_key="bench")


async def seed_leads(url: str, count: int) -> None:
    """One client and `count` leads, each with an SMS contact."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("INSERT INTO clients (id, name) VALUES ($1, 'Bench')", CLIENT)
        await conn.executemany(
            "INSERT INTO leads (id, client_id, sms_contact_id) VALUES ($1, $2, $3)",
            [(f"L{n}", CLIENT, f"s{n}") for n in range(count)],
        )
        await conn.execute("ANALYZE leads")
    finally:
        await conn.close()


async def fill_syncs(url: str, count: int) -> None:
    """One `conversation_sync` (SMS) per lead, as sync_all enqueues them, then ANALYZE."""
    from app.queue import JobSpec, enqueue_many

    conn = await asyncpg.connect(url)
    try:
        for start in range(0, count, 1000):
            specs = [
                JobSpec((f"L{n}", "sms"), CLIENT, f"L{n}", {"channel": "sms"})
                for n in range(start, min(count, start + 1000))
            ]
            await enqueue_many(conn, "conversation_sync", specs)
        await conn.execute("ANALYZE jobs")
    finally:
        await conn.close()


class HandlerDrains:
    """The handler's database and procrastinate's; one provider and one HTTP client."""

    def __init__(self, provider_url: str, http: httpx.AsyncClient, count: int) -> None:
        self.provider_url = provider_url
        self.http = http
        self.count = count
        self.url = ""
        self.procrastinate = Procrastinate()
        self.cpu = CpuPerJob()

    async def create(self, peers: bool = True) -> None:
        self.url = await recreate_db(HANDLERS_DB)
        await apply_handoff_schema(self.url)
        await seed_leads(self.url, self.count)
        if peers:
            await self.procrastinate.create()

    async def drop(self) -> None:
        for name in (HANDLERS_DB, Procrastinate.database):
            await drop_db(name)

    async def handoff(self, url: str | None = None) -> float:
        """Jobs per second for one runner call draining `count` conversation_syncs."""
        from app.handlers import Providers
        from app.queue import Runner

        url = url or self.url
        count = self.count
        await reset_handoff(url)
        await execute(url, "TRUNCATE messages")
        await fill_syncs(url, count)
        await checkpoint()
        db = await open_handoff(url, POOL_SIZE)
        # One client owns every lead: its share of the runner is the whole runner here.
        runner = Runner(
            db,
            concurrency=CONCURRENCY,
            client_concurrency=CONCURRENCY,
            job_timeout_s=JOB_TIMEOUT_S,
            lease_s=LEASE_S,
            deps=Providers(app_settings(self.provider_url), self.http),
        )
        try:
            await warm_pool(db, CONCURRENCY)
            started = time.perf_counter()
            with self.cpu.measure("handoff runner", lambda: count):
                summary = await runner.drain(DRAIN_BUDGET_S)
            elapsed = time.perf_counter() - started
        finally:
            await db.close()
        assert summary.outcomes["succeeded"] == count, summary.as_dict()
        return count / elapsed

    async def peer(self, url: str | None = None) -> float:
        """Jobs per second for procrastinate, each job one GET of the same history."""
        peer = self.procrastinate
        if url is not None:
            peer.url = url
        history = f"{self.provider_url}/contacts/s0/messages"
        http = self.http

        async def body(_payload: dict[str, Any]) -> None:
            response = await http.get(history, headers={"Authorization": "Bearer bench"})
            response.raise_for_status()
            response.json()

        await peer.reset()
        await peer.open(POOL_SIZE, body)
        try:
            await peer.prefill(self.count, {"lead": "L0"})
            await execute(peer.url, "ANALYZE procrastinate_jobs")
            await checkpoint()
            started = time.perf_counter()
            with self.cpu.measure("procrastinate", lambda: self.count):
                await peer.drain(CONCURRENCY)
            elapsed = time.perf_counter() - started
        finally:
            await peer.close()
        left = await fetchval(
            peer.url, "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'"
        )
        assert left == 0, f"procrastinate: {left} jobs not done"
        return self.count / elapsed


@contextlib.asynccontextmanager
async def handler_drains(count: int, peers: bool = True) -> AsyncIterator[HandlerDrains]:
    """The provider (an empty history), the app's HTTP client, and the systems' databases."""
    from app.runtime import provider_http
    from bench.http import provider

    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(provider("empty-history", path="/sms"))
        http = await stack.enter_async_context(provider_http(app_settings(url)))
        drains = HandlerDrains(url, http, count)
        await drains.create(peers)
        try:
            # Warm the provider and the client's keep-alive connections.
            await asyncio.gather(*(http.get(url) for _ in range(CONCURRENCY * 4)))
            yield drains
        finally:
            await drains.drop()


@dataclass
class HandlerFigures:
    count: int
    samples: dict[str, list[float]]  # system -> jobs/s, one per round
    cpu: dict[str, Any]


async def real_handler_drain_measure(drains: HandlerDrains, cfg: Settings) -> HandlerFigures:
    samples: dict[str, list[float]] = {n: [] for n in SYSTEMS}
    for r in range(cfg.rounds):
        for name in rotated(SYSTEMS, r):
            rate = await (drains.handoff() if name == "handoff runner" else drains.peer())
            samples[name].append(rate)
    return HandlerFigures(drains.count, samples, drains.cpu.as_extra())


def real_handler_drain_rows(figures: HandlerFigures) -> list[Row]:
    samples = figures.samples
    return [
        Row(
            "B11",
            f"drain {figures.count:,} conversation_sync jobs (empty SMS history), concurrency "
            f"{CONCURRENCY}",
            "jobs/s",
            samples,
            [
                Check(
                    "runner / procrastinate",
                    per_round(samples["handoff runner"], samples["procrastinate"]),
                    3.0,
                ),
            ],
            notes=[
                "handoff runs the app's conversation_sync handler (lead read, provider client,"
                " store); procrastinate makes the same GET per job, through the same HTTP client"
            ],
            extra=figures.cpu,
            short="drain, real handler",
        )
    ]


async def real_handler_drain(cfg: Settings) -> list[Row]:
    """B11: jobs per second draining the app's own conversation_sync jobs."""
    async with handler_drains(cfg.pick(2_000, 600)) as drains:
        figures = await real_handler_drain_measure(drains, cfg)
    return real_handler_drain_rows(figures)


# --- profiling --------------------------------------------------------------------------------


def http_variant(name: str, settings: Any) -> httpx.AsyncClient:
    """An HTTP client to compare with the app's: "app" (app.runtime's), "httpx" (httpx's own
    transport, the app's limits) or "aiohttp" (httpx-aiohttp's transport)."""
    from app.runtime import HTTP_LIMITS, provider_http

    timeout = httpx.Timeout(settings.provider_timeout_s)
    if name == "httpx":
        return httpx.AsyncClient(timeout=timeout, limits=HTTP_LIMITS)
    if name == "aiohttp":
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=HTTP_LIMITS)
        return httpx.AsyncClient(timeout=timeout, transport=transport)
    return provider_http(settings)


async def profile(count: int, rounds: int, cprofile: str | None, variants: list[str]) -> None:
    import cProfile

    async with handler_drains(count, peers=False) as drains:
        clients = {v: http_variant(v, app_settings(drains.provider_url)) for v in variants}
        for r in range(rounds):
            for variant in rotated(variants, r):
                drains.http = clients[variant]
                profiler = cProfile.Profile() if cprofile else None
                if profiler is not None:
                    profiler.enable()
                rate = await drains.handoff()
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(cprofile)
                print(f"handoff runner, {variant}: {rate:,.0f} jobs/s", flush=True)
        for client in clients.values():
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.handlers profile")
    parser.add_argument("command", choices=["profile"])
    parser.add_argument("--count", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cprofile", help="write the last round's cProfile stats here")
    parser.add_argument(
        "--http", default="app", help="HTTP clients to compare, e.g. httpx,aiohttp (default: app)"
    )
    args = parser.parse_args()
    import uvloop

    uvloop.run(profile(args.count, args.rounds, args.cprofile, args.http.split(",")))


if __name__ == "__main__":
    main()
