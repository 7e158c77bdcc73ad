"""What the cron ticks share: their slot, and handing over to a follow-on tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import driver_connection
from app.queue import JobContext, enqueue

SLOT_FORMAT = "%Y-%m-%dT%H:%MZ"
# Rows a tick fans out per statement.
TICK_BATCH = 1_000
# A tick hands over to a follow-on tick when less than this, plus twice its slowest batch,
# is left of its attempt.
TICK_RESERVE_S = 2.0


def slot_key(now: datetime, minutes: int) -> str:
    """The schedule slot `now` falls in: the UTC minute, floored to a multiple of `minutes`."""
    floored = now.astimezone(UTC).replace(second=0, microsecond=0)
    return floored.replace(minute=floored.minute - floored.minute % minutes).strftime(SLOT_FORMAT)


def slot_start(key: str) -> datetime:
    return datetime.strptime(key, SLOT_FORMAT).replace(tzinfo=UTC)


def short_of_time(ctx: JobContext, slowest_batch_s: float) -> bool:
    return ctx.time_left() < TICK_RESERVE_S + 2 * slowest_batch_s


async def hand_over(ctx: JobContext, conn: AsyncConnection) -> None:
    """Enqueue the next part of this slot's tick; it carries on where this one stopped."""
    slot = ctx.job.payload["slot"]
    part = int(ctx.job.payload.get("part", 0)) + 1
    await enqueue(
        await driver_connection(conn),
        ctx.job.type,
        f"{slot}:part:{part}",
        payload={"slot": slot, "part": part},
    )


def slot_end(ctx: JobContext, minutes: int) -> datetime:
    return slot_start(ctx.job.payload["slot"]) + timedelta(minutes=minutes)
