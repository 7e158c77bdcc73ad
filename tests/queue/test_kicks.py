"""Kick slots on a real Postgres: at most `size` held, one new per window, lapsed ones taken
over, a given-up kick never taken up, and due jobs counted after a slot is let go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from app.db import Database
from app.queue import Registry, enqueue
from app.queue.kicks import KickSlots


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = await Database.open(database_url, pool_size=8)
    yield db
    await db.close()


LONG_AGO = datetime(2000, 1, 1, tzinfo=UTC)


def slots(db: Database, size: int = 4, window_s: float = 0.0, **lapse: float) -> KickSlots:
    return KickSlots(
        db,
        size=size,
        window_s=window_s,
        unconfirmed_s=lapse.get("unconfirmed_s", 30.0),
        held_s=lapse.get("held_s", 60.0),
    )


async def test_at_most_size_slots_are_held(database, db):
    kicks = slots(database, size=4)
    tokens = [await kicks.acquire() for _ in range(6)]
    assert all(tokens[:4]) and tokens[4:] == [None, None]
    assert await db.fetchval("SELECT count(*) FROM runner_kicks") == 4
    await kicks.release(tokens[0], LONG_AGO)
    assert await kicks.acquire() is not None


async def test_racing_kickers_never_hold_more_than_size(database, db):
    kicks = slots(database, size=3)
    tokens = await asyncio.gather(*(kicks.acquire() for _ in range(40)))
    held = [t for t in tokens if t is not None]
    assert 1 <= len(held) <= 3
    assert await db.fetchval("SELECT count(*) FROM runner_kicks") == len(held)


async def test_one_new_kick_per_window(database):
    kicks = slots(database, size=4, window_s=0.3)
    assert await kicks.acquire() is not None
    assert await kicks.acquire() is None, "a second kick inside the window"
    await asyncio.sleep(0.35)
    assert await kicks.acquire() is not None


async def test_a_lapsed_slot_is_taken_over(database):
    kicks = slots(database, size=1, unconfirmed_s=0.1)
    first = await kicks.acquire()
    assert first is not None and await kicks.acquire() is None
    await asyncio.sleep(0.15)
    second = await kicks.acquire()
    assert second is not None
    # The first kick's runner comes too late: its slot is someone else's now.
    assert not await kicks.confirm(first)
    assert await kicks.confirm(second)


async def test_a_given_up_kick_is_never_taken_up(database):
    kicks = slots(database, size=1)
    token = await kicks.acquire()
    await kicks.give_up(token)
    assert not await kicks.confirm(token)
    assert await kicks.acquire() is not None


async def test_a_taken_up_slot_outlives_its_kickers_giving_up(database):
    kicks = slots(database, size=1, unconfirmed_s=0.1, held_s=30)
    token = await kicks.acquire()
    assert await kicks.confirm(token)
    await kicks.give_up(token)  # the kick's answer came too late for its kicker
    await asyncio.sleep(0.15)  # past the unconfirmed lapse: the runner's hold counts
    assert await kicks.acquire() is None
    await kicks.release(token, LONG_AGO)
    assert await kicks.acquire() is not None


async def test_release_counts_due_jobs_once_the_slot_is_free_and_which_are_fresh(database):
    kicks = slots(database, size=1)
    jobs = Registry()
    jobs.handler("noop", dedupe="forever")(lambda _ctx: None)
    async with database.acquire() as conn:
        await enqueue(conn, "noop", "old", registry=jobs)
    token = await kicks.acquire()
    kicked_at = await kicks.confirm(token)
    assert kicked_at is not None
    async with database.acquire() as conn:
        await enqueue(conn, "noop", "new", registry=jobs)
        # Neither due yet: not counted.
        later = datetime.now(UTC) + timedelta(hours=1)
        await enqueue(conn, "noop", "later", registry=jobs, run_at=later)
    due = await kicks.release(token, since=kicked_at)
    assert (due.all, due.fresh) == (2, 1)
    assert await kicks.acquire() is not None, "the slot is free"
