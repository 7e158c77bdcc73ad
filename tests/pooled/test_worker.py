"""Draining behind a real PgBouncer: the runner endpoint and `python -m app.worker` with a
pooled DATABASE_URL, and the worker's warning when it would LISTEN through the pooler."""

from __future__ import annotations

import signal

from tests.pooled.bouncer import direct_session, leftovers, server_sessions
from tests.support import eventually, seed

LEADS = 10


def listen_warnings(process_logs) -> list[dict]:
    return [
        r
        for r in process_logs.records("worker")
        if r.get("level") == "warning" and "LISTEN" in r.get("msg", "")
    ]


def stop(worker) -> int:
    """SIGTERM, as a platform stops it; its exit status."""
    worker.send_signal(signal.SIGTERM)
    return worker.wait(timeout=30)


async def test_the_runner_and_a_worker_drain_through_pgbouncer(
    start_service, start_worker, pooled_url, database_url, db, process_logs, slow_jit
):
    start = await direct_session(database_url)
    await server_sessions(pooled_url)
    service = start_service(database_url=pooled_url, database_pooled=True)
    leads = await seed(service, leads=LEADS)
    half = leads[: LEADS // 2]
    for lead in half:
        response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
        assert response.status_code == 202, response.text

    # The runner: claim and the batched outcomes, through the pooler.
    summary = await service.run_jobs()
    assert (summary["succeeded"], summary["failed"], summary["remaining_due"]) == (
        2 * len(half),
        0,
        0,
    )

    # A worker (LISTEN on the direct URL), and a fan-out enqueued inside a handler's
    # transaction on the engine's connection.
    worker = start_worker(
        database_url=pooled_url, database_pooled=True, database_direct_url=database_url
    )
    response = await service.api.post("/sync", json={"client_id": "acme"})
    assert response.status_code == 202, response.text

    async def all_done() -> bool:
        # The fan-out syncs every lead again, the first half included (their syncs are done).
        counts = await db.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'succeeded') AS done, count(*) AS total "
            "FROM jobs WHERE type IN ('conversation_sync', 'sync_all')"
        )
        return counts["done"] == counts["total"] == 2 * len(half) + 1 + 2 * LEADS

    await eventually(all_done, 30, step_s=0.1, what="every sync done by the worker")
    assert stop(worker) == 0
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 0
    assert listen_warnings(process_logs) == []
    assert process_logs.errors("worker") == []
    assert leftovers(await server_sessions(pooled_url), start) == []


async def test_a_worker_that_would_listen_through_the_pooler_warns_and_polls(
    start_service, start_worker, pooled_url, db, process_logs
):
    service = start_service(database_url=pooled_url, database_pooled=True)
    [lead] = await seed(service, leads=1)
    worker = start_worker(database_url=pooled_url, database_pooled=True, worker_poll_interval_s=0.2)

    async def warned() -> list[dict]:
        return listen_warnings(process_logs)

    [warning] = await eventually(warned, 20, what="the worker's warning")
    assert "DATABASE_DIRECT_URL" in warning["msg"]
    assert warning["invocation_id"].startswith("worker-")

    response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    assert response.status_code == 202, response.text

    async def done() -> bool:
        return await db.fetchval("SELECT bool_and(status = 'succeeded') FROM jobs") is True

    await eventually(done, 20, step_s=0.1, what="the sync done by a polling worker")
    assert stop(worker) == 0
    assert process_logs.errors("worker") == []
