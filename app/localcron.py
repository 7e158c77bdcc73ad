"""The vercel.json cron schedule, played locally: each path is called as Vercel Cron would.

Only the local run uses this (cronsim comes with the `local` extra); in production Vercel
Cron calls the same routes with the same bearer secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cronsim import CronSim

log = logging.getLogger("handoff.localcron")

VERCEL_JSON = Path(__file__).resolve().parents[1] / "vercel.json"


@dataclass(frozen=True)
class Cron:
    path: str
    schedule: str


def read_crons(path: Path = VERCEL_JSON) -> list[Cron]:
    return [Cron(c["path"], c["schedule"]) for c in json.loads(path.read_text())["crons"]]


async def play(cron: Cron, base_url: str, secret: str, stop: asyncio.Event) -> None:
    """Call `cron.path` at each time its schedule names, until `stop` is set."""
    headers = {"Authorization": f"Bearer {secret}"}
    # The runner may take up to its whole budget to answer.
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=900) as client:
        for fire_at in CronSim(cron.schedule, datetime.now(UTC)):
            delay = (fire_at - datetime.now(UTC)).total_seconds()
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(delay, 0))
                return
            except TimeoutError:
                pass
            try:
                response = await client.get(cron.path)
                log.info("cron called", extra={"path": cron.path, "status": response.status_code})
            except httpx.HTTPError as error:
                log.warning(
                    "cron call failed",
                    extra={"path": cron.path, "error_type": type(error).__name__},
                )


async def play_all(base_url: str, secret: str, stop: asyncio.Event) -> None:
    await asyncio.gather(*(play(cron, base_url, secret, stop) for cron in read_crons()))
