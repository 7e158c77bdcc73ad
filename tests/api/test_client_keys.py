"""Client keys: made, listed and revoked by the API token; what each caller may reach.

The matrix at the end takes every route the app has (a route it does not classify fails it)
and calls it with the API token, a key of the client whose things are asked for, another
client's key, a revoked key and no key at all, on one service and one database, all at once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.fernet import Fernet
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount, Route

from app.main import create_app
from app.telemetry import scrub
from tests.api.test_hardening import MIB, chunk, post_head, raw_exchange
from tests.support import API_TOKEN, assert_error, gather_limited, seed

OWN, OTHER = "acme", "globex"
CELLS = ("token", "own", "other", "revoked", "none")
JOB_COLUMNS = "type, dedupe_key, dedupe_scope, client_id, lead_id, status, run_at, finished_at"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_key(service, client_id: str = OWN) -> dict:
    response = await service.api.post(f"/api/clients/{client_id}/keys")
    assert response.status_code == 201, response.text
    return response.json()


async def revoke(service, client_id: str, key_id: str) -> None:
    response = await service.api.delete(f"/api/clients/{client_id}/keys/{key_id}")
    assert response.status_code == 204, response.text
    assert response.content == b""


async def add_job(db, client_id: str | None, status: str, key: str) -> str:
    """A job row of `client_id` (None: of no client) in `status`, due in an hour if pending."""
    job_id = await db.fetchval(
        f"""
        INSERT INTO jobs ({JOB_COLUMNS})
        VALUES ('conversation_sync', $1, 'forever', $2::text, $3::text, $4,
                now() + interval '1 hour', CASE WHEN $4 = 'pending' THEN NULL ELSE now() END)
        RETURNING id
        """,  # noqa: S608 (a fixed column list)
        f"test:{key}",
        client_id,
        f"{client_id}-lead-0" if client_id else None,
        status,
    )
    return str(job_id)


# --- the key's lifecycle ---------------------------------------------------------------------


async def test_a_key_is_shown_once_stored_as_a_hash_and_listed_without_secrets(service, db, logs):
    await seed(service, OWN, leads=1)
    first, second = await make_key(service), await make_key(service)

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
    assert response.json() == {"clients": [{"id": OWN, "name": "Acme"}]}
    for line in logs.lines:
        assert first["key"] not in line and second["key"] not in line


async def test_a_revoked_key_is_refused_at_once_by_every_server(start_service, db):
    one, two = start_service(), start_service()  # two servers, one database
    [lead] = await seed(one, OWN, leads=1)
    made = await make_key(one)
    headers = bearer(made["key"])
    for service in (one, two):
        assert (await service.anon.get(f"/api/leads/{lead}", headers=headers)).status_code == 200

    await revoke(one, OWN, made["id"])
    revoked_at = time.monotonic()
    for service in (two, one):
        assert_error(await service.anon.get(f"/api/leads/{lead}", headers=headers), 401)
    # No cache: the very next request is refused, well within the second promised.
    assert time.monotonic() - revoked_at < 1.0

    [listed] = (await one.api.get(f"/api/clients/{OWN}/keys")).json()["keys"]
    assert listed["id"] == made["id"] and listed["revoked_at"] is not None
    # Revoking again changes nothing and answers the same.
    await revoke(two, OWN, made["id"])
    [again] = (await one.api.get(f"/api/clients/{OWN}/keys")).json()["keys"]
    assert again["revoked_at"] == listed["revoked_at"]


async def test_keys_of_unknown_clients_and_unknown_keys_are_404(service, db):
    await seed(service, OWN, leads=0)
    await seed(service, OTHER, leads=0)
    made = await make_key(service, OWN)
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


async def test_keys_that_are_not_live_are_401_and_only_key_shaped_ones_are_looked_up(service, db):
    await seed(service, OWN, leads=0)
    made = await make_key(service)
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
    live, revoked = await make_key(service), await make_key(service)
    await revoke(service, OWN, revoked["id"])
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
    own = (await make_key(service, OWN))["key"]
    own_jobs = {await add_job(db, OWN, "failed", f"own-{n}") for n in range(3)}
    other_job = await add_job(db, OTHER, "failed", "other")
    nobodys = await add_job(db, None, "failed", "tick")

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

    assert await get("/api/clients") == {"clients": [{"id": OWN, "name": "Acme"}]}
    assert [lead["id"] for lead in (await get(f"/api/leads?client_id={OWN}"))["leads"]] == [
        own_lead
    ]
    assert (await get(f"/api/leads/{own_lead}"))["client_id"] == OWN
    response = await service.anon.get(f"/api/leads/{other_lead}", headers=bearer(own))
    assert_error(response, 404, "unknown_lead")


async def test_sync_of_another_client_is_answered_as_an_unknown_one(service, db):
    await seed(service, OWN, leads=1)
    [other_lead] = await seed(service, OTHER, leads=1)
    own = bearer((await make_key(service, OWN))["key"])
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
    own = bearer((await make_key(service, OWN))["key"])
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
    own = bearer((await make_key(service, OWN))["key"])
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


# --- the matrix: every route x every kind of caller -----------------------------------------

GHOST = {
    "client": "ghost",
    "lead": "ghost-lead",
    "job": "999999991",
    "pending": "999999992",
    "failed": "999999993",
    "key": "key_ghost",
    "followup": "fu_ghost",
}


@dataclass
class Case:
    """How to call one route, and what the API token gets.

    kind: public (no credentials needed), cron / webhook (their own secrets: every cell is 401),
    admin (API token only), api (API token and client keys). `url` and `body` are filled from
    the world's ids: the own client's things, or ghosts (things that do not exist).
    """

    kind: str
    ok: int
    url: str
    body: Callable[[dict], Any] | None = None
    # What another client's key gets on an api route: 404, or 200 for a list it sees its share of.
    other: int = 404
    # For such a list: whether the answer holds nothing of the own client's.
    other_sees: Callable[[Any], bool] | None = None


def step_body(ids: dict) -> dict:
    return {"lead_id": ids["lead"], "steps": [{"after_s": 3600, "channel": "sms", "text": "Hi"}]}


def campaign_body(ids: dict) -> dict:
    return {
        "id": f"spring-{ids['cell']}",
        "client_id": ids["client"],
        "inactive_days": 30,
        "channel": "sms",
        "text": "Hello again",
    }


SMS_ACCOUNT = {"kind": "generic", "settings": {"url": "https://sms.example", "key": "k" * 24}}
AI_ACCOUNT = {
    "kind": "generic",
    "settings": {"url": "https://ai.example", "key": "k" * 24, "model": "m"},
}
CRON = Case("cron", 401, "")
PUBLIC = Case("public", 200, "")
CASES: dict[tuple[str, str], Case] = {
    ("POST", "/sync"): Case(
        "api", 202, "/sync", lambda ids: {"client_id": ids["client"], "lead_id": ids["lead"]}
    ),
    ("GET", "/api/jobs"): Case(
        "api", 200, "/api/jobs", other=200, other_sees=lambda answer: answer == {"jobs": []}
    ),
    ("GET", "/api/jobs/overview"): Case("api", 200, "/api/jobs/overview", other=200),
    ("GET", "/api/jobs/{job_id}"): Case("api", 200, "/api/jobs/{job}"),
    ("POST", "/api/jobs/{job_id}/retry"): Case("api", 200, "/api/jobs/{failed}/retry"),
    ("POST", "/api/jobs/{job_id}/cancel"): Case("api", 200, "/api/jobs/{pending}/cancel"),
    ("GET", "/api/clients"): Case(
        "api",
        200,
        "/api/clients",
        other=200,
        other_sees=lambda answer: answer == {"clients": [{"id": OTHER, "name": "Acme"}]},
    ),
    ("POST", "/api/clients"): Case(
        "admin", 200, "/api/clients", lambda ids: {"id": ids["client"], "name": "Acme"}
    ),
    ("GET", "/api/leads"): Case("api", 200, "/api/leads?client_id={client}"),
    ("POST", "/api/leads"): Case(
        "api", 200, "/api/leads", lambda ids: {"client_id": ids["client"], "leads": [{"id": "x1"}]}
    ),
    ("GET", "/api/leads/{lead_id}"): Case("api", 200, "/api/leads/{lead}"),
    ("GET", "/api/leads/{lead_id}/messages"): Case("api", 200, "/api/leads/{lead}/messages"),
    ("POST", "/api/followups"): Case("api", 201, "/api/followups", step_body),
    ("GET", "/api/followups/{followup_id}"): Case("api", 200, "/api/followups/{followup}"),
    ("POST", "/api/reactivations"): Case("api", 201, "/api/reactivations", campaign_body),
    ("POST", "/api/clients/{client_id}/keys"): Case("admin", 201, "/api/clients/{client}/keys"),
    ("GET", "/api/clients/{client_id}/keys"): Case("admin", 200, "/api/clients/{client}/keys"),
    ("DELETE", "/api/clients/{client_id}/keys/{key_id}"): Case(
        "admin", 204, "/api/clients/{client}/keys/{key}"
    ),
    ("PUT", "/api/clients/{client_id}/providers/{channel}"): Case(
        "admin", 200, "/api/clients/{client}/providers/sms", lambda ids: SMS_ACCOUNT
    ),
    # The world gives the own client an email account to read, and an AI one to remove.
    ("GET", "/api/clients/{client_id}/providers/{channel}"): Case(
        "admin", 200, "/api/clients/{client}/providers/email"
    ),
    ("DELETE", "/api/clients/{client_id}/providers/{channel}"): Case(
        "admin", 204, "/api/clients/{client}/providers/ai"
    ),
    ("GET", "/metrics"): Case("admin", 200, "/metrics"),
    ("POST", "/webhooks/email"): Case("webhook", 401, "/webhooks/email", lambda ids: {}),
    ("POST", "/webhooks/email/{client_id}"): Case(
        "webhook", 401, "/webhooks/email/{client}", lambda ids: {}
    ),
    **{
        (method, f"/api/cron/{name}"): CRON
        for name in ("followups", "reactivations", "background-jobs")
        for method in ("GET", "POST")
    },
    **{
        ("GET", path): PUBLIC
        for path in (
            "/healthz",
            "/readyz",
            "/",
            "/docs",
            "/docs/oauth2-redirect",
            "/redoc",
            "/openapi.json",
            "/static/{path}",
        )
    },
}
# A public route's concrete address, where its path has a parameter.
PUBLIC_URLS = {"/static/{path}": "/static/dashboard.js"}


def app_routes(app) -> set[tuple[str, str]]:
    """Every (method, path) the app answers, included routers' routes with their prefixes;
    HEAD is GET's twin wherever Starlette adds it."""
    found = set()
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, Mount):
            found.add(("GET", f"{context.path}/{{path}}"))
        elif isinstance(context.original_route, Route) and context.methods:
            found |= {(method, context.path) for method in context.methods - {"HEAD"}}
        else:
            raise AssertionError(f"a route of an unknown kind: {context.original_route!r}")
    return found


