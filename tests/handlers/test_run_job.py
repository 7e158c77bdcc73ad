"""Handlers run directly with `run_job`: a real Runner on the test's database, the sandbox
providers, and no HTTP server of handoff's own."""

from __future__ import annotations

import httpx

import app.runtime  # noqa: F401  (registers every handler, the queue's own included)
from app.handlers import Providers
from tests.support import assert_enqueued, run_job


async def seed_lead(db) -> None:
    await db.execute("INSERT INTO clients (id, name) VALUES ('acme', 'Acme')")
    await db.execute(
        "INSERT INTO leads (id, client_id, sms_contact_id, email_lead_id)"
        " VALUES ('lead-1', 'acme', 'c-lead-1', 'e-lead-1')"
    )


async def test_conversation_sync_stores_the_history_it_pages_through(
    database_url, db, make_settings
):
    await seed_lead(db)
    async with httpx.AsyncClient() as http:
        providers = Providers.from_settings(make_settings(), http)
        job = await run_job(
            database_url,
            "conversation_sync",
            "lead-1:sms",
            client_id="acme",
            lead_id="lead-1",
            payload={"channel": "sms"},
            deps=providers,
        )
    assert job["status"] == "succeeded", job["last_error"]
    stored = await db.fetchval("SELECT count(*) FROM messages WHERE lead_id = 'lead-1'")
    assert stored > 0


async def test_sync_all_fans_out_one_sync_per_lead_and_channel(database_url, db):
    await seed_lead(db)
    job = await run_job(database_url, "sync_all", "acme:sms+email", client_id="acme")
    assert job["status"] == "succeeded", job["last_error"]
    await assert_enqueued(db, "conversation_sync", count=2, lead_id="lead-1", status="pending")
