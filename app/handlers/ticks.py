"""What the cron ticks share: their slot, and handing over to a follow-on tick."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import driver_connection
from app.models import slot_start
from app.queue import JobContext, enqueue


async def hand_over(ctx: JobContext, conn: AsyncConnection) -> None:
    """Enqueue the next part of this slot's tick; it carries on where this one stopped."""
    slot = ctx.job.payload["slot"]
    part = int(ctx.job.payload.get("part", 0)) + 1
    await enqueue(
        await driver_connection(conn),
        ctx.job.type,
        (slot, "part", str(part)),
        payload={"slot": slot, "part": part},
    )


def slot_end(ctx: JobContext, minutes: int) -> datetime:
    return slot_start(ctx.job.payload["slot"]) + timedelta(minutes=minutes)
