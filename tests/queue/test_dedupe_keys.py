"""Dedupe keys: `type:part1:part2…` with each part escaped, so no two jobs' keys collide."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.db import Database
from app.queue import JobContext, JobSpec, Registry
from app.queue.enqueue import dedupe_key, enqueue, enqueue_many

jobs = Registry()


@jobs.handler("noop", dedupe="forever")
async def noop(ctx: JobContext) -> None:
    pass


# Parts made of the characters the encoding must keep apart: the separator, the escape
# character and the escapes themselves.
TRICKY = ["", "a", ":", "%", "::", "a:b", "b:c", "a%3Ab", "%3A", "%25", "%253A", ":%", "%:"]


def parts_of(key: str) -> tuple[str, ...]:
    """The (type, *parts) a dedupe key was built from."""
    return tuple(p.replace("%3A", ":").replace("%25", "%") for p in key.split(":"))


def test_tricky_parts_never_share_a_key() -> None:
    cases = {
        (type, parts)
        for type in ("t", "t2")
        for n in range(4)
        for parts in itertools.product(TRICKY, repeat=n)
    }
    keys = {dedupe_key(type, parts): (type, parts) for type, parts in cases}
    assert len(keys) == len(cases)
    for key, (type, parts) in keys.items():
        assert parts_of(key) == (type, *parts)


def test_the_audits_collision_is_two_keys() -> None:
    # Campaign `a` + lead `b:c` and campaign `a:b` + lead `c` once shared `…:a:b:c`.
    first = dedupe_key("reactivation_send", ("acme", "a", "b:c"))
    second = dedupe_key("reactivation_send", ("acme", "a:b", "c"))
    assert first == "reactivation_send:acme:a:b%3Ac"
    assert second == "reactivation_send:acme:a%3Ab:c"


def test_a_str_is_one_part_and_other_parts_are_refused() -> None:
    assert dedupe_key("t", "a:b") == dedupe_key("t", ("a:b",)) == "t:a%3Ab"
    assert dedupe_key("t", "a:b") != dedupe_key("t", ("a", "b"))
    assert dedupe_key("t", ()) == "t"
    with pytest.raises(TypeError):
        dedupe_key("t", ("lead", 3))  # type: ignore[arg-type]


@given(
    st.lists(st.text(alphabet=":%3A25ab", max_size=6), max_size=4),
    st.lists(st.text(alphabet=":%3A25ab", max_size=6), max_size=4),
)
def test_different_parts_never_give_the_same_key(one: list[str], other: list[str]) -> None:
    assert parts_of(dedupe_key("t", tuple(one))) == ("t", *one)
    if one != other:
        assert dedupe_key("t", tuple(one)) != dedupe_key("t", tuple(other))


@pytest.fixture
async def database(database_url):
    db = await Database.open(database_url)
    yield db
    await db.close()


async def test_enqueue_keeps_parts_apart_in_the_database(database, db):
    async with database.acquire() as conn:
        first = await enqueue(conn, "noop", ("a", "b:c"), registry=jobs)
        second = await enqueue(conn, "noop", ("a:b", "c"), registry=jobs)
        again = await enqueue(conn, "noop", ("a", "b:c"), registry=jobs)
    assert not first.deduplicated and not second.deduplicated and first.id != second.id
    assert again.deduplicated and again.id == first.id
    keys = {r["dedupe_key"] for r in await db.fetch("SELECT dedupe_key FROM jobs")}
    assert keys == {"noop:a:b%3Ac", "noop:a%3Ab:c"}


async def test_bulk_enqueue_of_tuple_keys_sorts_dedupes_and_answers_in_order(database, db):
    # Tuple order and key order differ here: ("a", "z") < ("a:b",) as tuples, but the key
    # "noop:a%3Ab" sorts before "noop:a:z".
    keys = [("a", "z"), ("a:b",), ("a", "z"), ("a%3Ab",), "a:b", ("",), ()]
    async with database.acquire() as conn:
        answers = await enqueue_many(conn, "noop", [JobSpec(k) for k in keys], registry=jobs)
    assert [a.dedupe_key for a in answers] == [
        "noop:a:z",
        "noop:a%3Ab",
        "noop:a%253Ab",
        "noop:",
        "noop",
    ]
    assert not any(a.deduplicated for a in answers)
    counts = dict(await db.fetch("SELECT dedupe_key, enqueue_count FROM jobs"))
    assert counts == {"noop:a:z": 2, "noop:a%3Ab": 2, "noop:a%253Ab": 1, "noop:": 1, "noop": 1}


async def test_overlapping_bulk_enqueues_of_tricky_keys_never_deadlock(database, db):
    keys = [tuple(p) for n in (1, 2) for p in itertools.product(TRICKY, repeat=n)]

    async def batch() -> None:
        chosen = random.sample(keys, 100)
        async with database.acquire() as conn:
            await enqueue_many(conn, "noop", [JobSpec(k) for k in chosen], registry=jobs)

    await asyncio.gather(*(batch() for _ in range(20)))
    stored = await db.fetch("SELECT dedupe_key FROM jobs")
    assert len(stored) == len({r["dedupe_key"] for r in stored})
    assert {parts_of(r["dedupe_key"])[1:] for r in stored} <= set(keys)
    assert await db.fetchval("SELECT sum(enqueue_count) FROM jobs") == 20 * 100
