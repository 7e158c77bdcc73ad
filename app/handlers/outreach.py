"""Sending one message to a lead: the flow follow-up steps and reactivations share.

Each kind of send names its table, the columns that key one row, and `load`: the query for
its state, message and lead, and whether the lead has replied since it was scheduled. The send
itself re-checks just before calling the provider, uses the job's dedupe key as
Idempotency-Key (the same on every attempt), and records the outcome in one transaction that
moves the row out of 'scheduled' and stores the outbound message once per provider message id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert

from app.handlers.deps import providers, require
from app.models import leads, messages
from app.providers import Permanent, ProviderError
from app.queue import Discard, JobContext


def select_send(table: Table, scheduled_at: ColumnElement[Any]) -> Select[Any]:
    """What `load` reads: the send's state, channel, text and subject, its lead's identities,
    and whether the lead (`leads`, to be joined) has written since `scheduled_at`."""
    replied = exists().where(
        messages.c.lead_id == leads.c.id,
        messages.c.direction == "inbound",
        messages.c.sent_at > scheduled_at,
    )
    return select(
        table.c.state,
        table.c.channel,
        table.c.text,
        table.c.subject,
        leads.c.id.label("lead_id"),
        leads.c.sms_contact_id,
        leads.c.email_lead_id,
        replied.label("replied"),
    )


@dataclass(frozen=True)
class Outreach:
    table: Table
    key: tuple[str, ...]
    load: Callable[..., Select[Any]]


async def deliver(ctx: JobContext, kind: Outreach, *key: Any) -> None:
    """Send the message `key` names, once, unless it is no longer due."""
    async with ctx.engine.connect() as conn:
        row = (await conn.execute(kind.load(*key))).mappings().first()
    if row is None or row["state"] != "scheduled":
        return

    this_row = [kind.table.c[name] == value for name, value in zip(kind.key, key, strict=True)]

    async def record(state: str, message_id: str | None = None) -> None:
        async with ctx.engine.begin() as conn:
            if state == "sent":
                await conn.execute(
                    insert(messages)
                    .values(
                        lead_id=row["lead_id"],
                        channel=row["channel"],
                        direction="outbound",
                        text=row["text"],
                        subject=row["subject"],
                        provider_message_id=message_id,
                        sent_at=func.now(),
                    )
                    .on_conflict_do_nothing(index_elements=["channel", "provider_message_id"])
                )
            await conn.execute(
                update(kind.table)
                .where(
                    *this_row,
                    kind.table.c.state == "scheduled",
                )
                .values(
                    state=state,
                    provider_message_id=message_id,
                    sent_at=func.now() if state == "sent" else None,
                )
            )

    if row["replied"]:
        return await record("stopped")
    channel = row["channel"]
    target = row["sms_contact_id"] if channel == "sms" else row["email_lead_id"]
    if not target:
        await record("failed")
        raise Discard(f"the lead has no {channel} identity")
    idempotency_key = ctx.job.dedupe_key
    try:
        if channel == "sms":
            sms = require(providers(ctx).sms, "sms")
            message_id = await sms.send(target, row["text"], idempotency_key)
        else:
            email = require(providers(ctx).email, "email")
            message_id = await email.send(
                target, row["subject"] or "", row["text"], idempotency_key
            )
    except Discard:
        await record("failed")
        raise
    except ProviderError as error:
        # Refused for good, or out of attempts: the send is failed, not left scheduled.
        if isinstance(error, Permanent) or ctx.job.attempt >= ctx.job.max_attempts:
            await record("failed")
        raise
    await record("sent", message_id)
