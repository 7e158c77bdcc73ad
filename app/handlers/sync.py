"""conversation_sync (one lead, one channel) and sync_all (fan-out over a client's leads)."""

from __future__ import annotations

from sqlalchemy import select

from app.db import driver_connection
from app.handlers.deps import job_handler, providers, require
from app.handlers.store import StoredMessage, get_lead, store_messages
from app.handlers.timebox import BATCH, TimeBox
from app.models import CHANNELS, channels_of, identity, leads
from app.providers.email import EmailProvider, EmailReply
from app.providers.sms import SmsMessage, SmsProvider
from app.queue import Discard, JobContext, JobSpec, enqueue, enqueue_many
from app.queue.registry import PRIORITY_BULK


@job_handler("conversation_sync", dedupe="active")
async def conversation_sync(ctx: JobContext) -> None:
    """Page through one channel's history and store every message not stored yet."""
    channel = ctx.job.payload.get("channel")
    async with ctx.db.acquire() as conn:
        lead = await get_lead(conn, ctx.job.lead_id, ctx.job.client_id)
    if lead is None:
        raise Discard("the lead no longer exists")
    if channel not in CHANNELS or not identity(lead, channel):
        raise Discard("the lead has no identity on this channel")
    client_id = ctx.job.client_id or lead["client_id"]
    provider: SmsProvider | EmailProvider
    if channel == "sms":
        provider = require(await providers(ctx).sms_for(client_id), "sms")
        stored = _sms_message
    else:
        provider = require(await providers(ctx).email_for(client_id), "email")
        stored = _email_message
    address = provider.address(lead)
    if address is None:  # e.g. a Twilio account and a lead without a phone
        raise Discard(f"the lead has no {channel} identity at its provider")
    async for page in provider.history(address):
        if page:  # an empty page costs no transaction
            async with ctx.engine.begin() as conn:
                await store_messages(conn, client_id, lead["id"], [stored(m) for m in page])


def _sms_message(m: SmsMessage) -> StoredMessage:
    return StoredMessage("sms", m.direction, m.body, m.id, m.sent_at)


def _email_message(r: EmailReply) -> StoredMessage:
    return StoredMessage("email", r.direction, r.text, r.id, r.sent_at, r.subject)


@job_handler("sync_all", dedupe="active")
async def sync_all(ctx: JobContext) -> None:
    """Enqueue one conversation_sync per lead and channel, in bulk, resuming from a cursor."""
    client_id = ctx.job.client_id
    wanted: list[str] = ctx.job.payload.get("channels") or list(CHANNELS)
    after: str = ctx.job.payload.get("after") or ""
    box = TimeBox(ctx)
    while True:
        box.start()
        async with ctx.engine.begin() as conn:
            page = [
                row._mapping
                for row in await conn.execute(
                    select(
                        leads.c.id,
                        leads.c.sms_contact_id,
                        leads.c.email_lead_id,
                        leads.c.phone,
                        leads.c.email,
                    )
                    .where(leads.c.client_id == client_id, leads.c.id > after)
                    .order_by(leads.c.id)
                    .limit(BATCH)
                )
            ]
            # Bulk work: a lead synced by hand, or a message arriving, goes first.
            specs = [
                JobSpec(
                    (lead["id"], channel),
                    client_id,
                    lead["id"],
                    {"channel": channel},
                    priority=PRIORITY_BULK,
                )
                for lead in page
                for channel in channels_of(lead, wanted)
            ]
            await enqueue_many(await driver_connection(conn), "conversation_sync", specs)
            if len(page) < BATCH:
                return
            after = page[-1]["id"]
            if box.out_of_time():
                # Hand the rest to a follow-on job rather than run past this one's timeout.
                key = (client_id, "+".join(wanted), "after", after)
                payload = {"channels": wanted, "after": after}
                await enqueue(
                    await driver_connection(conn),
                    "sync_all",
                    key,
                    client_id=client_id,
                    payload=payload,
                )
                return
