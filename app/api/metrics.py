"""GET /metrics: Prometheus text, behind the API token."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import ApiAuth, DbDep
from app.metrics import render

router = APIRouter(tags=["metrics"], dependencies=[ApiAuth])


@router.get("/metrics", response_class=Response)
async def metrics(db: DbDep) -> Response:
    """Queue, runner, webhook and provider metrics in Prometheus text format."""
    async with db.acquire() as conn:
        body = await render(conn)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