def test_every_route_of_the_app_is_in_the_matrix(make_settings):
    routes = app_routes(create_app(make_settings()))
    assert routes - set(CASES) == set(), "classify these routes in CASES"
    assert set(CASES) - routes == set(), "these routes are gone from the app"


def expected(case: Case, path: str, cell: str) -> int:
    if case.kind in ("public", "cron", "webhook"):
        return case.ok
    if cell in ("revoked", "none"):
        return 401
    if cell == "token":
        return case.ok
    if case.kind == "admin":
        # A key never passes; another client's id in the path is as if the client were not there.
        return 404 if cell == "other" and "{client_id}" in path else 403
    return case.ok if cell == "own" else case.other


@dataclass
class World:
    """The own client's things, one set of per-cell ones for routes that change them."""

    client: httpx.AsyncClient
    headers: dict[str, dict[str, str]]
    lead: str
    job: str
    followup: str
    pending: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def ids(self, cell: str, ghost: bool = False) -> dict[str, str]:
        if ghost:
            return {**GHOST, "cell": cell}
        return {
            "cell": cell,
            "client": OWN,
            "lead": self.lead,
            "job": self.job,
            "followup": self.followup,
            "pending": self.pending[cell],
            "failed": self.failed[cell],
            "key": self.keys[cell],
        }


