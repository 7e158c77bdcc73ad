"""Who may call what: API_TOKEN routes (and client keys: tests/api/test_client_keys.py),
CRON_SECRET routes, public routes; cron tick dedupe."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime

import httpx

from tests.conftest import API_TOKEN, CRON_SECRET
from tests.support import assert_error, bearer, gather_limited

# (method, path, json body) for one route of each API_TOKEN family, those a client key may call
# and those only the token may.
API_ROUTES = [
    ("POST", "/sync", {"client_id": "acme"}),
    ("GET", "/api/jobs", None),
    ("GET", "/api/leads/x", None),
    ("POST", "/api/clients", {"id": "acme", "name": "Acme"}),
    ("POST", "/api/clients/acme/keys", None),
    ("GET", "/metrics", None),
]
CRON_ROUTES = [
    (method, f"/api/cron/{name}", None)
    for name in ("followups", "reactivations", "background-jobs")
    for method in ("GET", "POST")
]
PUBLIC_PATHS = ["/healthz", "/readyz", "/docs", "/openapi.json", "/"]


# Credentials that must never open a route: none, a wrong token, a near miss, a wrong scheme.
def wrong_credentials(right: str, other: str) -> dict[str, dict[str, str]]:
    return {
        "none": {},
        "wrong token": bearer("not-the-token-at-all"),
        "right token with a suffix": bearer(right + "x"),
        "right token cut short": bearer(right[:-1]),
        "the other secret": bearer(other),
        "basic scheme": {"Authorization": f"Basic {right}"},
        "bare token": {"Authorization": right},
        "bearer without a token": {"Authorization": "Bearer"},
        "shaped like a client key": bearer("hk_" + "A" * 43),
    }


async def call(client: httpx.AsyncClient, route, headers: dict[str, str] | None = None):
    method, path, body = route
    return await client.request(method, path, json=body, headers=headers or {})


async def refused(client, routes, credentials, status: int) -> dict:
    """Every (route, credential) pair that was not refused with `status` and the error shape."""
    wrong = {}
    for route in routes:
        for name, headers in credentials.items():
            response = await call(client, route, headers)
            try:
                assert_error(response, status)
                if status == 401:
                    assert response.headers["www-authenticate"].lower().startswith("bearer")
            except (AssertionError, KeyError):
                wrong[f"{route[0]} {route[1]} with {name}"] = (
                    response.status_code,
                    response.text[:200],
                )
    return wrong


async def test_api_routes_refuse_missing_or_wrong_token(service, db, logs):
    credentials = wrong_credentials(API_TOKEN, CRON_SECRET)
    assert await refused(service.anon, API_ROUTES, credentials, 401) == {}
    # Nothing was written by a refused request.
    assert await db.fetchval("SELECT count(*) FROM clients") == 0
    assert await db.fetchval("SELECT count(*) FROM client_keys") == 0
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    assert logs.errors() == []


async def test_api_routes_open_with_the_token(service):
    # The same routes with the right token get past auth to their own answers.
    expected = {
        "/sync": 404,
        "/api/jobs": 200,
        "/api/leads/x": 404,
        "/api/clients": 200,
        "/api/clients/acme/keys": 201,
        "/metrics": 200,
    }
    for route in API_ROUTES:
        response = await call(service.api, route)
        assert response.status_code == expected[route[1]], (route, response.text)


async def test_api_routes_fail_closed_without_api_token(start_service, db):
    key = "hk_" + "K" * 43
    await db.execute("INSERT INTO clients (id, name) VALUES ('acme', 'Acme')")
    await db.execute(
        "INSERT INTO client_keys (id, client_id, hash, last4) VALUES ('key_1', 'acme', $1, 'KKKK')",
        hashlib.sha256(key.encode()).hexdigest(),
    )
    service = start_service(api_token=None)
    credentials = {
        "none": {},
        "some bearer": bearer(API_TOKEN),
        "cron": bearer(CRON_SECRET),
        "a live client key": bearer(key),
    }
    assert await refused(service.anon, API_ROUTES, credentials, 503) == {}
    assert await db.fetchval("SELECT count(*) FROM clients") == 1
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_cron_routes_refuse_missing_or_wrong_secret(service, db, logs):
    await service.api.post("/api/clients", json={"id": "acme", "name": "Acme"})
    key = (await service.api.post("/api/clients/acme/keys")).json()["key"]
    credentials = {**wrong_credentials(CRON_SECRET, API_TOKEN), "a client key": bearer(key)}
    assert await refused(service.anon, CRON_ROUTES, credentials, 401) == {}
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0
    assert logs.errors() == []


async def test_cron_routes_open_with_the_secret(service):
    for route in CRON_ROUTES:
        response = await call(service.cron, route)
        expected = 200 if route[1].endswith("background-jobs") else 202
        assert response.status_code == expected, (route, response.text)


async def test_cron_routes_fail_closed_without_cron_secret(start_service, db):
    service = start_service(cron_secret=None)
    credentials = {"none": {}, "some bearer": bearer(CRON_SECRET), "api": bearer(API_TOKEN)}
    assert await refused(service.anon, CRON_ROUTES, credentials, 503) == {}
    assert await db.fetchval("SELECT count(*) FROM jobs") == 0


async def test_public_routes_need_no_token(start_service):
    # Public even when no secret is configured at all: health checks and docs must not
    # depend on auth settings.
    for service in (start_service(), start_service(api_token=None, cron_secret=None)):
        for path in PUBLIC_PATHS:
            response = await service.anon.get(path)
            assert response.status_code == 200, (path, response.text[:200])


# --- cron ticks: one job per schedule slot ----------------------------------------------------

TICKS = {"followups": ("followups_tick", 1), "reactivations": ("reactivations_tick", 10)}
# Requests of one check must land in one slot; closer than this to its end, wait it out.
SLOT_MARGIN_S = 5.0


def slot_of(moment: datetime, minutes: int) -> datetime:
    floored = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return floored.replace(minute=floored.minute - floored.minute % minutes)


async def slot_with_room(minutes: int) -> datetime:
    """The current slot, after waiting for the next one if this one is nearly over."""
    now = datetime.now(UTC)
    left = minutes * 60 - (now - slot_of(now, minutes)).total_seconds()
    if left < SLOT_MARGIN_S:
        await asyncio.sleep(left + 0.1)
    return slot_of(datetime.now(UTC), minutes)


async def tick_jobs(db, type: str) -> list:
    return await db.fetch("SELECT id, enqueue_count FROM jobs WHERE type = $1 ORDER BY id", type)


async def check_two_calls_share_a_job(service, db, name: str) -> None:
    type, minutes = TICKS[name]
    before = await slot_with_room(minutes)
    first = await service.cron.post(f"/api/cron/{name}")
    second = await service.cron.get(f"/api/cron/{name}")
    after = slot_of(datetime.now(UTC), minutes)
    assert first.status_code == second.status_code == 202, second.text
    assert isinstance(first.json()["job_id"], str)
    if before != after:  # the slot ended anyway (a very slow machine): nothing to compare
        return
    assert first.json()["deduplicated"] is False
    assert second.json() == {"job_id": first.json()["job_id"], "deduplicated": True}
    [job] = await tick_jobs(db, type)
    assert str(job["id"]) == first.json()["job_id"]
    assert job["enqueue_count"] == 2


async def check_concurrent_calls_share_a_job(service, db, logs, name: str) -> None:
    type, minutes = TICKS[name]
    before = await slot_with_room(minutes)
    responses = await gather_limited(
        50, [service.cron.post(f"/api/cron/{name}") for _ in range(50)]
    )
    after = slot_of(datetime.now(UTC), minutes)

    assert [r.status_code for r in responses] == [202] * 50
    answers = [r.json() for r in responses]
    ids = {a["job_id"] for a in answers}
    jobs = await tick_jobs(db, type)
    assert sum(job["enqueue_count"] for job in jobs) == 50
    assert {str(job["id"]) for job in jobs} == ids
    # One job per slot the calls fell in, and only the creating call is not deduplicated.
    slots = 1 if before == after else 2
    assert len(ids) <= slots
    assert sum(not a["deduplicated"] for a in answers) == len(ids)
    if slots == 1:
        assert jobs[0]["enqueue_count"] == 50
    assert logs.errors() == []


async def test_followups_twice_in_a_minute_is_one_job(service, db):
    await check_two_calls_share_a_job(service, db, "followups")


async def test_reactivations_twice_in_a_slot_is_one_job(service, db):
    await check_two_calls_share_a_job(service, db, "reactivations")


async def test_concurrent_followups_calls_make_one_job(service, db, logs):
    await check_concurrent_calls_share_a_job(service, db, logs, "followups")


async def test_concurrent_reactivations_calls_make_one_job(service, db, logs):
    await check_concurrent_calls_share_a_job(service, db, logs, "reactivations")


async def test_ticks_of_different_kinds_are_different_jobs(service, db):
    await slot_with_room(1)
    followups = await service.cron.post("/api/cron/followups")
    reactivations = await service.cron.post("/api/cron/reactivations")
    assert followups.status_code == reactivations.status_code == 202
    assert followups.json()["job_id"] != reactivations.json()["job_id"]
    assert len(await tick_jobs(db, "followups_tick")) == 1
    assert len(await tick_jobs(db, "reactivations_tick")) == 1
