"""Sending one message to a lead: the flow follow-up steps and reactivations share.

A send is a follow-up step (`followup_steps`, keyed by sequence and index) or a campaign's
enrollment of a lead (`reactivation_enrollments`, keyed by client, campaign and lead). Two
statements serve both, each one round trip on the job's hot path: LOAD_SEND reads the send's
state, message and lead, and whether the lead has written since it was scheduled; RECORD_SEND
moves it out of 'scheduled' and, when sent, stores the outbound message once per (client,
channel, provider message id). The send re-checks just before calling the provider and uses the
job's dedupe key as Idempotency-Key (the same on every attempt).

These are asyncpg statements rather than SQLAlchemy Core (see app/db.py): as Core each send
cost four more round trips (BEGIN and COMMIT or ROLLBACK around each) and 20,000 sends took
2.4 times as long.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from app.handlers.deps import providers, require
from app.providers import Permanent, ProviderError
from app.queue import Discard, JobContext


class Kind(Enum):
    """What a send's two key parts name."""

    FOLLOWUP_STEP = "followup_step"  # (followup_id, index)
    ENROLLMENT = "enrollment"  # (reactivation_id, lead_id), within the job's client


# $1 the kind, $2 and $3 its key as text (a step's index compared as text, so one parameter
# type serves both kinds), $4 the job's client (a campaign id is unique per client only).
LOAD_SEND = """
SELECT s.state, s.channel, s.text, s.subject, l.id AS lead_id, l.client_id, l.sms_contact_id,
       l.email_lead_id, l.name, l.email, l.phone,
       EXISTS (SELECT 1 FROM messages AS m
               WHERE m.lead_id = l.id AND m.direction = 'inbound'
                 AND m.sent_at > s.scheduled_at) AS replied
FROM (
    SELECT st.state, st.channel, st.text, st.subject, f.lead_id, f.created_at AS scheduled_at
    FROM followup_steps AS st JOIN followups AS f ON f.id = st.followup_id
    WHERE $1 = 'followup_step' AND st.followup_id = $2 AND st.index::text = $3
    UNION ALL
    SELECT e.state, e.channel, e.text, e.subject, e.lead_id, e.created_at
    FROM reactivation_enrollments AS e
    WHERE $1 = 'enrollment' AND e.client_id = $4 AND e.reactivation_id = $2 AND e.lead_id = $3
) AS s
JOIN leads AS l ON l.id = s.lead_id
"""

# $1-$4 as in LOAD_SEND, $5 the new state, $6 the provider message id, $7-$11 the message
# (client, lead, channel, text, subject), stored only when the state is 'sent'. Each update is
# guarded by state = 'scheduled', so a send is recorded once.
RECORD_SEND = """
WITH step AS (
    UPDATE followup_steps
    SET state = $5, provider_message_id = $6, sent_at = CASE WHEN $5 = 'sent' THEN now() END
    WHERE $1 = 'followup_step' AND followup_id = $2 AND index::text = $3 AND state = 'scheduled'
), enrollment AS (
    UPDATE reactivation_enrollments
    SET state = $5, provider_message_id = $6, sent_at = CASE WHEN $5 = 'sent' THEN now() END
    WHERE $1 = 'enrollment' AND client_id = $4 AND reactivation_id = $2 AND lead_id = $3
      AND state = 'scheduled'
)
INSERT INTO messages (client_id, lead_id, channel, direction, text, subject, provider_message_id,
                      sent_at)
SELECT $7, $8, $9, 'outbound', $10, $11, $6, now() WHERE $5 = 'sent'
ON CONFLICT (client_id, channel, provider_message_id) DO NOTHING
"""


def no_identity(address: str | None, channel: str) -> str:
    """The address, or Discard (the send recorded failed) when the lead has none there."""
    if not address:
        raise Discard(f"the lead has no {channel} identity at its provider")
    return address


async def deliver(ctx: JobContext, kind: Kind, first: str, second: Any) -> None:
    """Send the message (kind, first, second) names, once, unless it is no longer due."""
    key = (kind.value, first, str(second), ctx.job.client_id)
    async with ctx.db.acquire() as conn:
        row = await conn.fetchrow(LOAD_SEND, *key)
    if row is None or row["state"] != "scheduled":
        return

    async def record(state: str, message_id: str | None = None) -> None:
        async with ctx.db.acquire() as conn:
            await conn.execute(
                RECORD_SEND,
                *key,
                state,
                message_id,
                row["client_id"],
                row["lead_id"],
                row["channel"],
                row["text"],
                row["subject"],
            )

    if row["replied"]:
        return await record("stopped")
    channel = row["channel"]
    # A send enqueued before its dedupe key took its present form keeps the key its earlier
    # attempts sent (the upgrade copied it into the payload).
    idempotency_key = ctx.job.payload.get("idempotency_key") or ctx.job.dedupe_key
    # A later attempt may follow one whose request reached the provider (its answer lost): a
    # provider without idempotency keys looks for that send before sending again.
    retry = ctx.job.attempt > 1
    try:
        if channel == "sms":
            sms = require(await providers(ctx).sms_for(ctx.job.client_id), "sms")
            address = no_identity(sms.address(row), channel)
            message_id = await sms.send(address, row["text"], idempotency_key, retry=retry)
        else:
            email = require(await providers(ctx).email_for(ctx.job.client_id), "email")
            address = no_identity(email.address(row), channel)
            message_id = await email.send(
                address, row["subject"] or "", row["text"], idempotency_key, retry=retry
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
