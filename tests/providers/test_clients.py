"""Provider clients against httpx.MockTransport: status mapping, headers, safe messages."""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from app.providers import (
    AiClient,
    EmailClient,
    MalformedResponse,
    Permanent,
    ProviderError,
    RateLimited,
    SmsClient,
    Transient,
    parse_retry_after,
)
from app.providers.ai import SCORE_FORMAT

KEY = "sk-test-secret-key"
CONTACT = "+15551234567"
BODY = "Meet me at 5 on Baker Street"
PAGE = {"messages": [], "next_cursor": None}


def sms_client(handler: Callable, base_url: str = "https://sms.test/v1") -> SmsClient:
    """An SmsClient whose every request goes to `handler`."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return SmsClient(http, base_url, KEY, timeout_s=2)


def answer(status: int, body: object = None, headers: dict | None = None) -> Callable:
    """A handler that always answers `status` with a JSON body."""
    return lambda request: httpx.Response(status, json=body, headers=headers)


def in_seconds(seconds: int) -> str:
    """An HTTP-date `seconds` from now."""
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


async def test_success_returns_the_page() -> None:
    page = await sms_client(answer(200, PAGE)).list_messages(CONTACT)
    assert page.messages == []
    assert page.next_cursor is None


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (400, Permanent, "sms provider: HTTP 400"),
        (401, Permanent, "sms provider: HTTP 401"),
        (404, Permanent, "sms provider: HTTP 404"),
        (409, Permanent, "sms provider: HTTP 409"),
        (422, Permanent, "sms provider: HTTP 422"),
        (408, Transient, "sms provider: HTTP 408"),
        (500, Transient, "sms provider: HTTP 500"),
        (503, Transient, "sms provider: HTTP 503"),
    ],
)
async def test_status_mapping(status: int, error: type, message: str) -> None:
    with pytest.raises(error) as caught:
        await sms_client(answer(status, {"error": "x"})).list_messages(CONTACT)
    assert type(caught.value) is error
    assert str(caught.value) == message
    assert caught.value.provider == "sms"


@pytest.mark.parametrize(
    ("retry_after", "low", "high"),
    [("3", 3, 3), (10, 8, 10), ("soon", 1, 1), (None, 1, 1), ("600", 60, 60)],
    ids=["seconds", "http-date", "garbage", "missing", "capped"],
)
async def test_rate_limited_carries_retry_after(retry_after, low: float, high: float) -> None:
    if isinstance(retry_after, int):
        # An HTTP date, made now: made at collection it would have passed by run time.
        retry_after = in_seconds(retry_after)
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    with pytest.raises(RateLimited) as caught:
        await sms_client(answer(429, headers=headers)).list_messages(CONTACT)
    assert low <= caught.value.retry_after <= high


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("-5", 0), ("2.5", 2.5), ("1e9", 60), ("nan", 1), ("", 1), (in_seconds(-30), 0)],
    ids=["zero", "negative", "fraction", "huge", "nan", "empty", "past-date"],
)
def test_parse_retry_after(value: str, expected: float) -> None:
    assert parse_retry_after(value) == expected


async def test_rate_limited_message() -> None:
    with pytest.raises(RateLimited, match=r"^sms provider: rate limited \(retry after 3s\)$"):
        await sms_client(answer(429, headers={"Retry-After": "3"})).list_messages(CONTACT)


async def test_garbage_json_is_malformed() -> None:
    client = sms_client(lambda request: httpx.Response(200, content=b"not json{"))
    with pytest.raises(MalformedResponse, match=r"^sms provider: malformed JSON in response$"):
        await client.list_messages(CONTACT)


async def test_wrong_shape_is_malformed() -> None:
    client = sms_client(answer(200, {"messages": [{"id": 1}]}))
    with pytest.raises(MalformedResponse, match=r"^sms provider: unexpected response shape$"):
        await client.list_messages(CONTACT)


async def test_httpx_timeout_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)

    with pytest.raises(Transient, match=r"^sms provider: timed out after 2s$"):
        await sms_client(handler).list_messages(CONTACT)


async def test_whole_call_is_bounded() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json=PAGE)

    http = httpx.AsyncClient(transport=httpx.MockTransport(slow))
    client = EmailClient(http, "https://mail.test", KEY, timeout_s=0.05)
    with pytest.raises(Transient, match=r"^email provider: timed out after 0\.05s$"):
        await client.list_replies("lead-1")


async def test_connection_error_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(Transient, match=r"^sms provider: connection failed$"):
        await sms_client(handler).send(CONTACT, BODY, "key-1")


async def test_list_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={**PAGE, "replies": [], "next_page": None})

    client = sms_client(handler, base_url="https://sms.test/v1/")
    await client.list_messages("+1 555/0")
    await client.list_messages(CONTACT, cursor="abc")
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    await EmailClient(http, "https://mail.test", KEY, timeout_s=2).list_replies("lead-1", page=3)
    assert seen[0].url.raw_path == b"/v1/contacts/%2B1%20555%2F0/messages"
    assert "cursor" not in seen[0].url.params
    assert seen[1].url.params["cursor"] == "abc"
    assert str(seen[2].url) == "https://mail.test/leads/lead-1/replies?page=3"
    assert all(request.headers["Authorization"] == f"Bearer {KEY}" for request in seen)


async def test_sends_carry_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "msg_1"})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    assert await sms_client(handler).send(CONTACT, BODY, "job-key-1") == "msg_1"
    email = EmailClient(http, "https://mail.test/", KEY, timeout_s=2)
    assert await email.send("lead-1", "Hello", BODY, "job-key-2") == "msg_1"
    assert [r.headers["Idempotency-Key"] for r in seen] == ["job-key-1", "job-key-2"]
    assert str(seen[1].url) == "https://mail.test/replies"
    assert json.loads(seen[0].content) == {"contact_id": CONTACT, "body": BODY}
    assert json.loads(seen[1].content) == {"lead_id": "lead-1", "subject": "Hello", "text": BODY}


def echo(status: int, headers: dict | None = None) -> Callable:
    """A handler that answers with everything the request carried, key included."""

    def handler(request: httpx.Request) -> httpx.Response:
        text = f"{request.url} {request.headers} {request.content.decode()}"
        return httpx.Response(status, content=text.encode(), headers=headers)

    return handler


@pytest.mark.parametrize(
    "handler",
    [echo(200), echo(404), echo(500), echo(429, {"Retry-After": "2"})],
    ids=["malformed", "permanent", "transient", "rate-limited"],
)
async def test_messages_never_leak(handler: Callable) -> None:
    with pytest.raises(ProviderError) as caught:
        await sms_client(handler).send(CONTACT, BODY, "key-1")
    rendered = str(caught.value) + "".join(traceback.format_exception(caught.value))
    for secret in (KEY, CONTACT, BODY, "/messages"):
        assert secret not in rendered


def completion(content: object) -> dict:
    """A chat.completion answer with `content` as the reply."""
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def ai_client(handler: Callable) -> AiClient:
    """An AiClient whose every request goes to `handler`."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return AiClient(http, "https://ai.test/v1", KEY, "small-model", timeout_s=2)


