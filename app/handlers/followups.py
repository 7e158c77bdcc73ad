"""Follow-up sequences: followups_tick fans out due steps, followup_send sends one step."""

from __future__ import annotations

from sqlalchemy import text

from app.db import driver_connection
from app.handlers.deps import job_handler
from app.handlers.outreach import Kind, deliver
from app.handlers.ticks import hand_over, slot_end
from app.handlers.timebox import BATCH, TimeBox
from app.queue import JobContext, JobSpec, enqueue_many

# Take the next due steps nobody has enqueued yet and mark them, in one statement; SKIP LOCKED
# lets two ticks of overlapping slots share the work instead of waiting on each other. Each
# comes back with its lead's client, which its send job carries.
CLAIM_DUE_STEPS = text(
    """
    UPDATE followup_steps AS s SET enqueued_at = now()
    FROM followups AS f JOIN leads AS l ON l.id = f.lead_id
    WHERE f.id = s.followup_id AND (s.followup_id, s.index) IN (
        SELECT followup_id, index FROM followup_steps
        WHERE state = 'scheduled' AND enqueued_at IS NULL AND due_at < :until
        ORDER BY due_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    RETURNING s.followup_id, s.index, s.due_at, f.lead_id, l.client_id
    """
)


@job_handler("followups_tick", dedupe="forever")
async def followups_tick(ctx: JobContext) -> None:
    """Enqueue one followup_send per step due before this slot ends, at its due time."""
    until = slot_end(ctx, 1)
    box = TimeBox(ctx)
    while True:
        box.start()
        async with ctx.engine.begin() as conn:
            steps = (await conn.execute(CLAIM_DUE_STEPS, {"until": until, "limit": BATCH})).all()
            specs = [
                JobSpec(
                    (s.followup_id, str(s.index)),
                    client_id=s.client_id,
                    lead_id=s.lead_id,
                    run_at=s.due_at,
                    payload={"followup_id": s.followup_id, "index": s.index},
                )
                for s in steps
            ]
            await enqueue_many(await driver_connection(conn), "followup_send", specs)
            if len(steps) < BATCH:
                return
            if box.out_of_time():
                await hand_over(ctx, conn)
                return


@job_handler("followup_send", dedupe="forever")
async def followup_send(ctx: JobContext) -> None:
    """Send one step, unless it was sent, stopped, or the lead replied since the sequence began."""
    await deliver(ctx, Kind.FOLLOWUP_STEP, ctx.job.payload["followup_id"], ctx.job.payload["index"])
