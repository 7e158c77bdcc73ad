"""Every route of the app x every kind of caller: the API token, a key of the client whose
things are asked for, another client's key, a revoked key, and no key.

The routes come from the app itself, so a route nobody classified here fails the suite. All
cells run at once against one service and one database; where another client's key must get
404, the same request for a thing that does not exist must get the very same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.routing import iter_route_contexts
from starlette.routing import Mount, Route

from app.main import create_app
from tests.support import (
    API_TOKEN,
    bearer,
    gather_limited,
    insert_job,
    make_client_key,
    revoke_client_key,
    seed,
)

OWN, OTHER = "acme", "globex"
CELLS = ("token", "own", "other", "revoked", "none")

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
    ("GET", "/api/jobs/overview"): Case(
        "api",
        200,
        "/api/jobs/overview",
        other=200,
        # The own client has jobs, the other none: the other's overview counts none of them.
        other_sees=lambda answer: (
            answer["client_id"] == OTHER and answer["counts"] == [] and answer["runs"] == []
        ),
    ),
    ("GET", "/api/jobs/{job_id}"): Case("api", 200, "/api/jobs/{job}"),
    ("POST", "/api/jobs/{job_id}/retry"): Case("api", 200, "/api/jobs/{failed}/retry"),
    ("POST", "/api/jobs/{job_id}/cancel"): Case("api", 200, "/api/jobs/{pending}/cancel"),
    ("GET", "/api/clients"): Case(
        "api",
        200,
        "/api/clients",
        other=200,
        other_sees=lambda answer: (
            [(c["id"], c["name"]) for c in answer["clients"]] == [(OTHER, "Acme")]
        ),
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
    ("POST", "/webhooks/sms"): Case("webhook", 401, "/webhooks/sms", lambda ids: {}),
    ("POST", "/webhooks/sms/{client_id}"): Case(
        "webhook", 401, "/webhooks/sms/{client}", lambda ids: {}
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
        await make_client_key(service, OWN),
        await make_client_key(service, OTHER),
        await make_client_key(service, OWN),
    )
    await revoke_client_key(service, OWN, revoked["id"])
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
        job=await insert_job(db, OWN, "failed", "shown"),
        followup=followup,
    )
    for cell in CELLS:
        world.pending[cell] = await insert_job(db, OWN, "pending", f"pending-{cell}")
        world.failed[cell] = await insert_job(db, OWN, "failed", f"failed-{cell}")
        world.keys[cell] = (await make_client_key(service, OWN))["id"]
    return world


def request(world: World, case: Case, method: str, path: str, cell: str, ghost: bool):
    """The request one cell makes: to the route's own path when the case names no address."""
    ids = world.ids(cell, ghost)
    url = case.url.format(**ids) if case.url else PUBLIC_URLS.get(path, path)
    body = case.body(ids) if case.body else None
    return world.client.request(method, url, json=body, headers=world.headers[cell])


async def test_every_route_answers_each_kind_of_caller_as_it_should(service, db):
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
