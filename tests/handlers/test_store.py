"""get_lead on the driver: every column of the table, the client's own leads only."""

from __future__ import annotations

from app.db import Database, driver_connection
from app.handlers.store import LOAD_LEAD, get_lead
from app.models import leads


def test_the_lead_statement_selects_every_column_of_the_table():
    selected = LOAD_LEAD.split("SELECT", 1)[1].split("FROM", 1)[0]
    assert [c.strip() for c in selected.split(",")] == [c.name for c in leads.c]


async def test_get_lead_reads_the_clients_own_lead(database_url, db):
    await db.execute("INSERT INTO clients (id, name) VALUES ('c1', 'One'), ('c2', 'Two')")
    await db.execute("INSERT INTO leads (id, client_id, sms_contact_id) VALUES ('l1', 'c1', 's-1')")
    store = await Database.open(database_url)
    try:
        async with store.acquire() as conn:
            lead = await get_lead(conn, "l1", "c1")
            assert lead is not None
            assert lead["client_id"] == "c1" and lead["sms_contact_id"] == "s-1"
            assert set(lead) == {c.name for c in leads.c}
            assert await get_lead(conn, "l1", "c2") is None
            assert (await get_lead(conn, "l1", None) or {}).get("id") == "l1"
            assert await get_lead(conn, "nope", "c1") is None
            assert await get_lead(conn, None, "c1") is None
        async with store.engine.begin() as conn:
            # A lead written earlier in the same transaction is seen.
            await conn.exec_driver_sql("INSERT INTO leads (id, client_id) VALUES ('l2', 'c2')")
            raw = await driver_connection(conn)
            assert (await get_lead(raw, "l2", "c2") or {}).get("id") == "l2"
            await conn.rollback()
    finally:
        await store.close()