async def build_world(service, db) -> World:
    [lead] = await seed(service, OWN, leads=1)
    await seed(service, OTHER, leads=1)
    own, other, revoked = (
        await make_key(service, OWN),
        await make_key(service, OTHER),
        await make_key(service, OWN),
    )
    await revoke(service, OWN, revoked["id"])
    for channel, account in (("email", SMS_ACCOUNT), ("ai", AI_ACCOUNT)):
        path = f"/api/clients/{OWN}/providers/{channel}"
        assert (await service.api.put(path, json=account)).status_code == 200
    step = step_body({"lead": lead})
    followup = (await service.api.post("/api/followups", json=step)).json()["id"]
    world = World(
        client=service.anon,
        headers={
            "token": bearer(API_TOKEN),
            "own": bearer(own["key"]),
            "other": bearer(other["key"]),
            "revoked": bearer(revoked["key"]),
            "none": {},
        },
        lead=lead,
        job=await add_job(db, OWN, "failed", "shown"),
        followup=followup,
    )
    for cell in CELLS:
        world.pending[cell] = await add_job(db, OWN, "pending", f"pending-{cell}")
        world.failed[cell] = await add_job(db, OWN, "failed", f"failed-{cell}")
        world.keys[cell] = (await make_key(service, OWN))["id"]
    return world


