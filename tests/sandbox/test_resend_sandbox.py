"""The sandbox's Resend-shaped endpoints: Bearer auth, Idempotency-Key semantics, pagination
and Resend's error bodies, as Resend's API reference describes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from app.sandbox.resend import resend_state
from tests.sandbox.conftest import KEY

AUTH = {"Authorization": f"Bearer {KEY}"}
EMAIL = {"from": "Acme <hi@acme.example>", "to": ["ada@example.com"], "subject": "S", "text": "T"}


def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"statusCode", "name", "message"}
    assert body["statusCode"] == response.status_code
    return response.status_code, body["name"]


async def test_auth_is_a_bearer_key(http) -> None:
    assert error_of(await http.get("/resend/emails")) == (401, "missing_api_key")
    wrong = {"Authorization": "Bearer nope"}
    assert error_of(await http.get("/resend/emails", headers=wrong)) == (403, "invalid_api_key")
    assert (await http.get("/resend/emails", headers=AUTH)).status_code == 200


async def test_a_send_is_taken_once_per_idempotency_key(http, state) -> None:
    headers = {**AUTH, "Idempotency-Key": "send-1"}
    first = await http.post("/resend/emails", json=EMAIL, headers=headers)
    again = await http.post("/resend/emails", json=EMAIL, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and set(first.json()) == {"id"}
    other = await http.post("/resend/emails", json={**EMAIL, "text": "U"}, headers=headers)
    assert error_of(other) == (409, "invalid_idempotent_request")
    assert len(resend_state(state).sent_to("ada@example.com")) == 1
    long_key = {**AUTH, "Idempotency-Key": "k" * 257}
    response = await http.post("/resend/emails", json=EMAIL, headers=long_key)
    assert error_of(response) == (400, "invalid_idempotency_key")
    missing = await http.post("/resend/emails", json={"to": "x@y.example"}, headers=AUTH)
    assert error_of(missing) == (422, "validation_error")


async def test_lists_page_with_after_and_has_more(http, state) -> None:
    inbox = resend_state(state)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        inbox.receive(f"p{i}@example.com", f"s{i}", f"t{i}", at=start + timedelta(minutes=i))
    seen, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = (await http.get("/resend/emails/receiving", params=params, headers=AUTH)).json()
        assert page["object"] == "list" and "text" not in page["data"][0]
        seen += [item["from"] for item in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == [f"p{i}@example.com" for i in reversed(range(5))]  # newest first
    one = inbox.snapshot("received")[0]
    got = await http.get(f"/resend/emails/receiving/{one['id']}", headers=AUTH)
    assert got.json()["text"] == "t0" and got.json()["object"] == "email"
    missing = await http.get("/resend/emails/receiving/nope", headers=AUTH)
    assert error_of(missing) == (404, "not_found")


async def test_faults_answer_as_resend_does(http, state) -> None:
    state.add_fault("email", "rate_limit", times=1, retry_after=3, kind="list")
    limited = await http.get("/resend/emails", headers=AUTH)
    assert error_of(limited) == (429, "rate_limit_exceeded")
    assert limited.headers["retry-after"] == "3" and "ratelimit-reset" in limited.headers
    state.add_fault("email", "error", times=1, kind="list")
    assert error_of(await http.get("/resend/emails", headers=AUTH)) == (
        500,
        "internal_server_error",
    )


async def test_a_lost_answer_still_sends_once(loopback, state) -> None:
    inbox = resend_state(state)
    inbox.lose_answers(1)
    headers = {**AUTH, "Idempotency-Key": "lost-1"}
    async with httpx.AsyncClient(base_url=loopback) as client:
        with pytest.raises(httpx.TransportError):
            await client.post("/resend/emails", json=EMAIL, headers=headers)
        retried = await client.post("/resend/emails", json=EMAIL, headers=headers)
    assert retried.status_code == 200
    [sent] = inbox.sent_to("ada@example.com")
    assert retried.json() == {"id": sent["id"]}
