"""Clients and leads: idempotent upserts and reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert

from app.api.deps import ApiAuth, EngineDep
from app.api.errors import ApiError
from app.handlers.store import leads, messages
from app.models import (
    Client,
    ClientIn,
    ClientList,
    ClientOut,
    LeadList,
    LeadOut,
    LeadsIn,
    MessageList,
    MessageOut,
    UpsertedResponse,
)

router = APIRouter(prefix="/api", tags=["leads"], dependencies=[ApiAuth])
clients = Client.__table__  # type: ignore[attr-defined]
LEAD_FIELDS = ("name", "email", "phone", "sms_contact_id", "email_lead_id")


@router.post("/clients", response_model=ClientOut)
async def upsert_client(body: ClientIn, engine: EngineDep) -> ClientOut:
    """Create or rename a client."""
    statement = (
        insert(clients)
        .values(id=body.id, name=body.name)
        .on_conflict_do_update(index_elements=["id"], set_={"name": body.name})
    )
    async with engine.begin() as conn:
        await conn.execute(statement)
    return ClientOut(id=body.id, name=body.name)


@router.get("/clients", response_model=ClientList)
async def clients_list(engine: EngineDep) -> ClientList:
    """Every client, by id."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(clients.c.id, clients.c.name).order_by(clients.c.id))
        return ClientList(clients=[ClientOut(id=r.id, name=r.name) for r in rows])


@router.get("/leads", response_model=LeadList)
async def leads_list(
    client_id: str, engine: EngineDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> LeadList:
    """A client's leads, by id."""
    query = select(leads).where(leads.c.client_id == client_id).order_by(leads.c.id).limit(limit)
    async with engine.connect() as conn:
        rows = await conn.execute(query)
        return LeadList(leads=[LeadOut(**r._mapping) for r in rows])


@router.post("/leads", response_model=UpsertedResponse)
async def upsert_leads(body: LeadsIn, engine: EngineDep) -> UpsertedResponse:
    """Create or update up to 1,000 leads of a client; a field left out keeps its value."""
    rows = {lead.id: {"client_id": body.client_id, **lead.model_dump()} for lead in body.leads}
    statement = insert(leads).values(list(rows.values()))
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={
            **{f: func.coalesce(statement.excluded[f], leads.c[f]) for f in LEAD_FIELDS},
            "updated_at": func.now(),
        },
        # A lead id belongs to one client; another client's lead is left alone (and refused).
        where=leads.c.client_id == statement.excluded.client_id,
    ).returning(leads.c.id)
    async with engine.begin() as conn:
        if await conn.scalar(select(clients.c.id).where(clients.c.id == body.client_id)) is None:
            raise ApiError(404, "unknown_client", "No client with this id.")
        written = (await conn.execute(statement)).all()
        if len(written) != len(rows):
            raise ApiError(
                409, "lead_of_other_client", "Some lead ids already belong to another client."
            )
    return UpsertedResponse(upserted=len(rows))


@router.get("/leads/{lead_id}", response_model=LeadOut)
async def lead(lead_id: str, engine: EngineDep) -> LeadOut:
    """One lead, with its score."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(leads).where(leads.c.id == lead_id))).first()
    if row is None:
        raise ApiError(404, "unknown_lead", "No lead with this id.")
    return LeadOut(**row._mapping)


@router.get("/leads/{lead_id}/messages", response_model=MessageList)
async def lead_messages(
    lead_id: str, engine: EngineDep, limit: Annotated[int, Query(ge=1, le=5000)] = 1000
) -> MessageList:
    """A lead's latest messages, oldest first."""
    async with engine.connect() as conn:
        if await conn.scalar(select(leads.c.id).where(leads.c.id == lead_id)) is None:
            raise ApiError(404, "unknown_lead", "No lead with this id.")
        latest = (
            select(messages)
            .where(messages.c.lead_id == lead_id)
            .order_by(messages.c.sent_at.desc(), messages.c.id.desc())
            .limit(limit)
            .subquery()
        )
        rows = await conn.execute(select(latest).order_by(latest.c.sent_at, latest.c.id))
        out = [MessageOut(**{**r._mapping, "id": str(r.id)}) for r in rows]
    return MessageList(messages=out)
