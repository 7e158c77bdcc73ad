"""Sending one message to a lead: the flow follow-up steps and reactivations share.

Each kind of send names two statements: `load` (its state, message and lead, and whether the
lead has replied since it was scheduled) and `set_state` (move it out of 'scheduled'). The
send itself re-checks just before calling the provider, uses the job's dedupe key as
Idempotency-Key (the same on every attempt), and records the outcome in one statement that
also stores the outbound message once per provider message id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.handlers.deps import providers, require
from app.providers import Permanent, ProviderError
from app.queue import Discard, JobContext

# Prefixed to a `set_state` statement ($1, $2 its key, $3 the new state, $4 the provider
# message id): stores the outbound message, only when the state is 'sent'.
STORE_OUTBOUND = """
WITH stored AS (
    INSERT INTO messages (lead_id, channel, direction, text, subject, provider_message_id, sent_at)
    SELECT $5, $6, 'outbound', $7, $8, $4, now() WHERE $3::text = 'sent'
    ON CONFLICT (channel, provider_message_id) DO NOTHING
)
"""


@dataclass(frozen=True)
class Outreach:
    load: str
    set_state: str

    @property
    def record(self) -> str:
        return STORE_OUTBOUND + self.set_state


async def deliver(ctx: JobContext, kind: Outreach, *key: Any) -> None:
    """Send the message `key` names, once, unless it is no longer due."""
    async with ctx.db.acquire() as conn:
        row = await conn.fetchrow(kind.load, *key)
    if row is None or row["state"] != "scheduled":
        return

    async def record(state: str, message_id: str | None = None) -> None:
        async with ctx.db.acquire() as conn:
            await conn.execute(
                kind.record,
                *key,
                state,
                message_id,
                row["lead_id"],
                row["channel"],
                row["text"],
                row["subject"],
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
