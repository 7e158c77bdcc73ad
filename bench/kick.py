"""B13 `kick_latency`: how soon a job starts after `POST /sync` answers 202 when nothing but
`uvicorn app.main:app` runs (no worker, no cron) and RUNNER_KICK_URL is its own runner route.

The app and the sandbox providers each run under uvicorn in a process of their own, on a
database of the benchmark's own. Each round makes 50 single-lead syncs (two jobs each) one at a
time, in two ways: with a pause of 0.1-0.3 s before each (the runners kicked for the previous
one have finished: a person pressing Sync) and back to back (a kick is often coalesced into a
runner still draining). A sync's wait is from its 202 reaching the client to the later of its
two jobs' `started_at`, both on this machine's clock. Without kicks that wait is up to a
minute, the cron's period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx

from bench.common import (
    Check,
    Row,
    Settings,
    apply_handoff_schema,
    drop_db,
    recreate_db,
    rotated,
)
from bench.http import free_port, subprocess_server

KICK_DB = "bench_handoff_kick"
TOKEN = "bench-token-0123456789"  # noqa: S105 - throwaway secrets for servers on loopback
CRON = "bench-cron-0123456789"  # noqa: S105
CLIENT = "bench"
SYNCS = 50
KINDS = ["pause before each", "back to back"]


@dataclass
class KickSetup:
    url: str  # the app's database
    base: str  # the app's address


@dataclass
class KickFigures:
    syncs: int  # per kind per round
    p50: dict[str, list[float]]  # kind -> ms, one per round
    p99: dict[str, list[float]]
    max_ms: dict[str, float]
    invocations: list[int]  # kicked runner invocations per round, both kinds


def uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        *extra,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


@contextlib.asynccontextmanager
async def kick_latency_setup(cfg: Settings) -> AsyncIterator[KickSetup]:
    url = await recreate_db(KICK_DB)
    try:
        await apply_handoff_schema(url)
        sandbox_port, port = free_port(), free_port()
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "API_TOKEN": TOKEN,
            "CRON_SECRET": CRON,
            "RUNNER_KICK_URL": f"{base}/api/cron/background-jobs",
            # The sandbox started without a key accepts any bearer token.
            "SMS_PROVIDER_URL": f"{sandbox}/sms",
            "SMS_PROVIDER_KEY": "sandbox",
            "EMAIL_PROVIDER_URL": f"{sandbox}/email",
            "EMAIL_PROVIDER_KEY": "sandbox",
            "AI_PROVIDER_URL": f"{sandbox}/ai",
            "AI_PROVIDER_KEY": "sandbox",
        }
        sandbox_args = uvicorn("app.sandbox:create_sandbox_app", sandbox_port, "--factory")
        async with (
            subprocess_server(sandbox_args, dict(os.environ), f"{sandbox}/sms/contacts/x/messages"),
            subprocess_server(uvicorn("app.main:app", port), env, f"{base}/healthz"),
        ):
            await seed(base, 2 * cfg.rounds * SYNCS)
            yield KickSetup(url, base)
    finally:
        await drop_db(KICK_DB)


async def seed(base: str, leads: int) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        r = await client.post("/api/clients", json={"id": CLIENT, "name": "Bench"})
        r.raise_for_status()
        batch = [
            {"id": f"K{n}", "sms_contact_id": f"s{n}", "email_lead_id": f"e{n}"}
            for n in range(leads)
        ]
        r = await client.post("/api/leads", json={"client_id": CLIENT, "leads": batch})
        r.raise_for_status()


async def time_syncs(
    setup: KickSetup, leads: list[str], pause: bool, rng: random.Random
) -> tuple[list[float], int]:
    """Each sync's wait in ms, and how many runner invocations the kicks made."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    answered: dict[str, float] = {}
    conn = await asyncpg.connect(setup.url)
    try:
        before = await conn.fetchval("SELECT count(*) FROM runner_invocations")
        async with httpx.AsyncClient(base_url=setup.base, headers=headers, timeout=30) as client:
            for lead in leads:
                if pause:
                    await asyncio.sleep(rng.uniform(0.1, 0.3))
                r = await client.post("/sync", json={"client_id": CLIENT, "lead_id": lead})
                arrived = time.time()
                r.raise_for_status()
                answered.update({job["id"]: arrived for job in r.json()["jobs"]})
        ids = [int(i) for i in answered]
        deadline = time.monotonic() + 120
        while True:
            rows = await conn.fetch(
                "SELECT id, started_at FROM jobs WHERE id = ANY($1) AND status = 'succeeded'", ids
            )
            if len(rows) == len(ids):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"B13: {len(ids) - len(rows)} jobs never ran")
            await asyncio.sleep(0.2)
        # Let the last kicked runners record themselves.
        await asyncio.sleep(1)
        invocations = await conn.fetchval("SELECT count(*) FROM runner_invocations") - before
    finally:
        await conn.close()
    waits: dict[float, float] = {}
    for row in rows:
        arrived = answered[str(row["id"])]
        wait = (row["started_at"].timestamp() - arrived) * 1000
        waits[arrived] = max(waits.get(arrived, wait), wait)
    return list(waits.values()), invocations


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def kick_latency_measure(setup: KickSetup, cfg: Settings) -> KickFigures:
    syncs = cfg.pick(SYNCS, 15)
    rng = random.Random(13)  # noqa: S311 - reproducible pauses, not a secret
    p50: dict[str, list[float]] = {k: [] for k in KINDS}
    p99: dict[str, list[float]] = {k: [] for k in KINDS}
    every: dict[str, list[float]] = {k: [] for k in KINDS}
    invocations: list[int] = []
    lead = 0
    for r in range(cfg.rounds):
        made = 0
        for kind in rotated(KINDS, r):
            leads = [f"K{n}" for n in range(lead, lead + syncs)]
            lead += syncs
            waits, runs = await time_syncs(setup, leads, kind == KINDS[0], rng)
            p50[kind].append(statistics.median(waits))
            p99[kind].append(pct(waits, 0.99))
            every[kind].extend(waits)
            made += runs
        invocations.append(made)
    return KickFigures(syncs, p50, p99, {k: max(v) for k, v in every.items()}, invocations)


def kick_latency_rows(figures: KickFigures) -> list[Row]:
    p50, p99 = figures.p50, figures.p99
    return [
        Row(
            "B13",
            f"kick: 202 of POST /sync to its jobs' start, uvicorn alone, {figures.syncs} syncs "
            "one at a time (p50 per round)",
            "ms",
            p50,
            [Check(f"{kind}, p50", p50[kind], 1000.0, "<=", "ms") for kind in KINDS]
            + [Check(f"{kind}, p99", p99[kind], 3000.0, "<=", "ms") for kind in KINDS],
            extra={
                "p99_ms": p99,
                "max_ms": figures.max_ms,
                "kicked_invocations_per_round": figures.invocations,
            },
            short="kicked job start after 202",
        )
    ]


async def kick_latency(cfg: Settings) -> list[Row]:
    """B13: from a sync's 202 to its jobs' start, with only the API process running."""
    async with kick_latency_setup(cfg) as setup:
        figures = await kick_latency_measure(setup, cfg)
    return kick_latency_rows(figures)
