"""GET /metrics: Prometheus text, for the API token alone (the counts span every client)."""

from __future__ import annotations

from fastapi import Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import DbDep, admin_router
from app.metrics import render
from app.queue.control import queue_state

router = admin_router(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text exposition format.",
            "content": {
                "text/plain": {
                    "schema": {"type": "string"},
                    "example": "# TYPE handoff_queue_depth gauge\n"
                    'handoff_queue_depth{status="pending",type="conversation_sync"} 3.0\n',
                }
            },
        }
    },
)
async def metrics(db: DbDep) -> Response:
    """Queue, runner, webhook and provider metrics in Prometheus text format."""
    async with db.acquire() as conn:
        state = await queue_state(conn)
    return Response(render(state.counts, state.oldest_due_age_s), media_type=CONTENT_TYPE_LATEST)
