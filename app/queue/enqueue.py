"""Enqueue: one atomic upsert per call, or one statement for a whole fan-out.

Both take an asyncpg connection; inside a SQLAlchemy transaction, pass
`await app.db.driver_connection(conn)` so the jobs commit with the rest of it.

A job's key is a tuple of parts (a plain str is one part). Its dedupe key is
`type:part1:part2…` with `%` and `:` escaped in each part (`%25`, `%3A`), so the separators are
the only colons and no two different (type, parts) give the same dedupe key.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from app.metrics import JOBS_ENQUEUED
from app.queue import hooks, notify
from app.queue.registry import Registry, registry
from app.queue.sql import QUERIES


@dataclass(frozen=True)
class Enqueued:
    id: str
    type: str
    status: str
    deduplicated: bool
    dedupe_key: str = ""


# A job's key: its parts, or a str as its single part.
KeyParts = str | tuple[str, ...]


@dataclass(frozen=True)
class JobSpec:
    """One job of a fan-out; `key` (its parts) is scoped by the job type to form the dedupe key."""

    key: KeyParts
    client_id: str | None = None
    lead_id: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    run_at: datetime | None = None
    # None: the job type's registered priority (lower runs first).
    priority: int | None = None


# The statement for each dedupe scope: each scope's conflict target names its own partial index.
ENQUEUE = {"active": QUERIES["enqueue_active"], "forever": QUERIES["enqueue_forever"]}
ENQUEUE_MANY = {
    "active": QUERIES["enqueue_many_active"],
    "forever": QUERIES["enqueue_many_forever"],
}


def escape_part(part: str) -> str:
    """A key part with no colon left in it, and no other part escaping to the same text."""
    return part.replace("%", "%25").replace(":", "%3A")


def dedupe_key(type: str, key: KeyParts) -> str:
    """`type:part1:part2…`, each part escaped: injective in (type, parts)."""
    parts = (key,) if isinstance(key, str) else key
    if not all(isinstance(part, str) for part in parts):
        raise TypeError("every part of a job key must be a str")
    return ":".join(escape_part(part) for part in (type, *parts))


async def enqueue(
    conn: asyncpg.Connection,
    type: str,
    key: KeyParts,
    *,
    client_id: str | None = None,
    lead_id: str | None = None,
    payload: dict[str, Any] | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    registry: Registry = registry,
) -> Enqueued:
    """Upsert one job by dedupe key; a duplicate is an answer (the live job), never an error."""
    handler = registry.get(type)
    full_key = dedupe_key(type, key)
    row = await conn.fetchrow(
        ENQUEUE[handler.dedupe],
        type,
        full_key,
        client_id,
        lead_id,
        json.dumps(payload or {}),
        handler.max_attempts,
        run_at,
        handler.priority if priority is None else priority,
        hooks.traceparent(),
    )
    JOBS_ENQUEUED.labels(type, _flag(row["deduplicated"])).inc()
    if not row["deduplicated"] and _due(run_at):
        notify.job_due(committed=not conn.is_in_transaction())
    return Enqueued(str(row["id"]), row["type"], row["status"], row["deduplicated"], full_key)


async def enqueue_many(
    conn: asyncpg.Connection,
    type: str,
    specs: list[JobSpec],
    *,
    registry: Registry = registry,
) -> list[Enqueued]:
    """Upsert many jobs of one type in one statement; answers in the order of first appearance."""
    if not specs:
        return []
    handler = registry.get(type)
    keys = [dedupe_key(type, spec.key) for spec in specs]
    counts = Counter(keys)
    # The first spec of each key wins; walking backwards leaves it last in the dict.
    first = {key: spec for key, spec in zip(reversed(keys), reversed(specs), strict=True)}
    # Sorted by the dedupe key itself, the order the statement needs.
    ordered = sorted(first)
    unique = [first[key] for key in ordered]
    rows = await conn.fetch(
        ENQUEUE_MANY[handler.dedupe],
        type,
        handler.max_attempts,
        ordered,
        _column([s.client_id for s in unique]),
        _column([s.lead_id for s in unique]),
        _column([json.dumps(s.payload) if s.payload else None for s in unique]),
        _column([s.run_at for s in unique]),
        _column([n if (n := counts[key]) > 1 else None for key in ordered]),
        _column([s.priority for s in unique]),
        handler.priority,
        hooks.traceparent(),
    )
    by_key = {
        r["dedupe_key"]: Enqueued(
            str(r["id"]), r["type"], r["status"], r["deduplicated"], r["dedupe_key"]
        )
        for r in rows
    }
    # A key asked for n times in one batch: one request created it (unless it already existed),
    # the others were absorbed.
    created = sum(not job.deduplicated for job in by_key.values())
    JOBS_ENQUEUED.labels(type, "false").inc(created)
    JOBS_ENQUEUED.labels(type, "true").inc(len(specs) - created)
    if created and any(_due(s.run_at) for s in unique):
        notify.job_due(committed=not conn.is_in_transaction())
    return [by_key[key] for key in dict.fromkeys(keys)]


def _column(values: list[Any]) -> list[Any] | None:
    """NULL instead of an array of NULLs: the statement fills in the default, and the driver
    encodes nothing per row."""
    return values if any(v is not None for v in values) else None


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _due(run_at: datetime | None) -> bool:
    return run_at is None or run_at <= datetime.now(UTC)
