"""The notifier: at once after a committed enqueue, after its window for one still in a
transaction, and one NOTIFY per window for a burst."""

from __future__ import annotations

import asyncio

from app.db import Database
from app.queue.notify import CHANNEL, Notifier, job_due

WINDOW_S = 2.0


async def heard(db, action, *, within_s: float = 5.0) -> list[float]:
    """Run `action` with a listener on the channel; when each NOTIFY came, after it started."""
    loop = asyncio.get_running_loop()
    times: list[float] = []

    def record(*_: object) -> None:
        times.append(loop.time())

    await db.add_listener(CHANNEL, record)
    try:
        started = loop.time()
        await action()
        await asyncio.sleep(within_s)
    finally:
        await db.remove_listener(CHANNEL, record)
    return [t - started for t in times]


async def test_a_committed_enqueue_notifies_at_once_a_burst_once_per_window(database_url, db):
    database = await Database.open(database_url, pool_size=2)
    try:
        async with Notifier(database, window_s=WINDOW_S):

            async def burst() -> None:
                for _ in range(50):
                    job_due(committed=True)
                    await asyncio.sleep(0.01)

            times = await heard(db, burst, within_s=3.0)
    finally:
        await database.close()
    # The first poke is sent at once (well inside the window), the other 49 share one more
    # NOTIFY at the window's end.
    assert len(times) == 2, times
    assert times[0] < WINDOW_S / 2 <= WINDOW_S <= times[1]


async def test_an_enqueue_in_an_open_transaction_is_notified_after_the_window(database_url, db):
    database = await Database.open(database_url, pool_size=2)
    try:
        async with Notifier(database, window_s=WINDOW_S):

            async def in_transaction() -> None:
                job_due(committed=False)

            times = await heard(db, in_transaction, within_s=3.0)
    finally:
        await database.close()
    assert len(times) == 1 and times[0] >= WINDOW_S, times
