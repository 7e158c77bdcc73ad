"""The cron ticks: each slot's tick finds due work and fans it out."""

from __future__ import annotations

from app.queue import JobContext, handler


@handler("followups_tick", dedupe="forever")
async def followups_tick(ctx: JobContext) -> None:
    """Fan out due follow-up steps (no sequences are stored yet)."""


@handler("reactivations_tick", dedupe="forever")
async def reactivations_tick(ctx: JobContext) -> None:
    """Fan out reactivation sends (no campaigns are stored yet)."""
