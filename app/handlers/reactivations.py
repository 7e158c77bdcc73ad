"""Reactivation campaigns: reactivations_tick enrolls inactive leads, reactivation_send sends."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text

from app.db import driver_connection
from app.handlers.deps import provider_errors
from app.handlers.outreach import Outreach, deliver
from app.handlers.ticks import TICK_BATCH, hand_over, short_of_time
from app.queue import JobContext, JobSpec, enqueue_many, handler

log = logging.getLogger("handoff.reactivations")

CAMPAIGNS = text(
    "SELECT id, client_id, inactive_days, channel, text, subject FROM reactivations ORDER BY id"
)

# Enroll the next inactive leads of a campaign in one statement: no message either way within
# inactive_days (or none at all), an identity on the campaign's channel, not enrolled before.
# The enrollment's primary key makes "once per campaign" hold even past job retention.
ENROLL = text(
    """
    INSERT INTO reactivation_enrollments (reactivation_id, lead_id, channel, text, subject)
    SELECT :campaign, l.id, :channel, :text, :subject FROM leads AS l
    WHERE l.client_id = :client_id
      AND CASE WHEN :channel = 'sms' THEN l.sms_contact_id ELSE l.email_lead_id END IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.lead_id = l.id
                      AND m.sent_at > now() - make_interval(days => :inactive_days))
      AND NOT EXISTS (SELECT 1 FROM reactivation_enrollments AS e
                      WHERE e.reactivation_id = :campaign AND e.lead_id = l.id)
    ORDER BY l.id
    LIMIT :limit
    ON CONFLICT DO NOTHING
    RETURNING lead_id
    """
)

# Inactive leads the campaign cannot reach: skipped and counted, not failed.
NO_IDENTITY = text(
    """
    SELECT count(*) FROM leads AS l
    WHERE l.client_id = :client_id
      AND CASE WHEN :channel = 'sms' THEN l.sms_contact_id ELSE l.email_lead_id END IS NULL
      AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.lead_id = l.id
                      AND m.sent_at > now() - make_interval(days => :inactive_days))
    """
)

ENROLLMENT = Outreach(
    load="""
    SELECT e.state, e.channel, e.text, e.subject, l.id AS lead_id, l.sms_contact_id,
           l.email_lead_id,
           EXISTS (SELECT 1 FROM messages AS m
                   WHERE m.lead_id = l.id AND m.direction = 'inbound'
                     AND m.sent_at > e.created_at) AS replied
    FROM reactivation_enrollments AS e JOIN leads AS l ON l.id = e.lead_id
    WHERE e.reactivation_id = $1 AND e.lead_id = $2
    """,
    set_state="""
    UPDATE reactivation_enrollments
    SET state = $3, provider_message_id = $4, sent_at = CASE WHEN $3 = 'sent' THEN now() END
    WHERE reactivation_id = $1 AND lead_id = $2 AND state = 'scheduled'
    """,
)


@handler("reactivations_tick", dedupe="forever")
async def reactivations_tick(ctx: JobContext) -> None:
    """Enroll every campaign's inactive leads and enqueue one reactivation_send for each."""
    clock = asyncio.get_running_loop().time
    slowest = 0.0
    async with ctx.engine.connect() as conn:
        campaigns = (await conn.execute(CAMPAIGNS)).all()
    for campaign in campaigns:
        params = {
            "campaign": campaign.id,
            "client_id": campaign.client_id,
            "channel": campaign.channel,
            "inactive_days": campaign.inactive_days,
            "text": campaign.text,
            "subject": campaign.subject,
        }
        enrolled = 0
        while True:
            started = clock()
            async with ctx.engine.begin() as conn:
                leads = (
                    (await conn.execute(ENROLL, {**params, "limit": TICK_BATCH})).scalars().all()
                )
                specs = [
                    JobSpec(
                        f"{campaign.id}:{lead_id}",
                        campaign.client_id,
                        lead_id,
                        {"reactivation_id": campaign.id},
                    )
                    for lead_id in leads
                ]
                await enqueue_many(await driver_connection(conn), "reactivation_send", specs)
                enrolled += len(leads)
                slowest = max(slowest, clock() - started)
                if len(leads) == TICK_BATCH and short_of_time(ctx, slowest):
                    # Enrollments so far are committed; the next part finds the rest.
                    await hand_over(ctx, conn)
                    return
            if len(leads) < TICK_BATCH:
                break
        async with ctx.engine.connect() as conn:
            skipped = await conn.scalar(NO_IDENTITY, params)
        log.info(
            "reactivation campaign enrolled",
            extra={
                "reactivation_id": campaign.id,
                "enrolled": enrolled,
                "skipped_no_identity": skipped,
                "job_id": str(ctx.job.id),
            },
        )


@handler("reactivation_send", dedupe="forever")
@provider_errors
async def reactivation_send(ctx: JobContext) -> None:
    """Send the campaign's text once, unless the lead came back on its own since enrolling."""
    await deliver(ctx, ENROLLMENT, ctx.job.payload["reactivation_id"], ctx.job.lead_id)
