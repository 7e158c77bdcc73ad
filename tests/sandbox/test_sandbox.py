"""The sandbox providers over ASGI, driven through the real clients where they fit."""

from __future__ import annotations

import time

import httpx
import pytest

from app.providers import (
    AiClient,
    EmailClient,
    MalformedResponse,
    RateLimited,
    SmsClient,
    SmsMessage,
    Transient,
)
from app.sandbox import SandboxState, create_sandbox_app
from app.sandbox.data import email_history, sms_history

AUTH = {"Authorization": "Bearer k"}


def sms(
    http: httpx.AsyncClient, timeout_s: float = 5, base_url: str = "http://sandbox"
) -> SmsClient:
    """An SmsClient on the sandbox, base URL given without a trailing slash."""
    return SmsClient(http, f"{base_url}/sms", "k", timeout_s)


def email(http: httpx.AsyncClient, timeout_s: float = 5) -> EmailClient:
    """An EmailClient on the sandbox, base URL given with a trailing slash."""
    return EmailClient(http, "http://sandbox/email/", "k", timeout_s)


async def all_sms(client: SmsClient, contact_id: str) -> list[SmsMessage]:
    """Every message of a contact, following cursors to the end."""
    messages, cursor = [], None
    while True:
        page = await client.list_messages(contact_id, cursor)
        assert len(page.messages) <= 5
        messages += page.messages
        if page.next_cursor is None:
            return messages
        cursor = page.next_cursor


async def all_sms_ids(client: SmsClient, contact_id: str) -> list[str]:
    """Every message id of a contact, in order."""
    return [message.id for message in await all_sms(client, contact_id)]


@pytest.mark.parametrize("contact_id", ["c1", "+15550001111", "contact-with-a-long-name"])
async def test_sms_pages_cover_history_once(http: httpx.AsyncClient, contact_id: str) -> None:
    expected = [message["id"] for message in sms_history(contact_id)]
    assert 3 <= len(expected) <= 12
    assert await all_sms_ids(sms(http), contact_id) == expected


@pytest.mark.parametrize("lead_id", ["l1", "lead-2", "lead-3"])
async def test_email_pages_cover_history_once(http: httpx.AsyncClient, lead_id: str) -> None:
    ids, page_number = [], 1
    while page_number is not None:
        page = await email(http).list_replies(lead_id, page_number)
        assert len(page.replies) <= 4
        ids += [reply.id for reply in page.replies]
        page_number = page.next_page
    assert ids == [reply["id"] for reply in email_history(lead_id)]


def test_history_is_deterministic() -> None:
    history = sms_history("c1")
    assert history == sms_history("c1")
    assert [m["direction"] for m in history[:3]] == ["inbound", "outbound", "inbound"]
    assert [m["sent_at"] for m in history] == sorted(m["sent_at"] for m in history)
    assert email_history("c1")[0]["id"].startswith("em_")


async def test_sms_send_is_idempotent(http: httpx.AsyncClient, state: SandboxState) -> None:
    client = sms(http)
    first = await client.send("c1", "hello", "job-1")
    assert await client.send("c1", "hello", "job-1") == first
    messages = await all_sms(client, "c1")
    assert [message.id for message in messages].count(first) == 1
    assert (messages[-1].id, messages[-1].direction, messages[-1].body) == (
        first,
        "outbound",
        "hello",
    )
    assert state.sent["job-1"] == {"provider": "sms", "id": first, "target": "c1", "body": "hello"}
    assert state.count("sms", "send") == 2


async def test_email_send_is_idempotent(http: httpx.AsyncClient) -> None:
    client = email(http)
    first = await client.send("l1", "Hi", "hello", "job-1")
    assert await client.send("l1", "Hi", "hello", "job-1") == first
    page = await client.list_replies("l1", 1)
    while page.next_page:
        page = await client.list_replies("l1", page.next_page)
    last = page.replies[-1]
    assert (last.id, last.direction, last.subject, last.text) == (first, "outbound", "Hi", "hello")


async def test_same_key_other_body_conflicts(http: httpx.AsyncClient) -> None:
    body = {"contact_id": "c1", "body": "hello"}
    headers = {**AUTH, "Idempotency-Key": "job-1"}
    assert (await http.post("/sms/messages", json=body, headers=headers)).status_code == 200
    other = {**body, "body": "bye"}
    answer = await http.post("/sms/messages", json=other, headers=headers)
    assert answer.status_code == 409
    assert answer.json()["error"] == "idempotency_conflict"


async def test_send_needs_idempotency_key(http: httpx.AsyncClient) -> None:
    body = {"lead_id": "l1", "subject": "Hi", "text": "hello"}
    answer = await http.post("/email/replies", json=body, headers=AUTH)
    assert answer.status_code == 400
    assert answer.json()["error"] == "missing_idempotency_key"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "k"}])
