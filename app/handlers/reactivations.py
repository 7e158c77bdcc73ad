"""Reactivation campaigns: reactivations_tick enrolls inactive leads, reactivation_send sends."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Row, select, text

from app.db import driver_connection
from app.handlers.deps import job_handler
from app.handlers.outreach import Kind, deliver
from app.handlers.ticks import hand_over
from app.handlers.timebox import BATCH, TimeBox
from app.models import reactivations
from app.queue import JobContext, JobSpec, enqueue_many

log = logging.getLogger("handoff.reactivations")

CAMPAIGNS = select(
    reactivations.c.id,
    reactivations.c.client_id,
    reactivations.c.inactive_days,
    reactivations.c.channel,
    reactivations.c.text,
    reactivations.c.subject,
).order_by(reactivations.c.client_id, reactivations.c.id)

# Enroll the next inactive leads of a campaign in one statement: no message either way within
# inactive_days (or none at all), an identity on the campaign's channel (a provider id, or the
# phone number or address: see app/models/channels.py), not enrolled before.
# The enrollment's primary key makes "once per campaign" hold even past job retention. A campaign
# id is the client's own: another client's campaign of the same id is another campaign.
ENROLL = text(
    """
    INSERT INTO reactivation_enrollments (client_id, reactivation_id, lead_id, channel, text,
                                          subject)
    SELECT :client_id, :campaign, l.id, :channel, :text, :subject FROM leads AS l
    WHERE l.client_id = :client_id
      AND CASE WHEN :channel = 'sms' THEN coalesce(l.sms_contact_id, l.phone)
               ELSE coalesce(l.email_lead_id, l.email) END IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.lead_id = l.id
                      AND m.sent_at > now() - make_interval(days => :inactive_days))
      AND NOT EXISTS (SELECT 1 FROM reactivation_enrollments AS e
                      WHERE e.client_id = :client_id AND e.reactivation_id = :campaign
                        AND e.lead_id = l.id)
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
      AND CASE WHEN :channel = 'sms' THEN coalesce(l.sms_contact_id, l.phone)
               ELSE coalesce(l.email_lead_id, l.email) END IS NULL
      AND NOT EXISTS (SELECT 1 FROM messages AS m WHERE m.lead_id = l.id
                      AND m.sent_at > now() - make_interval(days => :inactive_days))
    """
)


@job_handler("reactivations_tick", dedupe="forever")
async def reactivations_tick(ctx: JobContext) -> None:
    """Enroll every campaign's inactive leads and enqueue one reactivation_send for each."""
    box = TimeBox(ctx)
    async with ctx.engine.connect() as conn:
        campaigns = (await conn.execute(CAMPAIGNS)).all()
    for campaign in campaigns:
        if not await enroll_campaign(ctx, campaign, box):
            return


async def enroll_campaign(ctx: JobContext, campaign: Row[Any], box: TimeBox) -> bool:
    """Enroll one campaign's inactive leads in batches; False when it handed over to the next
    part of the tick (the enrollments so far are committed; the next part finds the rest)."""
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
        box.start()
        async with ctx.engine.begin() as conn:
            lead_ids = (await conn.execute(ENROLL, {**params, "limit": BATCH})).scalars().all()
            specs = [
                JobSpec(
                    (campaign.client_id, campaign.id, lead_id),
                    campaign.client_id,
                    lead_id,
                    {"reactivation_id": campaign.id},
                )
                for lead_id in lead_ids
            ]
            await enqueue_many(await driver_connection(conn), "reactivation_send", specs)
            enrolled += len(lead_ids)
            if box.out_of_time() and len(lead_ids) == BATCH:
                await hand_over(ctx, conn)
                return False
        if len(lead_ids) < BATCH:
            break
    async with ctx.engine.connect() as conn:
        skipped = await conn.scalar(NO_IDENTITY, params)
    log.info(
        "reactivation campaign enrolled",
        extra={
            "client_id": campaign.client_id,
            "reactivation_id": campaign.id,
            "enrolled": enrolled,
            "skipped_no_identity": skipped,
            "job_id": str(ctx.job.id),
        },
    )
    return True


@job_handler("reactivation_send", dedupe="forever")
async def reactivation_send(ctx: JobContext) -> None:
    """Send the campaign's text once, unless the lead came back on its own since enrolling."""
    await deliver(ctx, Kind.ENROLLMENT, ctx.job.payload["reactivation_id"], ctx.job.lead_id)
