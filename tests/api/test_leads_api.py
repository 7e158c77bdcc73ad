"""Clients and leads: idempotent upserts, validation, ownership, and reading stored messages."""

from __future__ import annotations

from datetime import datetime

from app.sandbox.data import email_history, sms_history
from tests.support import assert_error, seed


async def add_client(service, client_id: str = "acme", name: str = "Acme") -> None:
    response = await service.api.post("/api/clients", json={"id": client_id, "name": name})
    assert response.status_code == 200, response.text


async def test_client_upsert_is_idempotent_and_renames(service, db):
    body = {"id": "acme", "name": "Acme"}
    first = await service.api.post("/api/clients", json=body)
    second = await service.api.post("/api/clients", json=body)
    assert first.status_code == 200, first.text
    assert second.status_code == 200, second.text
    assert await db.fetchval("SELECT count(*) FROM clients") == 1

    renamed = await service.api.post("/api/clients", json={"id": "acme", "name": "Acme Corp"})
    assert renamed.status_code == 200, renamed.text
    assert await db.fetchval("SELECT count(*) FROM clients") == 1
    assert await db.fetchval("SELECT name FROM clients WHERE id = 'acme'") == "Acme Corp"


async def test_client_rejects_bad_bodies(service, db):
    for body in (
        {"id": "a b", "name": "x"},
        {"id": "acme"},
        {"name": "x"},
        {"id": "", "name": "x"},
    ):
        assert_error(await service.api.post("/api/clients", json=body), 422)
    assert await db.fetchval("SELECT count(*) FROM clients") == 0


async def test_upsert_up_to_1000_leads(service, db):
    await add_client(service)
    batch = [{"id": f"lead-{i:04d}", "name": f"Lead {i}"} for i in range(1000)]
    body = {"client_id": "acme", "leads": batch}
    response = await service.api.post("/api/leads", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"upserted": 1000}
    assert await db.fetchval("SELECT count(*) FROM leads WHERE client_id = 'acme'") == 1000

    # The same batch again matches the same rows rather than adding any.
    again = await service.api.post("/api/leads", json=body)
    assert again.status_code == 200, again.text
    assert again.json() == {"upserted": 1000}
    assert await db.fetchval("SELECT count(*) FROM leads") == 1000


async def test_lead_batch_size_bounds(service, db):
    await add_client(service)
    too_many = [{"id": f"lead-{i}"} for i in range(1001)]
    assert_error(
        await service.api.post("/api/leads", json={"client_id": "acme", "leads": too_many}), 422
    )
    assert_error(await service.api.post("/api/leads", json={"client_id": "acme", "leads": []}), 422)
    assert await db.fetchval("SELECT count(*) FROM leads") == 0


async def test_lead_ids_are_validated(service, db):
    await add_client(service)
    for bad in ("", "x" * 65, "a b", "é", "a/b"):
        body = {"client_id": "acme", "leads": [{"id": "good-1"}, {"id": bad}]}
        assert_error(await service.api.post("/api/leads", json=body), 422)
        identity = {"client_id": "acme", "leads": [{"id": "good-2", "sms_contact_id": bad}]}
        assert_error(await service.api.post("/api/leads", json=identity), 422)
    # The longest allowed id, with every allowed punctuation mark, is fine.
    edge = "A-z_0.9:" + "x" * 56
    ok = await service.api.post("/api/leads", json={"client_id": "acme", "leads": [{"id": edge}]})
    assert ok.status_code == 200, ok.text
    assert [r["id"] for r in await db.fetch("SELECT id FROM leads")] == [edge]


async def test_leads_of_unknown_client_are_refused(service, db):
    body = {"client_id": "nobody", "leads": [{"id": "lead-1"}]}
    assert_error(await service.api.post("/api/leads", json=body), 404)
    assert await db.fetchval("SELECT count(*) FROM leads") == 0