def request(world: World, case: Case, method: str, path: str, cell: str, ghost: bool):
    """The request one cell makes: to the route's own path when the case names no address."""
    ids = world.ids(cell, ghost)
    url = case.url.format(**ids) if case.url else PUBLIC_URLS.get(path, path)
    body = case.body(ids) if case.body else None
    return world.client.request(method, url, json=body, headers=world.headers[cell])


async def test_every_route_answers_each_kind_of_caller_as_it_should(start_service, db):
    # With ENCRYPTION_KEYS, so that provider accounts can be stored and read.
    service = start_service(encryption_keys=Fernet.generate_key().decode())
    world = await build_world(service, db)
    requests, labels = [], []
    for (method, path), case in CASES.items():
        for cell in CELLS:
            # Where another client's thing is 404, ask for a thing that is not there too.
            for ghost in [False, True] if expected(case, path, cell) == 404 else [False]:
                requests.append(request(world, case, method, path, cell, ghost))
                labels.append((method, path, cell, ghost))
    responses = await gather_limited(16, requests)
    answers = dict(zip(labels, responses, strict=True))

    wrong = {}
    for (method, path, cell, ghost), response in answers.items():
        if ghost:
            continue
        case = CASES[(method, path)]
        want = expected(case, path, cell)
        problem = None
        if response.status_code != want:
            problem = (want, response.status_code, response.text[:200])
        elif cell == "other" and case.other_sees and not case.other_sees(response.json()):
            problem = ("sees the own client's", response.text[:200])
        elif want >= 400 and case.kind in ("api", "admin"):
            code = response.json().get("error")
            if want in (401, 403) and code != {401: "unauthorized", 403: "forbidden"}[want]:
                problem = ("code", code)
            if want == 404:
                absent = answers[(method, path, cell, True)]
                if (absent.status_code, absent.json()) != (404, response.json()):
                    problem = ("not as if absent", response.json(), absent.text[:200])
        if problem:
            wrong[f"{method} {path} as {cell}"] = problem
    assert wrong == {}
