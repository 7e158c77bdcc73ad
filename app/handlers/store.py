"""Leads and messages as the handlers read and write them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.metrics import MESSAGES_CUT
from app.models import messages
from app.storable import clip_utf8

# A message's text is stored up to this many bytes of UTF-8; longer text is cut and marked.
MAX_TEXT_BYTES = 64 * 1024
CUT_MARKER = "\n[… cut: the message was longer than 64 KiB]"
# Subjects are short; a longer one is cut the same way.
MAX_SUBJECT_BYTES = 2 * 1024


@dataclass(frozen=True)
class StoredMessage:
    channel: str
    direction: str
    text: str
    provider_message_id: str
    sent_at: datetime
    subject: str | None = None


# Every column of `leads` (tests/handlers/test_store.py holds the list to the table).
LOAD_LEAD = """
SELECT id, client_id, name, email, phone, sms_contact_id, email_lead_id, score, score_reason,
       scored_at, created_at, updated_at
FROM leads
WHERE id = $1 AND ($2::text IS NULL OR client_id = $2)
"""


async def get_lead(
    conn: asyncpg.Connection, lead_id: str | None, client_id: str | None
) -> Mapping[str, Any] | None:
    """The lead, if it exists and is the client's (any client's when `client_id` is None).

    Once per job (conversation_sync, lead_scoring), so on the driver directly (app/db.py): one
    round trip where Core on a fresh connection spends three (BEGIN, the SELECT, ROLLBACK).
    Given a Core connection's driver (`driver_connection`), it sees what that connection wrote.
    """
    if lead_id is None:
        return None
    row = await conn.fetchrow(LOAD_LEAD, lead_id, client_id)
    return None if row is None else dict(row.items())


async def store_messages(
    conn: AsyncConnection, client_id: str, lead_id: str, batch: list[StoredMessage]
) -> int:
    """Insert what is new; a message the client already stored (same channel and provider
    message id) is skipped. Returns new rows.

    Provider message ids are unique per client only: two clients may each hold the same id
    (two accounts of one provider, or one contact id in both), and both keep their message.
    A new inbound message stops the lead's follow-up sequences created before it.
    """
    if not batch:
        return 0
    rows = [
        {
            "client_id": client_id,
            "lead_id": lead_id,
            "channel": m.channel,
            "direction": m.direction,
            "text": stored_text(m.channel, m.text),
            "subject": None
            if m.subject is None
            else clip_utf8(m.subject, MAX_SUBJECT_BYTES, "…")[0],
            "provider_message_id": m.provider_message_id,
            "sent_at": m.sent_at,
        }
        for m in batch
    ]
    statement = (
        insert(messages)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["client_id", "channel", "provider_message_id"])
        .returning(messages.c.direction, messages.c.sent_at)
    )
    stored = (await conn.execute(statement)).all()
    replies = [row.sent_at for row in stored if row.direction == "inbound"]
    if replies:
        await conn.execute(STOP_FOLLOWUPS, {"lead_id": lead_id, "replied_at": max(replies)})
    return len(stored)


def stored_text(channel: str, text: str) -> str:
    """The text as stored: cut to MAX_TEXT_BYTES with a marker, and counted, when longer."""
    kept, cut = clip_utf8(text, MAX_TEXT_BYTES, CUT_MARKER)
    if cut:
        MESSAGES_CUT.labels(channel).inc()
    return kept


# Unsent steps of the lead's sequences that started before its latest reply stop for good.
STOP_FOLLOWUPS = text(
    """
    UPDATE followup_steps AS s SET state = 'stopped'
    FROM followups AS f
    WHERE s.followup_id = f.id AND f.lead_id = :lead_id AND s.state = 'scheduled'
      AND f.created_at < :replied_at
    """
)


async def recent_messages(conn: AsyncConnection, lead_id: str, limit: int = 20) -> list[Any]:
    query = (
        select(messages)
        .where(messages.c.lead_id == lead_id)
        .order_by(messages.c.sent_at.desc())
        .limit(limit)
    )
    return list(await conn.execute(query))
