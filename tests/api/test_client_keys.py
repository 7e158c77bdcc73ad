"""Client keys: made, listed and revoked by the API token; refused once revoked; what a key
sees of its own client's things and of another's (tests/api/test_access_matrix.py calls every
route with every kind of caller)."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from typing import Any

from app.telemetry import scrub
from tests.api.test_hardening import MIB, chunk, post_head, raw_exchange
from tests.support import (
    assert_error,
    bearer,
    insert_job,
    make_client_key,
    revoke_client_key,
    seed,
)

OWN, OTHER = "acme", "globex"


# --- the key's lifecycle ---------------------------------------------------------------------


async def test_a_key_is_shown_once_stored_as_a_hash_and_listed_without_secrets(service, db, logs):
    await seed(service, OWN, leads=1)
    first, second = await make_client_key(service, OWN), await make_client_key(service, OWN)

    assert set(first) == {"id", "key", "client_id", "created_at"}
    assert first["client_id"] == OWN and first["id"].startswith("key_")
    for made in (first, second):
        assert made["key"].startswith("hk_") and len(made["key"]) == 46
    assert first["key"] != second["key"] and first["id"] != second["id"]

    # Only the SHA-256 of the key is kept: no column holds the key or any long part of it.
    rows = await db.fetch("SELECT * FROM client_keys ORDER BY created_at, id")
    assert [r["id"] for r in rows] == [first["id"], second["id"]]
    for row, made in zip(rows, (first, second), strict=True):
        assert row["hash"] == hashlib.sha256(made["key"].encode()).hexdigest()
        assert row["client_id"] == OWN and row["revoked_at"] is None
        stored = json.dumps([str(value) for value in row.values()])
        assert made["key"] not in stored and made["key"][3:20] not in stored

    listed = await service.api.get(f"/api/clients/{OWN}/keys")
    assert listed.status_code == 200
    keys = listed.json()["keys"]
    assert [k["id"] for k in keys] == [first["id"], second["id"]]
    assert set(keys[0]) == {"id", "client_id", "last4", "created_at", "revoked_at"}
    assert keys[0]["last4"] == first["key"][-4:] and keys[0]["revoked_at"] is None
    for made, row in zip((first, second), rows, strict=True):
        assert made["key"] not in listed.text and row["hash"] not in listed.text

    # The key works, for its own client.
    response = await service.anon.get("/api/clients", headers=bearer(first["key"]))
    assert response.status_code == 200
    assert [(c["id"], c["name"]) for c in response.json()["clients"]] == [(OWN, "Acme")]
    for line in logs.lines:
        assert first["key"] not in line and second["key"] not in line


async def test_a_revoked_key_is_refused_at_once_by_every_server(start_service, db):
    one, two = start_service(), start_service()  # two servers, one database
    [lead] = await seed(one, OWN, leads=1)
    made = await make_client_key(one, OWN)
    headers = bearer(made["key"])
    for service in (one, two):
        assert (await service.anon.get(f"/api/leads/{lead}", headers=headers)).status_code == 200

    await revoke_client_key(one, OWN, made["id"])
    revoked_at = time.monotonic()
    for service in (two, one):
        assert_error(await service.anon.get(f"/api/leads/{lead}", headers=headers), 401)
    # No cache: the very next request is refused, well within the second promised.
    assert time.monotonic() - revoked_at < 1.0

    [listed] = (await one.api.get(f"/api/clients/{OWN}/keys")).json()["keys"]
    assert listed["id"] == made["id"] and listed["revoked_at"] is not None
    # Revoking again changes nothing and answers the same.
    await revoke_client_key(two, OWN, made["id"])
    [again] = (await one.api.get(f"/api/clients/{OWN}/keys")).json()["keys"]
    assert again["revoked_at"] == listed["revoked_at"]


async def test_keys_of_unknown_clients_and_unknown_keys_are_404(service, db):
    await seed(service, OWN, leads=0)
    await seed(service, OTHER, leads=0)
    made = await make_client_key(service, OWN)
    assert_error(await service.api.post("/api/clients/ghost/keys"), 404, "unknown_client")
    assert_error(await service.api.get("/api/clients/ghost/keys"), 404, "unknown_client")
    assert_error(
        await service.api.delete(f"/api/clients/ghost/keys/{made['id']}"), 404, "unknown_client"
    )
    assert_error(await service.api.delete(f"/api/clients/{OWN}/keys/key_nope"), 404, "unknown_key")
    # A key is revoked only through its own client.
    assert_error(
        await service.api.delete(f"/api/clients/{OTHER}/keys/{made['id']}"), 404, "unknown_key"
    )
    assert (await service.api.get(f"/api/clients/{OTHER}/keys")).json() == {"keys": []}
    assert await db.fetchval("SELECT count(*) FROM client_keys WHERE revoked_at IS NULL") == 1
    assert await db.fetchval("SELECT count(*) FROM client_keys") == 1


# --- the guard -------------------------------------------------------------------------------


async def test_anything_but_a_live_key_is_401(service, db):
    await seed(service, OWN, leads=0)
    made = await make_client_key(service, OWN)
    fake = "hk_" + "A" * 43  # shaped like a key, but no key
    for token in (fake, made["key"] + "x", made["key"][:-1], made["key"].upper(), "hk_"):
        response = await service.anon.get("/api/clients", headers=bearer(token))
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].lower().startswith("bearer")
    scheme = {"Authorization": f"Basic {made['key']}"}
    assert_error(await service.anon.get("/api/clients", headers=scheme), 401)


async def test_with_the_database_down_a_key_is_503_and_a_wrong_token_still_401(start_service):
    service = start_service(database_url="postgresql://postgres@127.0.0.1:1/nowhere")
    key = "hk_" + "B" * 43
    started = time.monotonic()
    response = await service.anon.get("/api/jobs", headers=bearer(key))
    assert time.monotonic() - started < 5
    assert_error(response, 503, "database_unavailable")
    assert response.headers["Retry-After"].isdigit()
    # The API token and anything not shaped like a key are decided without the database.
    for headers in ({}, bearer("not-the-token-at-all"), bearer("hk_short")):
        assert_error(await service.anon.get("/api/jobs", headers=headers), 401)
    assert_error(await service.anon.post(f"/api/clients/{OWN}/keys", headers=bearer(key)), 503)
    # The API token passes the guard; the route itself then needs the database.
    assert_error(await service.api.get("/api/jobs"), 503, "database_unavailable")


async def test_a_huge_body_is_refused_before_it_is_read_for_a_revoked_or_forbidden_key(service):
    await seed(service, OWN, leads=0)
    live, revoked = await make_client_key(service, OWN), await make_client_key(service, OWN)
    await revoke_client_key(service, OWN, revoked["id"])
    megabyte = b"[" + b"1," * (MIB // 2 - 1)
    for path, token, status in (
        ("/sync", revoked["key"], 401),
        ("/api/leads", "hk_" + "C" * 43, 401),
        ("/api/clients", live["key"], 403),
    ):
        head = post_head(path, token=token, length=None)
        code, headers, body, took = await raw_exchange(
            service.base_url, head, [chunk(megabyte)], read_s=10
        )
        assert code == status, body[:200]
        assert took < 1.0, f"{path}: {took:.2f} s"


def test_log_lines_mask_anything_shaped_like_a_client_key():
    key = "hk_" + secrets.token_urlsafe(32)
    line = scrub(f"GET /?token={key}&v=1 HTTP/1.1")
    assert key not in line and line == "GET /?token=[secret]&v=1 HTTP/1.1"
    started = time.perf_counter()
    scrub("hk_" * 30_000 + "hk_" + "a" * 60_000)
    assert time.perf_counter() - started < 0.5


# --- what a key sees -------------------------------------------------------------------------


async def test_a_key_lists_only_its_clients_things(service, db):
    [own_lead] = await seed(service, OWN, leads=1)
    [other_lead] = await seed(service, OTHER, leads=1)
    own = (await make_client_key(service, OWN))["key"]
    own_jobs = {await insert_job(db, OWN, "failed", f"own-{n}") for n in range(3)}
    other_job = await insert_job(db, OTHER, "failed", "other")
    nobodys = await insert_job(db, None, "failed", "tick")

    async def get(path: str) -> Any:
        response = await service.anon.get(path, headers=bearer(own))
        assert response.status_code == 200, (path, response.text)
        return response.json()

    assert {j["id"] for j in (await get("/api/jobs"))["jobs"]} == own_jobs
    assert {j["id"] for j in (await get("/api/jobs?status=failed&limit=1000"))["jobs"]} == own_jobs
    assert (await get("/api/jobs?type=conversation_sync&limit=2"))["jobs"][0]["id"] == max(
        own_jobs, key=int
    )
    everything = (await service.api.get("/api/jobs")).json()["jobs"]
    assert {j["id"] for j in everything} == own_jobs | {other_job, nobodys}
    # A job of no client (a cron tick) is the API token's alone.
    for job in (other_job, nobodys):
        for action in ("", "/retry", "/cancel"):
            method = "POST" if action else "GET"
            path = f"/api/jobs/{job}{action}"
            response = await service.anon.request(method, path, headers=bearer(own))
            assert_error(response, 404, "unknown_job")
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'failed'") == 5

    assert [(c["id"], c["name"]) for c in (await get("/api/clients"))["clients"]] == [(OWN, "Acme")]
    assert [lead["id"] for lead in (await get(f"/api/leads?client_id={OWN}"))["leads"]] == [
        own_lead
    ]
    assert (await get(f"/api/leads/{own_lead}"))["client_id"] == OWN
    response = await service.anon.get(f"/api/leads/{other_lead}", headers=bearer(own))
    assert_error(response, 404, "unknown_lead")


async def test_sync_of_another_client_is_answered_as_an_unknown_one(service, db):
    await seed(service, OWN, leads=1)
    [other_lead] = await seed(service, OTHER, leads=1)
    own = bearer((await make_client_key(service, OWN))["key"])
    pairs = [
        ({"client_id": OTHER}, {"client_id": "ghost"}),
        ({"client_id": OTHER, "lead_id": other_lead}, {"client_id": "ghost", "lead_id": "nope"}),
        ({"client_id": OWN, "lead_id": other_lead}, {"client_id": OWN, "lead_id": "nope"}),
    ]
    for theirs, missing in pairs:
        refused = await service.anon.post("/sync", json=theirs, headers=own)
        absent = await service.anon.post("/sync", json=missing, headers=own)
        assert_error(refused, 404)
        assert (refused.status_code, refused.json()) == (absent.status_code, absent.json())
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    mine = await service.anon.post("/sync", json={"client_id": OWN}, headers=own)
    assert mine.status_code == 202, mine.text


async def test_a_lead_id_another_client_holds_is_taken_and_says_no_more(service, db):
    await seed(service, OWN, leads=0)
    [other_lead] = await seed(service, OTHER, leads=1)
    own = bearer((await make_client_key(service, OWN))["key"])
    body = {"client_id": OWN, "leads": [{"id": "fresh"}, {"id": other_lead, "name": "Mine"}]}
    for headers in (own, {}):
        client = service.anon if headers else service.api
        answer = assert_error(await client.post("/api/leads", json=body, headers=headers), 409)
        assert answer["error"] == "lead_id_taken"
        assert OTHER not in json.dumps(answer) and other_lead not in json.dumps(answer)
        assert "client" not in answer["detail"]
    assert await db.fetchval("SELECT count(*) FROM leads WHERE client_id = $1", OWN) == 0
    # Its own client's leads a key upserts as the token would.
    mine = {"client_id": OWN, "leads": [{"id": "fresh", "name": "Ada"}]}
    assert (await service.anon.post("/api/leads", json=mine, headers=own)).json() == {"upserted": 1}


async def test_follow_ups_and_campaigns_of_another_client_are_not_there(service, db):
    [own_lead] = await seed(service, OWN, leads=1)
    [other_lead] = await seed(service, OTHER, leads=1)
    own = bearer((await make_client_key(service, OWN))["key"])
    step = {"after_s": 3600, "channel": "sms", "text": "Still looking?"}
    theirs = await service.api.post("/api/followups", json={"lead_id": other_lead, "steps": [step]})
    assert theirs.status_code == 201

    for lead in (other_lead, "nope"):
        body = {"lead_id": lead, "steps": [step]}
        response = await service.anon.post("/api/followups", json=body, headers=own)
        assert_error(response, 404, "unknown_lead")
    for followup in (theirs.json()["id"], "fu_nope"):
        response = await service.anon.get(f"/api/followups/{followup}", headers=own)
        assert_error(response, 404, "unknown_followup")
    mine = await service.anon.post(
        "/api/followups", json={"lead_id": own_lead, "steps": [step]}, headers=own
    )
    assert mine.status_code == 201
    seen = await service.anon.get(f"/api/followups/{mine.json()['id']}", headers=own)
    assert seen.json()["lead_id"] == own_lead

    campaign = {"id": "spring", "inactive_days": 30, "channel": "sms", "text": "Hello again"}
    for client_id in (OTHER, "ghost"):
        body = {**campaign, "client_id": client_id}
        response = await service.anon.post("/api/reactivations", json=body, headers=own)
        assert_error(response, 404, "unknown_client")
    assert await db.fetchval("SELECT count(*) FROM reactivations") == 0
    body = {**campaign, "client_id": OWN}
    assert (
        await service.anon.post("/api/reactivations", json=body, headers=own)
    ).status_code == 201
    assert await db.fetchval("SELECT count(*) FROM followups") == 2
