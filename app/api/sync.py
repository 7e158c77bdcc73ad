"""POST /sync: the dashboard's Sync button. Enqueues, never calls a provider."""

from __future__ import annotations

from fastapi import Response

from app.api.deps import BODY_ERRORS, CallerDep, DbDep, api_router, error, unknown_client
from app.api.errors import ApiError
from app.models import CHANNELS, JobRef, SyncRequest, SyncResponse, channels_of
from app.queue import JobSpec, enqueue, enqueue_many

router = api_router(tags=["sync"])


def unknown_lead() -> ApiError:
    return ApiError(404, "unknown_lead", "No lead with this id for this client.")


@router.post(
    "/sync",
    status_code=202,
    response_model=SyncResponse,
    responses={
        **BODY_ERRORS,
        202: {
            "description": "Enqueued (or deduplicated into the live job).",
            "headers": {
                "Location": {
                    "description": "/api/jobs/{id of the first job}",
                    "schema": {"type": "string"},
                }
            },
        },
        404: error("No such client (`unknown_client`) or lead (`unknown_lead`)."),
    },
)
async def sync(body: SyncRequest, response: Response, db: DbDep, caller: CallerDep) -> SyncResponse:
    """Enqueue a sync of one lead's conversations, or of every lead of a client."""
    if not caller.sees(body.client_id):
        # Another client's id: answered as an unknown client's would be, below.
        raise unknown_lead() if body.lead_id is not None else unknown_client()
    # Two single-statement reads and writes, no transaction around them: the lead (or
    # client) read only decides what to enqueue, and the enqueue is one atomic upsert.
    async with db.acquire() as conn:
        if body.lead_id is not None:
            lead = await conn.fetchrow(
                "SELECT sms_contact_id, email_lead_id, phone, email FROM leads"
                " WHERE id = $1 AND client_id = $2",
                body.lead_id,
                body.client_id,
            )
            if lead is None:
                raise unknown_lead()
            channels = channels_of(lead, body.channels)
            if not channels:
                raise ApiError(
                    422, "no_channel", "The lead has no identity on the requested channels."
                )
            specs = [
                JobSpec((body.lead_id, c), body.client_id, body.lead_id, {"channel": c})
                for c in channels
            ]
            jobs = await enqueue_many(conn, "conversation_sync", specs)
        else:
            if await conn.fetchval("SELECT 1 FROM clients WHERE id = $1", body.client_id) is None:
                raise unknown_client()
            channels = [c for c in CHANNELS if body.channels is None or c in body.channels]
            jobs = [
                await enqueue(
                    conn,
                    "sync_all",
                    (body.client_id, "+".join(channels)),
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
