"""Schedule slots: the cron ticks' dedupe keys, one per slot of the schedule."""

from __future__ import annotations

from datetime import UTC, datetime

SLOT_FORMAT = "%Y-%m-%dT%H:%MZ"


def slot_key(now: datetime, minutes: int) -> str:
    """The schedule slot `now` falls in: the UTC minute, floored to a multiple of `minutes`."""
    floored = now.astimezone(UTC).replace(second=0, microsecond=0)
    return floored.replace(minute=floored.minute - floored.minute % minutes).strftime(SLOT_FORMAT)


def slot_start(key: str) -> datetime:
    return datetime.strptime(key, SLOT_FORMAT).replace(tzinfo=UTC)