async def test_ai_score_request_and_reply() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=completion('{"score": 3, "reason": "asked for a quote"}'))

    score = await ai_client(handler).score("Score this lead.", "How much is it?")
    assert (score.score, score.reason) == (3, "asked for a quote")
    assert str(seen[0].url) == "https://ai.test/v1/chat/completions"
    assert json.loads(seen[0].content) == {
        "model": "small-model",
        "messages": [
            {"role": "system", "content": "Score this lead."},
            {"role": "user", "content": "How much is it?"},
        ],
        "response_format": SCORE_FORMAT,
        "temperature": 0,
    }


@pytest.mark.parametrize(
    "reply",
    [
        completion("I think it is a 3"),
        completion('{"score": 5, "reason": "too keen"}'),
        completion('{"score": 0, "reason": "cold"}'),
        completion('{"reason": "no score"}'),
        completion(None),
        {"choices": []},
        {"error": "nothing"},
        ["not", "an", "object"],
    ],
    ids=["not-json", "above", "below", "no-score", "no-content", "no-choices", "error", "list"],
)
async def test_ai_rejects_invalid_replies(reply: object) -> None:
    with pytest.raises(MalformedResponse, match=r"^ai provider: reply is not a valid score$"):
        await ai_client(answer(200, reply)).score("system", "user")
