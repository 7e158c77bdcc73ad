"""Follow-up sequences and reactivation campaigns, each caller's own: a client key reaches its
client's leads, sequences and campaigns only; another client's answer 404 as if not there."""

from __future__ import annotations

import secrets
from datetime import timedelta

from fastapi import Response
from sqlalchemy import insert, literal, select, text

from app.api.deps import (
    BODY_ERRORS,
    INVALID_PARAMS,
    CallerDep,
    EngineDep,
    api_router,
    error,
    unknown_client,
)
from app.api.errors import ApiError
from app.api.leads import leads_of
from app.models import (
    CreatedResponse,
    FollowupIn,
    FollowupOut,
    FollowupStepOut,
    ReactivationIn,
    ReactivationOut,
    clients,
    followup_steps,
    followups,
    leads,
    reactivations,
)

router = api_router(prefix="/api", tags=["outreach"])

# Kept as text: the row comparison and xmax say plainly here what Core would not.
# Created (xmax = 0), updated, or neither when nothing changed (then no row comes back).
# A campaign id is the client's own: another client's campaign of the same id is another row.
UPSERT_REACTIVATION = text(
    """
    INSERT INTO reactivations AS r (id, client_id, inactive_days, channel, text, subject)
    VALUES (:id, :client_id, :inactive_days, :channel, :text, :subject)
    ON CONFLICT (client_id, id) DO UPDATE
    SET inactive_days = excluded.inactive_days, channel = excluded.channel, text = excluded.text,
        subject = excluded.subject, updated_at = now()
    WHERE (r.inactive_days, r.channel, r.text, r.subject)
          IS DISTINCT FROM (excluded.inactive_days, excluded.channel, excluded.text,
                            excluded.subject)
    RETURNING (xmax = 0) AS created
    """
)


@router.post(
    "/followups",
    status_code=201,
    response_model=CreatedResponse,
    responses={
        **BODY_ERRORS,
        404: error("No lead with this id (`unknown_lead`)."),
        413: error("The body is over 2 MiB."),
    },
)
async def create_followup(
    body: FollowupIn, engine: EngineDep, caller: CallerDep
) -> CreatedResponse:
    """Start a follow-up sequence: step n is due after_s seconds from now."""
    followup_id = f"fu_{secrets.token_hex(10)}"
    async with engine.begin() as conn:
        # Inserted only if the lead exists (and is the caller's): no row back means an
        # unknown lead.
        created_at = await conn.scalar(
            insert(followups)
            .from_select(
                ["id", "lead_id"],
                select(literal(followup_id), leads.c.id).where(
                    leads.c.id == body.lead_id, *leads_of(caller)
                ),
            )
            .returning(followups.c.created_at)
        )
        if created_at is None:
            raise ApiError(404, "unknown_lead", "No lead with this id.")
        await conn.execute(
            insert(followup_steps),
            [
                {
                    "followup_id": followup_id,
                    "index": i,
                    "due_at": created_at + timedelta(seconds=step.after_s),
                    **step.model_dump(),
                }
                for i, step in enumerate(body.steps)
            ],
        )
    return CreatedResponse(id=followup_id)


@router.get(
    "/followups/{followup_id}",
    response_model=FollowupOut,
    responses={
        **INVALID_PARAMS,
        404: error("No follow-up sequence with this id (`unknown_followup`)."),
    },
)
async def followup(followup_id: str, engine: EngineDep, caller: CallerDep) -> FollowupOut:
    """A sequence and the state of each of its steps."""
    step = followup_steps
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    followups.c.id,
                    followups.c.lead_id,
                    followups.c.created_at,
                    step.c.index,
                    step.c.after_s,
                    step.c.channel,
                    step.c.due_at,
                    step.c.state,
                    step.c.provider_message_id,
                )
                .join_from(followups, step, step.c.followup_id == followups.c.id)
                # A sequence is its lead's client's.
                .join(leads, leads.c.id == followups.c.lead_id)
                .where(followups.c.id == followup_id, *leads_of(caller))
                .order_by(step.c.index)
            )
        ).all()
    if not rows:
        raise ApiError(404, "unknown_followup", "No follow-up sequence with this id.")
    first = rows[0]
    steps = [FollowupStepOut.model_validate(row, from_attributes=True) for row in rows]
    return FollowupOut(id=first.id, lead_id=first.lead_id, created_at=first.created_at, steps=steps)


@router.post(
    "/reactivations",
    response_model=ReactivationOut,
    status_code=201,
    responses={
        **BODY_ERRORS,
        200: {"model": ReactivationOut, "description": "Matched or updated."},
        404: error("No client with this id (`unknown_client`)."),
    },
)
async def upsert_reactivation(
    body: ReactivationIn, response: Response, engine: EngineDep, caller: CallerDep
) -> ReactivationOut:
    """Create (201) or update (200) a campaign; each inactive lead gets its text once."""
    if not caller.sees(body.client_id):
        raise unknown_client()
    async with engine.begin() as conn:
        if await conn.scalar(select(clients.c.id).where(clients.c.id == body.client_id)) is None:
            raise ApiError(404, "unknown_client", "No client with this id.")
        created = await conn.scalar(UPSERT_REACTIVATION, body.model_dump())
        row = (
            await conn.execute(
                select(reactivations).where(
                    reactivations.c.client_id == body.client_id, reactivations.c.id == body.id
                )
            )
        ).first()
    if not created:
        response.status_code = 200
    return ReactivationOut.model_validate(row, from_attributes=True)
