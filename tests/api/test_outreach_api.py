"""The follow-up and reactivation routes: validation, the error shape, upsert answers, auth."""

from __future__ import annotations

from datetime import datetime, timedelta

from tests.support import assert_error, seed

STEP = {"after_s": 60, "channel": "sms", "text": "Still interested?"}
CAMPAIGN = {
    "id": "winback-1",
    "client_id": "acme",
    "inactive_days": 30,
    "channel": "sms",
    "text": "We miss you: reply to pick up where we left off.",
}


def followup(lead_id: str = "acme-lead-0", **changes: object) -> dict:
    return {"lead_id": lead_id, "steps": [dict(STEP)], **changes}


async def test_followup_bad_input_is_refused_and_nothing_written(service, db):
    await seed(service, leads=1)
    bad_bodies = {
        "empty steps": followup(steps=[]),
        "negative after_s": followup(steps=[{**STEP, "after_s": -1}]),
        "unknown channel": followup(steps=[{**STEP, "channel": "fax"}]),
        "over-long text": followup(steps=[{**STEP, "text": "x" * 5001}]),
        "empty text": followup(steps=[{**STEP, "text": ""}]),
        "extra field": followup(priority="high"),
        "extra step field": followup(steps=[{**STEP, "template": "t1"}]),
        "missing lead_id": {"steps": [STEP]},
        "missing steps": {"lead_id": "acme-lead-0"},
        "step without text": followup(steps=[{"after_s": 1, "channel": "sms"}]),
        "after_s not a number": followup(steps=[{**STEP, "after_s": "soon"}]),
        "bad lead id": followup("a b"),
    }
    for name, body in bad_bodies.items():
        response = await service.api.post("/api/followups", json=body)
        try:
            assert_error(response, 422)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None

    not_json = await service.api.post(
        "/api/followups", content=b"{lead_id: nope", headers={"content-type": "application/json"}
    )
    assert_error(not_json, 422)
    assert await db.fetchval("SELECT count(*) FROM followups") == 0
    assert await db.fetchval("SELECT count(*) FROM followup_steps") == 0


async def test_followup_for_unknown_lead_is_404(service, db):
    await seed(service, leads=1)
    assert_error(await service.api.post("/api/followups", json=followup("nobody")), 404)
    assert await db.fetchval("SELECT count(*) FROM followups") == 0
    assert await db.fetchval("SELECT count(*) FROM followup_steps") == 0


