"""POST /sync: the dashboard's Sync button. Enqueues, never calls a provider."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy import select

from app.api.deps import ApiAuth, EngineDep
from app.api.errors import ApiError
from app.handlers.store import leads
from app.handlers.sync import channels_of
from app.models import CHANNELS, Client, JobRef, SyncRequest, SyncResponse
from app.queue import JobSpec, enqueue, enqueue_many

router = APIRouter(tags=["sync"], dependencies=[ApiAuth])
clients = Client.__table__  # type: ignore[attr-defined]


@router.post("/sync", status_code=202, response_model=SyncResponse)
async def sync(body: SyncRequest, response: Response, engine: EngineDep) -> SyncResponse:
    """Enqueue a sync of one lead's conversations, or of every lead of a client."""
    async with engine.begin() as conn:
        if body.lead_id is not None:
            lead = (
                await conn.execute(
                    select(leads.c.sms_contact_id, leads.c.email_lead_id).where(
                        leads.c.id == body.lead_id, leads.c.client_id == body.client_id
                    )
                )
            ).first()
            if lead is None:
                raise ApiError(404, "unknown_lead", "No lead with this id for this client.")
            channels = channels_of(lead, body.channels)
            if not channels:
                raise ApiError(
                    422, "no_channel", "The lead has no identity on the requested channels."
                )
            specs = [
                JobSpec(f"{body.lead_id}:{c}", body.client_id, body.lead_id, {"channel": c})
                for c in channels
            ]
            jobs = await enqueue_many(conn, "conversation_sync", specs)
        else:
            if (
                await conn.scalar(select(clients.c.id).where(clients.c.id == body.client_id))
                is None
            ):
                raise ApiError(404, "unknown_client", "No client with this id.")
            channels = [c for c in CHANNELS if body.channels is None or c in body.channels]
            jobs = [
                await enqueue(
                    conn,
                    "sync_all",
                    f"{body.client_id}:{'+'.join(channels)}",
                    client_id=body.client_id,
                    payload={"channels": channels},
                )
            ]
    response.headers["Location"] = f"/api/jobs/{jobs[0].id}"
    return SyncResponse(
        jobs=[
            JobRef(id=j.id, type=j.type, status=j.status, deduplicated=j.deduplicated) for j in jobs
        ]
    )
