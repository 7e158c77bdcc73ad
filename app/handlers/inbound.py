"""email_inbound and sms_inbound: store a received message on its lead (found, or created
under a derived id) and have the lead scored."""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.utils import parseaddr

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import driver_connection
from app.handlers.deps import job_handler, providers, require
from app.handlers.store import StoredMessage, store_messages
from app.models import clients, leads
from app.providers.resend import ResendClient
from app.queue import Discard, JobContext, enqueue

# Candidate ids tried for one sender before giving up: each taken one is another client's lead,
# which only a client creating leads under ids derived for someone else's senders would cause.
MAX_DERIVED_IDS = 32


def lead_id_for(client_id: str, address: str, attempt: int = 0) -> str:
    """A stable id for a lead first seen by email, so concurrent deliveries agree on it.

    Attempt 0 is the id leads have always been given; a later attempt is the next candidate
    when the earlier ones are taken by another client's leads (lead ids are global)."""
    seed = f"{client_id}\0{address}" if attempt == 0 else f"{client_id}\0{address}\0{attempt}"
    digest = hashlib.sha256(seed.encode()).hexdigest()[:24]
    return f"lead_{digest}"


async def find_or_create_lead(
    conn: AsyncConnection, client_id: str, email_lead_id: str | None, sender: str
) -> str:
    """Match by provider lead id, then by address within the client; else create the lead."""
    name, address = parseaddr(sender)
    address = address.lower()
    if email_lead_id:
        found = await conn.scalar(
            select(leads.c.id)
            .where(leads.c.client_id == client_id, leads.c.email_lead_id == email_lead_id)
            .limit(1)
        )
        if found:
            return found
    if address:
        found = await conn.scalar(
            select(leads.c.id)
            .where(leads.c.client_id == client_id, func.lower(leads.c.email) == address)
            .limit(1)
        )
        if found:
            if email_lead_id:
                await conn.execute(
                    update(leads)
                    .where(leads.c.id == found, leads.c.email_lead_id.is_(None))
                    .values(email_lead_id=email_lead_id, updated_at=func.now())
                )
            return found
    return await create_lead(
        conn, client_id, address or email_lead_id or "", name, address, email_lead_id
    )


async def create_lead(
    conn: AsyncConnection,
    client_id: str,
    seed: str,
    name: str,
    address: str,
    email_lead_id: str | None,
    phone: str | None = None,
) -> str:
    """Insert the lead under the first derived id that is free or already the client's own.

    A taken id is checked in the same transaction: an id of another client's lead is passed
    over, never written to."""
    for attempt in range(MAX_DERIVED_IDS):
        candidate = lead_id_for(client_id, seed, attempt)
        created = await conn.scalar(
            insert(leads)
            .values(
                id=candidate,
                client_id=client_id,
                name=name or None,
                email=address or None,
                email_lead_id=email_lead_id,
                phone=phone,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(leads.c.id)
        )
        if created is not None:
            return created
        # Taken: by this client (an earlier or concurrent delivery, now committed) or another.
        owner = await conn.scalar(select(leads.c.client_id).where(leads.c.id == candidate))
        if owner == client_id:
            return candidate
    raise Discard("every lead id derived for the sender belongs to another client")


async def receive_email(
    ctx: JobContext,
    client_id: str,
    email_lead_id: str | None,
    sender: str,
    message: StoredMessage,
) -> None:
    """Store a received email on its lead (matched within the client, or created), once per
    provider message id, then enqueue the lead's scoring. Storing it stops the lead's pending
    follow-ups: a send re-checks for an inbound message newer than its schedule."""
    async with ctx.engine.begin() as conn:
        if await conn.scalar(select(clients.c.id).where(clients.c.id == client_id)) is None:
            raise Discard("unknown client")
        lead_id = await find_or_create_lead(conn, client_id, email_lead_id, sender)
        if not await store_messages(conn, client_id, lead_id, [message]):
            return  # stored (and scored) by an earlier delivery
        await enqueue(
            await driver_connection(conn),
            "lead_scoring",
            (client_id, "email", message.provider_message_id),
            client_id=client_id,
            lead_id=lead_id,
            payload={"message_id": message.provider_message_id},
        )


async def find_or_create_lead_by_phone(conn: AsyncConnection, client_id: str, phone: str) -> str:
    """The client's lead with this phone number (E.164), else a new one under an id derived
    from it (so concurrent deliveries agree on it)."""
    found = await conn.scalar(
        select(leads.c.id)
        .where(leads.c.client_id == client_id, leads.c.phone == phone)
        .order_by(leads.c.id)
        .limit(1)
    )
    if found:
        return found
    return await create_lead(conn, client_id, phone, "", "", None, phone=phone)


@job_handler("sms_inbound", dedupe="forever")
async def sms_inbound(ctx: JobContext) -> None:
    """Store a received SMS on its lead (matched by number within the client, or created), then
    enqueue its scoring. Stored like a synced one (by message SID), so a sync that meets it
    later adds nothing, and it stops the lead's pending follow-ups as any inbound message does."""
    data = ctx.job.payload
    client_id = data["client_id"]
    async with ctx.engine.begin() as conn:
        if await conn.scalar(select(clients.c.id).where(clients.c.id == client_id)) is None:
            raise Discard("unknown client")
        lead_id = await find_or_create_lead_by_phone(conn, client_id, data["from"])
        message = StoredMessage(
            "sms",
            "inbound",
            data["body"],
            data["message_sid"],
            datetime.fromisoformat(data["received_at"]),
        )
        if not await store_messages(conn, client_id, lead_id, [message]):
            return  # stored (and scored) by an earlier delivery, or by a sync
        await enqueue(
            await driver_connection(conn),
            "lead_scoring",
            (client_id, "sms", data["message_sid"]),
            client_id=client_id,
            lead_id=lead_id,
            payload={"message_id": data["message_sid"]},
        )


@job_handler("email_inbound", dedupe="forever")
async def email_inbound(ctx: JobContext) -> None:
    """Store the message on its lead (creating the lead if new), then enqueue its scoring."""
    data = ctx.job.payload
    message = StoredMessage(
        "email",
        "inbound",
        data["text"],
        data["message_id"],
        datetime.fromisoformat(data["received_at"]),
        data["subject"],
    )
    await receive_email(ctx, data["client_id"], data.get("email_lead_id"), data["from"], message)


@job_handler("resend_inbound", dedupe="forever")
async def resend_inbound(ctx: JobContext) -> None:
    """A Resend `email.received` event: fetch the email (the event carries no text) from the
    client's Resend account, then store it as any received email, under Resend's email id (the
    id a sync stores it under too)."""
    client_id = ctx.job.payload["client_id"]
    email = require(await providers(ctx).email_for(client_id), "email")
    if not isinstance(email, ResendClient):
        raise Discard("the client's email provider is not Resend")
    received = await email.fetch_received(ctx.job.payload["email_id"])
    message = StoredMessage(
        "email", "inbound", received.body, received.id, received.created_at, received.subject or ""
    )
    await receive_email(ctx, client_id, None, received.from_, message)