async def test_auth_required(http: httpx.AsyncClient, headers: dict) -> None:
    answer = await http.get("/sms/contacts/c1/messages", headers=headers)
    assert answer.status_code == 401
    assert set(answer.json()) == {"error", "detail"}


async def test_email_page_below_one_is_rejected(http: httpx.AsyncClient) -> None:
    answer = await http.get("/email/leads/l1/replies", params={"page": 0}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["error"] == "invalid_request"


async def test_hang_delays_then_answers(http: httpx.AsyncClient, state: SandboxState) -> None:
    state.add_fault("sms", "hang", hang_s=0.2)
    started = time.monotonic()
    await sms(http).list_messages("c1")
    assert time.monotonic() - started >= 0.2


async def test_hang_times_the_client_out(http: httpx.AsyncClient, state: SandboxState) -> None:
    state.add_fault("email", "hang")
    with pytest.raises(Transient, match="timed out"):
        await email(http, timeout_s=0.1).list_replies("l1")
    assert state.count("email", "list") == 1


async def test_rate_limit_fault(http: httpx.AsyncClient, state: SandboxState) -> None:
    state.add_fault("sms", "rate_limit", retry_after=7)
    answer = await http.get("/sms/contacts/c1/messages", headers=AUTH)
    assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")
    with pytest.raises(RateLimited) as caught:
        await sms(http).list_messages("c1")
    assert caught.value.retry_after == 7


async def test_error_fault_once_then_normal(http: httpx.AsyncClient, state: SandboxState) -> None:
    state.add_fault("sms", "error", times=1)
    answer = await http.get("/sms/contacts/c1/messages", headers=AUTH)
    assert (answer.status_code, answer.json()["error"]) == (500, "internal_error")
    assert (await http.get("/sms/contacts/c1/messages", headers=AUTH)).status_code == 200
    assert state.faults == []
    assert state.count("sms", "list") == 2


async def test_garbage_fault(http: httpx.AsyncClient, state: SandboxState) -> None:
    state.add_fault("ai", "garbage")
    with pytest.raises(MalformedResponse):
        await AiClient(http, "http://sandbox/ai", "k", "m", 5).score("s", "u")


async def test_drip_fault_outlasts_the_bound(http: httpx.AsyncClient, state: SandboxState) -> None:
    state.add_fault("sms", "drip")
    with pytest.raises(Transient, match="timed out"):
        await sms(http, timeout_s=0.3).list_messages("c1")


async def test_drip_over_loopback_is_bounded(loopback: str, state: SandboxState) -> None:
    state.add_fault("sms", "drip")
    started = time.monotonic()
    async with httpx.AsyncClient() as http:
        with pytest.raises(Transient, match="timed out after 1s"):
            await sms(http, timeout_s=1, base_url=loopback).list_messages("c1")
    # Each byte arrives well within the per-read timeout; only the whole-call bound stops it.
    assert time.monotonic() - started < 2


async def test_fault_limited_to_kind(http: httpx.AsyncClient, state: SandboxState) -> None:
    state.add_fault("sms", "error", kind="send")
    await sms(http).list_messages("c1")
    with pytest.raises(Transient, match="HTTP 500"):
        await sms(http).send("c1", "hello", "job-1")
    state.clear_faults()
    assert await sms(http).send("c1", "hello", "job-1")


async def test_accept_then_hang(http: httpx.AsyncClient, state: SandboxState) -> None:
    state.add_fault("sms", "accept_then_hang", times=1)
    with pytest.raises(Transient, match="timed out"):
        await sms(http, timeout_s=0.1).send("c1", "hello", "job-1")
    accepted = state.sent["job-1"]["id"]
    assert await sms(http).send("c1", "hello", "job-1") == accepted
    assert (await all_sms_ids(sms(http), "c1")).count(accepted) == 1


async def test_ai_score_is_deterministic(http: httpx.AsyncClient, state: SandboxState) -> None:
    client = AiClient(http, "http://sandbox/ai/", "k", "m", 5)
    scores = {(await client.score("s", f"lead {n}")).score for n in range(20)}
    assert scores <= {1, 2, 3, 4}
    assert len(scores) > 1
    assert await client.score("s", "same") == await client.score("other", "same")
    assert state.count("ai", "score") == 22


async def test_no_key_means_no_auth(state: SandboxState) -> None:
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        assert (await client.get("/sms/contacts/c1/messages")).status_code == 200


def test_reset_forgets_everything(state: SandboxState) -> None:
    state.add_fault("sms", "error")
    state.record_send("sms", "k1", "c1", {"body": "x"}, "2026-01-01T00:00:00Z")
    state.reset()
    assert (state.faults, state.sent, state.extra_sms, state.count("sms", "send")) == (
        [],
        {},
        {},
        0,
    )