async def test_followup_is_created_and_read_back(service, db):
    [lead_id] = await seed(service, leads=1)
    steps = [
        {"after_s": 0, "channel": "sms", "text": "Thanks for your interest."},
        {"after_s": 3600, "channel": "email", "text": "A quick follow-up.", "subject": "Hello"},
        {"after_s": 86_400 * 3, "channel": "sms", "text": "x" * 5000},
    ]
    response = await service.api.post("/api/followups", json={"lead_id": lead_id, "steps": steps})
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == {"id"} and isinstance(created["id"], str) and created["id"]

    response = await service.api.get(f"/api/followups/{created['id']}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"id", "lead_id", "created_at", "steps"} <= set(body)
    assert body["id"] == created["id"] and body["lead_id"] == lead_id
    created_at = datetime.fromisoformat(body["created_at"])
    assert created_at.tzinfo is not None

    assert [s["index"] for s in body["steps"]] == [0, 1, 2]
    for sent, step in zip(steps, body["steps"], strict=True):
        assert step["after_s"] == sent["after_s"]
        assert step["channel"] == sent["channel"]
        assert step["state"] == "scheduled"
        assert step.get("provider_message_id") is None
        # Due exactly after_s after the sequence's own creation time, not the request's.
        assert datetime.fromisoformat(step["due_at"]) == created_at + timedelta(
            seconds=sent["after_s"]
        )
    assert await db.fetchval("SELECT count(*) FROM followup_steps") == 3


async def test_unknown_followup_is_404(service):
    assert_error(await service.api.get("/api/followups/fu_does_not_exist"), 404)


async def test_reactivation_create_match_and_update(service, db):
    await seed(service, leads=0)
    created = await service.api.post("/api/reactivations", json=CAMPAIGN)
    assert created.status_code == 201, created.text
    campaign = created.json()
    for name, value in CAMPAIGN.items():
        assert campaign[name] == value, name
    assert campaign.get("subject") is None

    # The same body again is a match: 200 and the campaign as it stands.
    matched = await service.api.post("/api/reactivations", json=CAMPAIGN)
    assert matched.status_code == 200, matched.text
    assert matched.json() == campaign

    changed = {**CAMPAIGN, "inactive_days": 60, "channel": "email", "subject": "Long time"}
    updated = await service.api.post("/api/reactivations", json=changed)
    assert updated.status_code == 200, updated.text
    for name, value in changed.items():
        assert updated.json()[name] == value, name
    row = await db.fetchrow("SELECT * FROM reactivations WHERE id = $1", CAMPAIGN["id"])
    assert (row["inactive_days"], row["channel"], row["subject"]) == (60, "email", "Long time")
    assert await db.fetchval("SELECT count(*) FROM reactivations") == 1


async def test_reactivation_of_unknown_client_is_404(service, db):
    assert_error(await service.api.post("/api/reactivations", json=CAMPAIGN), 404)
    assert await db.fetchval("SELECT count(*) FROM reactivations") == 0


async def test_reactivation_id_is_per_client(service, db):
    await seed(service, "acme", leads=0)
    await seed(service, "other", leads=0)
    assert (await service.api.post("/api/reactivations", json=CAMPAIGN)).status_code == 201
    before = dict(await db.fetchrow("SELECT * FROM reactivations"))

    # Another client's campaign under the same id is a campaign of its own: created, then
    # matched and updated on its own, and the first client's is left as it was.
    other = {**CAMPAIGN, "client_id": "other", "text": "Come back to Other!", "inactive_days": 5}
    created = await service.api.post("/api/reactivations", json=other)
    assert created.status_code == 201, created.text
    assert created.json()["client_id"] == "other" and created.json()["inactive_days"] == 5
    assert (await service.api.post("/api/reactivations", json=other)).status_code == 200
    updated = await service.api.post("/api/reactivations", json={**other, "inactive_days": 9})
    assert updated.status_code == 200 and updated.json()["inactive_days"] == 9
    rows = {r["client_id"]: dict(r) for r in await db.fetch("SELECT * FROM reactivations")}
    assert rows["acme"] == before
    assert (rows["other"]["id"], rows["other"]["inactive_days"]) == (CAMPAIGN["id"], 9)


async def test_reactivation_bad_input_is_refused_and_nothing_written(service, db):
    await seed(service, leads=0)
    bad_bodies = {
        "inactive_days 0": {**CAMPAIGN, "inactive_days": 0},
        "inactive_days -1": {**CAMPAIGN, "inactive_days": -1},
        "unknown channel": {**CAMPAIGN, "channel": "fax"},
        "over-long text": {**CAMPAIGN, "text": "x" * 5001},
        "bad id": {**CAMPAIGN, "id": "a b"},
        "extra field": {**CAMPAIGN, "segment": "vip"},
        "missing text": {k: v for k, v in CAMPAIGN.items() if k != "text"},
    }
    for name, body in bad_bodies.items():
        response = await service.api.post("/api/reactivations", json=body)
        try:
            assert_error(response, 422)
        except AssertionError as error:
            raise AssertionError(f"{name}: {error}") from None
    not_json = await service.api.post(
        "/api/reactivations", content=b"not json", headers={"content-type": "application/json"}
    )
    assert_error(not_json, 422)
    assert await db.fetchval("SELECT count(*) FROM reactivations") == 0


async def test_outreach_routes_need_the_api_token(service, db):
    [lead_id] = await seed(service, leads=1)
    made = await service.api.post("/api/followups", json=followup(lead_id))
    assert made.status_code == 201, made.text
    routes = [
        ("POST", "/api/followups", followup(lead_id)),
        ("GET", f"/api/followups/{made.json()['id']}", None),
        ("POST", "/api/reactivations", CAMPAIGN),
    ]
    for method, path, body in routes:
        for headers in ({}, {"Authorization": "Bearer not-the-token"}):
            response = await service.anon.request(method, path, json=body, headers=headers)
            assert_error(response, 401)
    assert await db.fetchval("SELECT count(*) FROM followups") == 1
    assert await db.fetchval("SELECT count(*) FROM reactivations") == 0