async def test_lead_of_another_client_is_refused_and_nothing_written(service, db):
    await add_client(service, "acme")
    await add_client(service, "other", "Other")
    owned = {"client_id": "other", "leads": [{"id": "shared", "name": "Theirs"}]}
    assert (await service.api.post("/api/leads", json=owned)).status_code == 200
    before = [dict(r) for r in await db.fetch("SELECT * FROM leads ORDER BY id")]

    body = {
        "client_id": "acme",
        "leads": [{"id": "fresh", "name": "Mine"}, {"id": "shared", "name": "Mine too"}],
    }
    assert_error(await service.api.post("/api/leads", json=body), 409)
    assert [dict(r) for r in await db.fetch("SELECT * FROM leads ORDER BY id")] == before
    lead = (await service.api.get("/api/leads/shared")).json()
    assert lead["client_id"] == "other" and lead["name"] == "Theirs"


async def test_field_left_out_keeps_its_value(service):
    await add_client(service)
    full = {
        "id": "lead-1",
        "name": "Ada",
        "email": "ada@example.com",
        "phone": "+15550001111",
        "sms_contact_id": "c-1",
        "email_lead_id": "e-1",
    }
    response = await service.api.post("/api/leads", json={"client_id": "acme", "leads": [full]})
    assert response.status_code == 200, response.text

    partial = {"id": "lead-1", "name": "Ada L."}
    response = await service.api.post("/api/leads", json={"client_id": "acme", "leads": [partial]})
    assert response.status_code == 200, response.text
    lead = (await service.api.get("/api/leads/lead-1")).json()
    assert lead["name"] == "Ada L."
    for field in ("email", "phone", "sms_contact_id", "email_lead_id"):
        assert lead[field] == full[field], field


async def test_get_lead_includes_score(service):
    [lead_id] = await seed(service, leads=1)
    response = await service.api.get(f"/api/leads/{lead_id}")
    assert response.status_code == 200, response.text
    lead = response.json()
    assert lead["id"] == lead_id and lead["client_id"] == "acme"
    assert lead["name"] == "Lead 0"
    assert lead["sms_contact_id"] == f"c-{lead_id}"
    assert lead["email_lead_id"] == f"e-{lead_id}"
    assert "score" in lead and lead["score"] is None


async def test_unknown_lead_is_404(service):
    await seed(service, leads=1)
    assert_error(await service.api.get("/api/leads/nobody"), 404)
    assert_error(await service.api.get("/api/leads/nobody/messages"), 404)


async def test_messages_after_sync_match_the_provider_history(service, sandbox):
    [lead_id] = await seed(service, leads=1)
    empty = await service.api.get(f"/api/leads/{lead_id}/messages")
    assert empty.status_code == 200 and empty.json() == {"messages": []}

    response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead_id})
    assert response.status_code == 202, response.text
    summary = await service.run_jobs()
    assert summary["succeeded"] == 2 and summary["failed"] == 0

    expected = [
        ("sms", m["id"], m["direction"], m["body"], datetime.fromisoformat(m["sent_at"]))
        for m in sms_history(f"c-{lead_id}")
    ] + [
        ("email", m["id"], m["direction"], m["text"], datetime.fromisoformat(m["sent_at"]))
        for m in email_history(f"e-{lead_id}")
    ]
    response = await service.api.get(f"/api/leads/{lead_id}/messages")
    assert response.status_code == 200, response.text
    listed = response.json()["messages"]
    assert all(
        set(m) == {"id", "channel", "direction", "text", "provider_message_id", "sent_at"}
        for m in listed
    )
    got = [
        (
            m["channel"],
            m["provider_message_id"],
            m["direction"],
            m["text"],
            datetime.fromisoformat(m["sent_at"]),
        )
        for m in listed
    ]
    assert len(got) == len(expected)
    assert sorted(got) == sorted(expected)
    times = [row[4] for row in got]
    assert times == sorted(times), "messages are listed oldest first"
    assert len({m["id"] for m in listed}) == len(listed)
