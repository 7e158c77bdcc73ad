"""Clients and leads: idempotent upserts and reads, each caller's own.

A client key sees its own client and that client's leads; another client's lead answers 404 as
one that does not exist. Lead ids are unique across the deployment (`GET /api/leads/{id}` names
no client), so a lead id another client holds is refused with 409 `lead_id_taken`, which says
only that the id is taken.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from app.api.deps import (
    BODY_ERRORS,
    INVALID_PARAMS,
    Caller,
    CallerDep,
    EngineDep,
    Responses,
    SettingsDep,
    admin_router,
    api_router,
    error,
    unknown_client,
)
from app.api.errors import ApiError
from app.models import (
    ClientIn,
    ClientList,
    ClientListed,
    ClientOut,
    ClientProvider,
    LeadList,
    LeadOut,
    LeadsIn,
    MessageList,
    MessageOut,
    UpsertedResponse,
    clients,
    leads,
    messages,
)
from app.models.tables import provider_accounts
from app.settings import Settings

router = api_router(prefix="/api", tags=["leads"])
# Creating and renaming clients is for the API token alone.
admin = admin_router(prefix="/api", tags=["leads"])

ONE_LEAD: Responses = {**INVALID_PARAMS, 404: error("No lead with this id (`unknown_lead`).")}
LEAD_FIELDS = ("name", "email", "phone", "sms_contact_id", "email_lead_id")
# A messages answer holds at most this much message text (each text is at most 64 KiB).
MAX_MESSAGES_BYTES = 4 * 1024 * 1024
TRUNCATED_HEADER = "X-Messages-Truncated"


def leads_of(caller: Caller) -> list[ColumnElement[bool]]:
    """Conditions on `leads` that keep the caller's leads only (none for the API token)."""
    return [] if caller.is_admin else [leads.c.client_id == caller.client_id]


async def client_exists(conn: AsyncConnection, client_id: str) -> bool:
    return await conn.scalar(select(clients.c.id).where(clients.c.id == client_id)) is not None


def unknown_lead() -> ApiError:
    return ApiError(404, "unknown_lead", "No lead with this id.")


@admin.post("/clients", response_model=ClientOut, responses=BODY_ERRORS)
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


def global_kinds(settings: Settings) -> dict[str, str | None]:
    """The kind of each channel's global account (None: not configured)."""
    # SMS_PROVIDER_KIND, where the settings have it; the contract's API otherwise.
    sms_kind = getattr(settings, "sms_provider_kind", "generic")
    email_kind = settings.email_provider_kind
    return {
        "sms": sms_kind if settings.sms_provider_url or sms_kind != "generic" else None,
        "email": email_kind if settings.email_provider_url or email_kind != "generic" else None,
        "ai": "generic" if settings.ai_provider_url else None,
    }


@router.get("/clients", response_model=ClientList)
async def clients_list(engine: EngineDep, caller: CallerDep, settings: SettingsDep) -> ClientList:
    """Every client, by id, with the provider kind each channel goes through; with a client
    key, that key's client alone."""
    query = select(clients.c.id, clients.c.name).order_by(clients.c.id)
    if not caller.is_admin:
        query = query.where(clients.c.id == caller.client_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        own: dict[str, dict[str, str]] = {}
        accounts = select(
            provider_accounts.c.client_id, provider_accounts.c.channel, provider_accounts.c.kind
        ).where(provider_accounts.c.client_id.in_([r.id for r in rows]))
        for client_id, channel, kind in await conn.execute(accounts):
            own.setdefault(client_id, {})[channel] = kind
    fallback = global_kinds(settings)
    listed = []
    for r in rows:
        providers = {}
        for channel, global_kind in fallback.items():
            kind = own.get(r.id, {}).get(channel)
            if kind is not None:
                providers[channel] = ClientProvider(kind=kind, account="own")
            else:
                account = "global" if global_kind else None
                providers[channel] = ClientProvider(kind=global_kind, account=account)
        listed.append(ClientListed(id=r.id, name=r.name, providers=providers))
    return ClientList(clients=listed)


@router.get(
    "/leads",
    response_model=LeadList,
    responses={**INVALID_PARAMS, 404: error("No client with this id (`unknown_client`).")},
)
async def leads_list(
    client_id: str,
    engine: EngineDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> LeadList:
    """A client's leads, by id."""
    if not caller.sees(client_id):
        raise unknown_client()
    query = select(leads).where(leads.c.client_id == client_id).order_by(leads.c.id).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        if not rows and not await client_exists(conn, client_id):
            raise unknown_client()
        return LeadList(leads=[LeadOut(**r._mapping) for r in rows])


@router.post(
    "/leads",
    response_model=UpsertedResponse,
    responses={
        **BODY_ERRORS,
        404: error("No client with this id (`unknown_client`)."),
        409: error("A lead id is taken: lead ids are unique across clients (`lead_id_taken`)."),
        413: error("The body is over 4 MiB."),
    },
)
async def upsert_leads(body: LeadsIn, engine: EngineDep, caller: CallerDep) -> UpsertedResponse:
    """Create or update up to 1,000 leads of a client; a field left out keeps its value."""
    if not caller.sees(body.client_id):
        raise unknown_client()
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
        if not await client_exists(conn, body.client_id):
            raise unknown_client()
        written = (await conn.execute(statement)).all()
        if len(written) != len(rows):
            # Which ids, and whose, is not said: only that lead ids are unique.
            raise ApiError(
                409, "lead_id_taken", "Some of these lead ids are taken; lead ids are unique."
            )
    return UpsertedResponse(upserted=len(rows))


@router.get("/leads/{lead_id}", response_model=LeadOut, responses=ONE_LEAD)
async def lead(lead_id: str, engine: EngineDep, caller: CallerDep) -> LeadOut:
    """One lead, with its score."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(select(leads).where(leads.c.id == lead_id, *leads_of(caller)))
        ).first()
    if row is None:
        raise unknown_lead()
    return LeadOut(**row._mapping)


@router.get("/leads/{lead_id}/messages", response_model=MessageList, responses=ONE_LEAD)
async def lead_messages(
    lead_id: str,
    response: Response,
    engine: EngineDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> MessageList:
    """A lead's latest messages, oldest first: up to `limit`, and up to 4 MiB of text
    (`X-Messages-Truncated: true` says older ones within `limit` were left out)."""
    newest_first = (messages.c.sent_at.desc(), messages.c.id.desc())
    text_so_far = func.sum(func.octet_length(messages.c.text)).over(order_by=newest_first)
    latest = (
        select(messages, text_so_far.label("text_so_far"))
        .where(messages.c.lead_id == lead_id)
        .order_by(*newest_first)
        .limit(limit)
        .subquery()
    )
    async with engine.connect() as conn:
        if (
            await conn.scalar(select(leads.c.id).where(leads.c.id == lead_id, *leads_of(caller)))
            is None
        ):
            raise unknown_lead()
        rows = (
            await conn.execute(
                select(latest)
                .where(latest.c.text_so_far <= MAX_MESSAGES_BYTES)
                .order_by(latest.c.sent_at, latest.c.id)
            )
        ).all()
        cut = len(rows) < limit and await conn.scalar(
            select(func.count()).select_from(messages).where(messages.c.lead_id == lead_id)
        ) > len(rows)
    if cut:
        response.headers[TRUNCATED_HEADER] = "true"
    return MessageList(messages=[MessageOut(**{**r._mapping, "id": str(r.id)}) for r in rows])
