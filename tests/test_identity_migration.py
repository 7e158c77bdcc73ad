"""0007_client_identity on a populated database: messages, campaigns and every job carried over.

Rows are written as the code before 0007 wrote them (old dedupe keys included); after the
upgrade each key is what the present code builds, so enqueues after it deduplicate against
jobs created before it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

import app.handlers  # noqa: F401 (registers the job types enqueued below)
from alembic import command
from app.db import asyncpg_dsn
from app.migrations import alembic_config
from app.queue import JobSpec, enqueue, enqueue_many
from app.queue.enqueue import dedupe_key
from tests.support import swap_database

SLOT = "2026-12-01T10:00Z"

# (type, old dedupe key, scope, status, client_id, lead_id, payload, attempts, its parts now)
JOBS = [
    ("conversation_sync", "conversation_sync:b:c:sms", "active", "pending", "acme", "b:c",
     {"channel": "sms"}, 0, ("b:c", "sms")),
    ("sync_all", "sync_all:acme:sms+email", "active", "pending", "acme", None,
     {"channels": ["sms", "email"]}, 0, ("acme", "sms+email")),
    ("sync_all", "sync_all:acme:sms:after:b:c", "active", "pending", "acme", None,
     {"channels": ["sms"], "after": "b:c"}, 0, ("acme", "sms", "after", "b:c")),
    ("email_inbound", "email_inbound:wh:1%", "forever", "succeeded", "acme", None,
     {"client_id": "acme", "message_id": "m:1"}, 1, ("wh:1%",)),
    ("lead_scoring", "lead_scoring:email:m:1", "forever", "succeeded", "acme", "acme-1",
     {"message_id": "m:1"}, 1, ("acme", "email", "m:1")),
    ("followups_tick", f"followups_tick:{SLOT}", "forever", "succeeded", None, None,
     {"slot": SLOT}, 1, (SLOT,)),
    ("followups_tick", f"followups_tick:{SLOT}:part:1", "forever", "succeeded", None, None,
     {"slot": SLOT, "part": 1}, 1, (SLOT, "part", "1")),
    ("reactivations_tick", f"reactivations_tick:{SLOT}", "forever", "succeeded", None, None,
     {"slot": SLOT}, 1, (SLOT,)),
    ("followup_send", "followup_send:fu_1:0", "forever", "pending", None, "acme-1",
     {"followup_id": "fu_1", "index": 0}, 0, ("fu_1", "0")),
    ("reactivation_send", "reactivation_send:a:b:c", "forever", "pending", "acme", "b:c",
     {"reactivation_id": "a"}, 1, ("acme", "a", "b:c")),
    ("reactivation_send", "reactivation_send:winback:other-1", "forever", "pending", "other",
     "other-1", {"reactivation_id": "winback"}, 0, ("other", "winback", "other-1")),
    ("prune_jobs", f"prune_jobs:{SLOT}", "forever", "succeeded", None, None,
     {"keep_days": 7, "keep_failed_days": 30}, 1, (SLOT,)),
    ("noop", "noop:x:y", "forever", "succeeded", None, None, {}, 1, ("x:y",)),
]  # fmt: skip

MESSAGES = [
    ("acme-1", "sms", "inbound", "sms_1", "2026-11-01T10:00:00Z"),
    ("acme-1", "email", "inbound", "m:1", "2026-11-02T10:00:00Z"),
    ("b:c", "sms", "outbound", "sms_2", "2026-11-03T10:00:00Z"),
    ("other-1", "sms", "inbound", "sms_3", "2026-11-04T10:00:00Z"),
]


@pytest.fixture
async def old_database(admin_url: str) -> AsyncIterator[str]:
    """A database migrated to 0006 only: the schema before client identity."""
    name = f"handoff_0006_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(asyncpg_dsn(admin_url))
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        url = swap_database(admin_url, name)
        await asyncio.to_thread(command.upgrade, alembic_config(url), "0006")
        yield url
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


async def migrate(url: str, direction: str, revision: str) -> None:
    await asyncio.to_thread(getattr(command, direction), alembic_config(url), revision)


async def seed_old_rows(conn: asyncpg.Connection, *, swallowed: bool) -> None:
    """Clients, leads, messages, campaigns and jobs as the code before 0007 wrote them.

    `swallowed`: campaign `a:b` also enrolled lead `c`, whose send the old key
    `reactivation_send:a:b:c` (already campaign `a`'s send to lead `b:c`) swallowed."""
    await conn.execute("INSERT INTO clients (id, name) VALUES ('acme', 'A'), ('other', 'O')")
    await conn.execute(
        "INSERT INTO leads (id, client_id, sms_contact_id) VALUES"
        " ('acme-1', 'acme', 'c-1'), ('b:c', 'acme', 'c-bc'), ('c', 'acme', 'c-c'),"
        " ('other-1', 'other', 'c-o')"
    )
    await conn.executemany(
        "INSERT INTO messages (lead_id, channel, direction, text, provider_message_id, sent_at)"
        " VALUES ($1, $2, $3, 'hello', $4, $5::text::timestamptz)",
        MESSAGES,
    )
    await conn.execute("INSERT INTO followups (id, lead_id) VALUES ('fu_1', 'acme-1')")
    await conn.execute(
        "INSERT INTO followup_steps (followup_id, index, after_s, channel, text, due_at)"
        " VALUES ('fu_1', 0, 0, 'sms', 'hi', now())"
    )
    await conn.execute(
        "INSERT INTO reactivations (id, client_id, inactive_days, channel, text) VALUES"
        " ('a', 'acme', 30, 'sms', 'A'), ('a:b', 'acme', 30, 'sms', 'AB'),"
        " ('winback', 'other', 30, 'sms', 'W')"
    )
    enrollments = [("a", "b:c"), ("winback", "other-1")] + ([("a:b", "c")] if swallowed else [])
    await conn.executemany(
        "INSERT INTO reactivation_enrollments (reactivation_id, lead_id, channel, text)"
        " VALUES ($1, $2, 'sms', 'hi')",
        enrollments,
    )
    await conn.executemany(
        "INSERT INTO jobs (type, dedupe_key, dedupe_scope, status, client_id, lead_id, payload,"
        " attempts) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
        [(*job[:6], json.dumps(job[6]), job[7]) for job in JOBS],
    )
    # A key not of the form `type:…` (written by hand) is left as it is.
    await conn.execute(
        "INSERT INTO jobs (type, dedupe_key, dedupe_scope) VALUES ('manual', 'live', 'forever')"
    )


async def test_upgrade_carries_every_row_over_and_rewrites_every_key(old_database: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(old_database))
    try:
        await seed_old_rows(conn, swallowed=True)
        messages_before = [dict(r) for r in await conn.fetch("SELECT * FROM messages ORDER BY id")]
        jobs_before = {r["dedupe_key"]: r for r in await conn.fetch("SELECT * FROM jobs")}

        await migrate(old_database, "upgrade", "head")

        # Messages: the same rows, each now with its lead's client.
        after = await conn.fetch(
            "SELECT m.*, l.client_id AS lead_client FROM messages AS m"
            " JOIN leads AS l ON l.id = m.lead_id ORDER BY m.id"
        )
        assert [{k: r[k] for k in messages_before[0]} for r in after] == messages_before
        assert all(r["client_id"] == r["lead_client"] for r in after)

        # Campaigns and enrollments: the same rows, keyed by client.
        enrollments = await conn.fetch(
            "SELECT client_id, reactivation_id, lead_id FROM reactivation_enrollments"
            " ORDER BY 1, 2, 3"
        )
        assert [tuple(e) for e in enrollments] == [
            ("acme", "a", "b:c"),
            ("acme", "a:b", "c"),
            ("other", "winback", "other-1"),
        ]

        # Jobs: each key is the one the present code builds from the job's parts.
        rows = {r["id"]: r for r in await conn.fetch("SELECT * FROM jobs")}
        by_old_key = {old: rows[job["id"]] for old, job in jobs_before.items()}
        for type, old, *_, parts in JOBS:
            assert by_old_key[old]["dedupe_key"] == dedupe_key(type, parts), old
        assert by_old_key["live"]["dedupe_key"] == "live"
        # A follow-up send now carries its lead's client.
        assert by_old_key["followup_send:fu_1:0"]["client_id"] == "acme"
        # A send that tried its old key keeps it as its Idempotency-Key; an untried one has none.
        tried = json.loads(by_old_key["reactivation_send:a:b:c"]["payload"])
        assert tried == {"reactivation_id": "a", "idempotency_key": "reactivation_send:a:b:c"}
        untried = by_old_key["reactivation_send:winback:other-1"]["payload"]
        assert json.loads(untried) == {"reactivation_id": "winback"}

        # The enrollment whose send the old key swallowed has its own send now.
        [new_send] = [
            r for r in rows.values() if r["id"] not in {j["id"] for j in by_old_key.values()}
        ]
        assert new_send["dedupe_key"] == dedupe_key("reactivation_send", ("acme", "a:b", "c"))
        assert (new_send["type"], new_send["status"], new_send["client_id"]) == (
            "reactivation_send",
            "pending",
            "acme",
        )
        assert new_send["lead_id"] == "c"
        assert json.loads(new_send["payload"]) == {"reactivation_id": "a:b"}

        # Enqueues after the upgrade deduplicate against jobs created before it.
        for type, parts in [
            ("email_inbound", ("wh:1%",)),
            ("lead_scoring", ("acme", "email", "m:1")),
            ("followups_tick", (SLOT,)),
            ("reactivations_tick", (SLOT,)),
            ("sync_all", ("acme", "sms+email")),
        ]:
            again = await enqueue(conn, type, parts)
            assert again.deduplicated, type
        again = await enqueue_many(
            conn,
            "reactivation_send",
            [JobSpec(("acme", "a", "b:c")), JobSpec(("acme", "a:b", "c"))],
        )
        assert [a.deduplicated for a in again] == [True, True]
        assert await conn.fetchval("SELECT count(*) FROM jobs") == len(rows)

        # What the old schema refused: another client's message under the same provider id.
        await conn.execute(
            "INSERT INTO messages (client_id, lead_id, channel, direction, text,"
            " provider_message_id, sent_at) VALUES ('other', 'other-1', 'sms', 'inbound', 'x',"
            " 'sms_1', now())"
        )
    finally:
        await conn.close()


async def test_downgrade_restores_the_old_keys_and_schema(old_database: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(old_database))
    try:
        await seed_old_rows(conn, swallowed=False)
        keys_before = dict(await conn.fetch("SELECT id, dedupe_key FROM jobs"))
        messages_before = [tuple(r) for r in await conn.fetch("SELECT * FROM messages ORDER BY id")]

        await migrate(old_database, "upgrade", "head")
        assert dict(await conn.fetch("SELECT id, dedupe_key FROM jobs")) != keys_before
        await migrate(old_database, "downgrade", "0006")

        assert dict(await conn.fetch("SELECT id, dedupe_key FROM jobs")) == keys_before
        payloads = await conn.fetch("SELECT payload FROM jobs WHERE payload ? 'idempotency_key'")
        assert payloads == []
        assert [tuple(r) for r in await conn.fetch("SELECT * FROM messages ORDER BY id")] == (
            messages_before
        )
        assert await conn.fetchval("SELECT version_num FROM alembic_version") == "0006"
        # And up again, as a redeploy would.
        await migrate(old_database, "upgrade", "head")
    finally:
        await conn.close()
