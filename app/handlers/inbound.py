"""email_inbound: store a received email on its lead and have the lead scored."""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.utils import parseaddr

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import driver_connection
from app.handlers.deps import job_handler
from app.handlers.store import StoredMessage, store_messages
from app.models import clients, leads
from app.queue import Discard, JobContext, enqueue


def lead_id_for(client_id: str, address: str) -> str:
    """A stable id for a lead first seen by email, so concurrent deliveries agree on it."""
    digest = hashlib.sha256(f"{client_id}\0{address}".encode()).hexdigest()[:24]
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
    new_id = lead_id_for(client_id, address or email_lead_id or "")
    await conn.execute(
        insert(leads)
        .values(
            id=new_id,
            client_id=client_id,
            name=name or None,
            email=address or None,
            email_lead_id=email_lead_id,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return new_id


@job_handler("email_inbound", dedupe="forever")
async def email_inbound(ctx: JobContext) -> None:
    """Store the message on its lead (creating the lead if new), then enqueue its scoring."""
    data = ctx.job.payload
    client_id = data["client_id"]
    async with ctx.engine.begin() as conn:
        if await conn.scalar(select(clients.c.id).where(clients.c.id == client_id)) is None:
            raise Discard("unknown client")
        lead_id = await find_or_create_lead(
            conn, client_id, data.get("email_lead_id"), data["from"]
        )
        message = StoredMessage(
            "email",
            "inbound",
            data["text"],
            data["message_id"],
            datetime.fromisoformat(data["received_at"]),
            data["subject"],
        )
        if not await store_messages(conn, lead_id, [message]):
            return  # stored (and scored) by an earlier delivery
        await enqueue(
            await driver_connection(conn),
            "lead_scoring",
            f"email:{data['message_id']}",
            client_id=client_id,
            lead_id=lead_id,
            payload={"message_id": data["message_id"]},
        )
