"""The AI client against OpenAI chat completions fixtures (the API reference's chat.completion
object, Structured Outputs' `json_schema` response format and `refusal`, and the rate-limit
headers), served over real HTTP on loopback."""

from __future__ import annotations

import json

import httpx
import pytest

from app.providers import AiClient, MalformedResponse, Permanent, RateLimited
from app.providers.http import parse_duration

KEY = "sk-proj-test-0123456789"
LEAD_TEXT = "Call me at 415 555 0199 about the loft"


def ai(server) -> AiClient:
    return AiClient(httpx.AsyncClient(), f"{server.base_url}/v1", KEY, "gpt-4o-mini", 5)


def completion(
    content: str | None, *, finish_reason: str = "stop", refusal: str | None = None
) -> dict:
    return {
        "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        "object": "chat.completion",
        "created": 1741570283,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "refusal": refusal,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29},
        "service_tier": "default",
    }


async def test_the_request_asks_for_a_strict_json_schema(fixture_server) -> None:
    reply = completion(json.dumps({"score": 3, "reason": "Asked about timing."}))
    fixture_server.answer("POST", "/v1/chat/completions", 200, reply)
    score = await ai(fixture_server).score("Score the lead.", LEAD_TEXT)
    assert (score.score, score.reason) == (3, "Asked about timing.")
    [request] = fixture_server.requests("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    form = request.body["response_format"]
    assert form["type"] == "json_schema"
    spec = form["json_schema"]
    assert spec["strict"] is True and spec["name"]
    schema = spec["schema"]
    assert schema["required"] == ["score", "reason"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["score"]["type"] == "integer"
    assert schema["properties"]["score"]["enum"] == [1, 2, 3, 4]
    assert schema["properties"]["reason"]["type"] == "string"


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        (
            completion(None, refusal=f"I'm sorry, I cannot help with {LEAD_TEXT}."),
            Permanent,
            "ai provider: the model refused to score",
        ),
        (
            completion('{"score": 3, "rea', finish_reason="length"),
            MalformedResponse,
            "ai provider: reply cut short (finish_reason length)",
        ),
        (
            completion(None, finish_reason="content_filter"),
            Permanent,
            "ai provider: reply withheld by the content filter",
        ),
        (
            completion(json.dumps({"score": 7, "reason": LEAD_TEXT})),
            MalformedResponse,
            "ai provider: reply is not a valid score",
        ),
        (
            completion(json.dumps({"reason": LEAD_TEXT})),
            MalformedResponse,
            "ai provider: reply is not a valid score",
        ),
        (completion(LEAD_TEXT), MalformedResponse, "ai provider: reply is not a valid score"),
    ],
    ids=["refusal", "length", "content-filter", "out-of-range", "missing-score", "not-json"],
)
async def test_a_reply_that_is_no_score_fails_without_quoting_it(
    fixture_server, reply: dict, error: type, message: str
) -> None:
    fixture_server.answer("POST", "/v1/chat/completions", 200, reply)
    with pytest.raises(error) as caught:
        await ai(fixture_server).score("Score the lead.", LEAD_TEXT)
    assert type(caught.value) is error and str(caught.value) == message


RATE_HEADERS = {
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-limit-tokens": "150000",
    "x-ratelimit-remaining-requests": "0",
    "x-ratelimit-remaining-tokens": "149984",
}
RATE_BODY = {
    "error": {
        "message": "Rate limit reached for requests",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}


@pytest.mark.parametrize(
    ("headers", "wait"),
    [
        ({"retry-after": "4"}, 4),
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6ms"}, 1),
        ({"x-ratelimit-reset-requests": "20ms", "x-ratelimit-reset-tokens": "2.5s"}, 2.5),
        ({"x-ratelimit-reset-requests": "6m0s"}, 60),
        ({"retry-after": "2", "x-ratelimit-reset-requests": "30s"}, 2),
        ({"x-ratelimit-reset-requests": "soon"}, 1),
        ({}, 1),
    ],
    ids=["retry-after", "requests", "tokens", "capped", "retry-after-first", "garbage", "none"],
)
async def test_429_waits_as_the_headers_say(fixture_server, headers: dict, wait: float) -> None:
    fixture_server.answer("POST", "/v1/chat/completions", 429, RATE_BODY, **RATE_HEADERS, **headers)
    with pytest.raises(RateLimited) as caught:
        await ai(fixture_server).score("Score the lead.", LEAD_TEXT)
    assert caught.value.retry_after == pytest.approx(wait)
    assert "Rate limit reached" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1s", 1),
        ("6m0s", 360),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("", None),
        ("5 s", None),
        ("1d", None),
        ("-1s", None),
        ("1s1", None),
        (None, None),
    ],
)
def test_parse_duration(value: str | None, seconds: float | None) -> None:
    assert parse_duration(value) == (pytest.approx(seconds) if seconds is not None else None)
