"""Follow-up sequences: followups_tick fans out due steps, followup_send sends one step."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.db import driver_connection
from app.handlers.deps import provider_errors
from app.handlers.outreach import Outreach, deliver
from app.handlers.ticks import TICK_BATCH, hand_over, short_of_time, slot_end
from app.queue import JobContext, JobSpec, enqueue_many, handler

# Take the next due steps nobody has enqueued yet and mark them, in one statement; SKIP LOCKED
# lets two ticks of overlapping slots share the work instead of waiting on each other.
CLAIM_DUE_STEPS = text(
    """
    UPDATE followup_steps AS s SET enqueued_at = now()
    FROM followups AS f
    WHERE f.id = s.followup_id AND (s.followup_id, s.index) IN (
        SELECT followup_id, index FROM followup_steps
        WHERE state = 'scheduled' AND enqueued_at IS NULL AND due_at < :until
        ORDER BY due_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING s.followup_id, s.index, s.due_at, f.lead_id
    """
)

STEP = Outreach(
    load="""
    SELECT s.state, s.channel, s.text, s.subject, l.id AS lead_id, l.sms_contact_id,
           l.email_lead_id,
           EXISTS (SELECT 1 FROM messages AS m
                   WHERE m.lead_id = l.id AND m.direction = 'inbound'
                     AND m.sent_at > f.created_at) AS replied
    FROM followup_steps AS s
    JOIN followups AS f ON f.id = s.followup_id
    JOIN leads AS l ON l.id = f.lead_id
    WHERE s.followup_id = $1 AND s.index = $2
    """,
    set_state="""
    UPDATE followup_steps
    SET state = $3, provider_message_id = $4, sent_at = CASE WHEN $3 = 'sent' THEN now() END
    WHERE followup_id = $1 AND index = $2 AND state = 'scheduled'
    """,
)


@handler("followups_tick", dedupe="forever")
async def followups_tick(ctx: JobContext) -> None:
    """Enqueue one followup_send per step due before this slot ends, at its due time."""
    until = slot_end(ctx, 1)
    clock = asyncio.get_running_loop().time
    slowest = 0.0
    while True:
        started = clock()
        async with ctx.engine.begin() as conn:
            steps = (
                await conn.execute(CLAIM_DUE_STEPS, {"until": until, "limit": TICK_BATCH})
            ).all()
            specs = [
                JobSpec(
                    f"{s.followup_id}:{s.index}",
                    lead_id=s.lead_id,
                    run_at=s.due_at,
                    payload={"followup_id": s.followup_id, "index": s.index},
                )
                for s in steps
            ]
            await enqueue_many(await driver_connection(conn), "followup_send", specs)
            if len(steps) < TICK_BATCH:
                return
            slowest = max(slowest, clock() - started)
            if short_of_time(ctx, slowest):
                await hand_over(ctx, conn)
                return


@handler("followup_send", dedupe="forever")
@provider_errors
async def followup_send(ctx: JobContext) -> None:
    """Send one step, unless it was sent, stopped, or the lead replied since the sequence began."""
    await deliver(ctx, STEP, ctx.job.payload["followup_id"], ctx.job.payload["index"])
