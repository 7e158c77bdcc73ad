"""Kick slots: how many kicked runners may be on their way or running at once, across every
process, coalesced in Postgres (`runner_kicks`).

A kicker takes a slot before it calls the runner route (`acquire`); the runner it started
takes that slot up for its whole drain (`confirm`), then lets it go and counts due jobs
(`release`), telling apart those that became due since shortly before its kick. While slots
are held, kicks coalesce: `acquire` answers None when `size` slots are held or one was taken
within the last `window_s`. That is safe because every holder counts due jobs only after it
has let go, so a job that committed while its kick was refused is counted by a holder (which
kicks again) or finds the slot free. A kick that failed frees its slot (`give_up`) unless its
runner took it up after all. A holder that died leaves a slot that lapses: `unconfirmed_s`
after the kick if no runner took it up, `held_s` after the runner did.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from app.db import Database
from app.queue.sql import QUERIES


@dataclass(frozen=True)
class Due:
    all: int  # every job due now
    fresh: int  # those that became due after the `since` given to `release`


@dataclass(frozen=True)
class KickSlots:
    db: Database
    size: int
    window_s: float
    unconfirmed_s: float
    held_s: float

    async def acquire(self) -> uuid.UUID | None:
        """A token for a fresh slot, or None: enough runners are on their way already."""
        token = uuid.uuid4()
        async with self.db.acquire() as conn:
            slot = await conn.fetchval(
                QUERIES["acquire_kick_slot"],
                token,
                self.size,
                float(self.unconfirmed_s),
                float(self.window_s),
            )
        return None if slot is None else token

    async def confirm(self, token: uuid.UUID) -> datetime | None:
        """Take up a kick's slot for a whole drain: when it was kicked, or None when the kick
        was given up."""
        async with self.db.acquire() as conn:
            return await conn.fetchval(QUERIES["confirm_kick_slot"], token, float(self.held_s))

    async def give_up(self, token: uuid.UUID) -> None:
        """Free the slot of a kick that failed, unless its runner took it up after all."""
        async with self.db.acquire() as conn:
            await conn.execute(QUERIES["give_up_kick_slot"], token)

    async def release(self, token: uuid.UUID, since: datetime) -> Due:
        """Let a drained runner's slot go; then the jobs due, counted once the slot was free,
        so a job whose kick this slot refused is among them."""
        async with self.db.acquire() as conn:
            await conn.execute(QUERIES["release_kick_slot"], token)
            row = await conn.fetchrow(QUERIES["due_after_kick"], since)
        return Due(int(row["due"]), int(row["fresh"]))
