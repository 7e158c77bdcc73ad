"""Follow-up sequences: followups_tick fans out due steps, followup_send sends one step."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from app.db import driver_connection
from app.handlers.deps import provider_errors
from app.handlers.outreach import send_to_lead
from app.handlers.store import get_lead, store_messages
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

LOAD_STEP = text(
    """
    SELECT s.state, s.channel, s.text, s.subject, f.lead_id, f.created_at,
           EXISTS (SELECT 1 FROM messages AS m
                   WHERE m.lead_id = f.lead_id AND m.direction = 'inbound'
                     AND m.sent_at > f.created_at) AS replied
    FROM followup_steps AS s JOIN followups AS f ON f.id = s.followup_id
    WHERE s.followup_id = :followup_id AND s.index = :index
    """
)

SET_STATE = text(
    """
    UPDATE followup_steps
    SET state = :state, provider_message_id = :message_id,
        sent_at = CASE WHEN :state = 'sent' THEN now() END
    WHERE followup_id = :followup_id AND index = :index AND state = 'scheduled'
    """
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
    where = {"followup_id": ctx.job.payload["followup_id"], "index": ctx.job.payload["index"]}
    async with ctx.engine.connect() as conn:
        step = (await conn.execute(LOAD_STEP, where)).first()
        lead = await get_lead(conn, step.lead_id) if step else None
    if step is None or lead is None or step.state != "scheduled":
        return
    if step.replied:
        async with ctx.engine.begin() as conn:
            await conn.execute(SET_STATE, {**where, "state": "stopped", "message_id": None})
        return

    async def mark_failed() -> None:
        async with ctx.engine.begin() as conn:
            await conn.execute(SET_STATE, {**where, "state": "failed", "message_id": None})

    message = await send_to_lead(ctx, lead, step.channel, step.text, step.subject, mark_failed)
    async with ctx.engine.begin() as conn:
        await store_messages(conn, lead["id"], [message])
        await conn.execute(
            SET_STATE, {**where, "state": "sent", "message_id": message.provider_message_id}
        )
