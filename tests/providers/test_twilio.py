"""The Twilio adapter against a real HTTP server on loopback serving Twilio's documented shapes.

The fixtures follow Twilio's API reference (twilio_api_v2010: the Message resource
`api.v2010.account.message`, the Messages list envelope with `next_page_uri`, its To / From /
DateSent / PageSize filters, RFC 2822 dates, and the error body `code` / `message` /
`more_info` / `status`)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from app.providers import MalformedResponse, Permanent, RateLimited, Transient
from app.providers.twilio import TwilioSms
from tests.support import ServerThread

SID = "AC" + "a" * 32
TOKEN = "twilio-auth-token-0123456789"
LEAD = "+15558675310"
OURS = "+15017122661"
LIST = f"/2010-04-01/Accounts/{SID}/Messages.json"


def rfc2822(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC)).replace("-0000", "+0000")


def message(sid: str, direction: str, body: str, when: datetime | None, **extra: Any) -> dict:
    """A Message resource as Twilio's reference lists its fields."""
    inbound = direction == "inbound"
    return {
        "account_sid": SID,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": rfc2822(when or datetime.now(UTC)),
        "date_sent": rfc2822(when) if when else None,
        "date_updated": rfc2822(when or datetime.now(UTC)),
        "direction": direction,
        "error_code": None,
        "error_message": None,
        "from": LEAD if inbound else OURS,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "received" if inbound else "delivered",
        "subresource_uris": {"media": f"/2010-04-01/Accounts/{SID}/Messages/{sid}/Media.json"},
        "to": OURS if inbound else LEAD,
        "uri": f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json",
        **extra,
    }


def envelope(messages: list[dict], page: int, next_uri: str | None, size: int = 2) -> dict:
    first = f"{LIST}?PageSize={size}&Page=0"
    return {
        "end": page * size + len(messages) - 1,
        "first_page_uri": first,
        "messages": messages,
        "next_page_uri": next_uri,
        "page": page,
        "page_size": size,
        "previous_page_uri": None if page == 0 else first,
        "start": page * size,
        "uri": f"{LIST}?PageSize={size}&Page={page}",
    }


def twilio_error(status: int, code: int, message: str) -> JSONResponse:
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return JSONResponse(body, status_code=status)


SID_1 = "SM" + "1" * 32
SID_2 = "SM" + "2" * 32
SID_3 = "SM" + "3" * 32
SID_4 = "SM" + "4" * 32
T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


class Fixture:
    """A Twilio-shaped server: records each request and answers with `answer(request)`."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.answer: Callable[[dict], Response] = lambda request: JSONResponse({})
        self._lock = threading.Lock()
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def anything(request: Request, path: str) -> Response:
            seen = {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "raw_query": request.url.query,
                "headers": dict(request.headers),
                "form": dict(parse_qsl((await request.body()).decode())),
            }
            with self._lock:
                self.requests.append(seen)
            return self.answer(seen)

        self.app = app


@pytest.fixture
def twilio() -> Iterator[tuple[Fixture, str]]:
    fixture = Fixture()
    with ServerThread(fixture.app) as server:
        yield fixture, server.base_url


def adapter(base: str, sender: str = OURS, page_size: int = 2) -> tuple[TwilioSms, Any]:
    http = httpx.AsyncClient()
    return TwilioSms(http, base, SID, TOKEN, sender, 5, page_size=page_size), http


async def collect(client: TwilioSms, address: str) -> list:
    out = []
    async for page in client.history(address):
        out.append(page)
    return out


async def test_history_lists_both_directions_and_follows_next_page_uri_to_the_end(twilio):
    fixture, base = twilio
    pages = {
        ("To", None): envelope(
            [message(SID_1, "outbound-api", "See you Thursday", T0)],
            0,
            f"{LIST}?To=%2B15558675310&PageSize=2&Page=1&PageToken=PAabc",
        ),
        ("To", "PAabc"): envelope(
            [message(SID_2, "outbound-reply", "Sure", T0 - timedelta(days=1))], 1, None
        ),
        ("From", None): envelope(
            [
                message(SID_3, "inbound", "Is it still available?", T0 - timedelta(days=2)),
                message(SID_4, "outbound-call", "", T0 - timedelta(days=3), **{"from": LEAD}),
            ],
            0,
            None,
        ),
    }

    def answer(request: dict) -> Response:
        side = "To" if "To" in request["query"] else "From"
        return JSONResponse(pages[(side, request["query"].get("PageToken"))])

    fixture.answer = answer
    client, http = adapter(base)
    async with http:
        got = await collect(client, LEAD)

    flat = [m for page in got for m in page]
    assert [m.id for m in flat] == [SID_1, SID_2, SID_3, SID_4]
    assert [m.direction for m in flat] == ["outbound", "outbound", "inbound", "outbound"]
    assert flat[0].sent_at == T0 and flat[2].body == "Is it still available?"
    first, second, third = fixture.requests
    assert first["path"] == LIST and first["query"] == {"To": LEAD, "PageSize": "2"}
    assert second["raw_query"] == "To=%2B15558675310&PageSize=2&Page=1&PageToken=PAabc"
    assert third["query"] == {"From": LEAD, "PageSize": "2"}
    expected = "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert all(r["headers"]["authorization"] == expected for r in fixture.requests)


async def test_a_page_link_seen_twice_ends_the_sync_with_a_clear_error(twilio):
    fixture, base = twilio
    loop = f"{LIST}?To=%2B15558675310&PageSize=2&Page=1&PageToken=PAloop"
    fixture.answer = lambda request: JSONResponse(
        envelope([message(SID_1, "outbound-api", "hi", T0)], 1, loop)
    )
    client, http = adapter(base)
    async with http:
        with pytest.raises(MalformedResponse, match="a page link repeats"):
            await collect(client, LEAD)
    assert len(fixture.requests) == 2  # the first page and the link: seen again, not fetched


async def test_a_page_link_outside_the_accounts_messages_is_never_followed(twilio):
    fixture, base = twilio
    fixture.answer = lambda request: JSONResponse(
        envelope([], 0, "/2010-04-01/Accounts/ACother/Calls.json?Page=1")
    )
    client, http = adapter(base)
    async with http:
        with pytest.raises(MalformedResponse, match="leaves the messages list"):
            await collect(client, LEAD)
    assert len(fixture.requests) == 1


async def test_send_is_form_encoded_with_from_or_messaging_service(twilio):
    fixture, base = twilio
    fixture.answer = lambda request: JSONResponse(
        message(SID_1, "outbound-api", request["form"]["Body"], None, status="queued"), 201
    )
    client, http = adapter(base)
    service, _ = adapter(base, sender="MG" + "b" * 32)
    async with http:
        assert await client.send(LEAD, "Viewing at 5?", "key-1") == SID_1
        assert await service.send(LEAD, "Viewing at 6?", "key-2") == SID_1
    await service._http.aclose()
    one, two = fixture.requests
    assert one["method"] == "POST" and one["path"] == LIST
    assert one["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert one["form"] == {"To": LEAD, "Body": "Viewing at 5?", "From": OURS}
    assert two["form"] == {
        "To": LEAD,
        "Body": "Viewing at 6?",
        "MessagingServiceSid": "MG" + "b" * 32,
    }
    assert "idempotency-key" not in {name.lower() for name in one["headers"]}


async def test_a_retried_send_finds_the_earlier_message_and_does_not_send_again(twilio):
    fixture, base = twilio
    recent = datetime.now(UTC) - timedelta(minutes=3)

    def answer(request: dict) -> Response:
        if request["method"] == "POST":
            return JSONResponse(message(SID_4, "outbound-api", "x", None), 201)
        found = [
            message(SID_2, "outbound-api", "Another text", recent),
            message(SID_1, "outbound-api", "Viewing at 5?", recent),
        ]
        return JSONResponse(envelope(found, 0, None))

    fixture.answer = answer
    client, http = adapter(base)
    async with http:
        assert await client.send(LEAD, "Viewing at 5?", "key-1", retry=True) == SID_1
    [listing] = fixture.requests
    assert listing["method"] == "GET"
    assert listing["query"]["To"] == LEAD and listing["query"]["From"] == OURS
    since = datetime.fromisoformat(listing["query"]["DateSent>"].replace("Z", "+00:00"))
    assert timedelta(days=1) < datetime.now(UTC) - since < timedelta(days=3)


async def test_a_retried_send_that_twilio_never_took_sends_once(twilio):
    fixture, base = twilio
    old = datetime.now(UTC) - timedelta(days=10)

    def answer(request: dict) -> Response:
        if request["method"] == "POST":
            return JSONResponse(message(SID_4, "outbound-api", "Viewing at 5?", None), 201)
        failed = message(SID_2, "outbound-api", "Viewing at 5?", datetime.now(UTC), status="failed")
        # Same text, but last week's, and one that failed: neither is this send.
        return JSONResponse(
            envelope([failed, message(SID_1, "outbound-api", "Viewing at 5?", old)], 0, None)
        )

    fixture.answer = answer
    client, http = adapter(base)
    async with http:
        assert await client.send(LEAD, "Viewing at 5?", "key-1", retry=True) == SID_4
    methods = [r["method"] for r in fixture.requests]
    assert methods == ["GET", "GET", "POST"]  # dated listing, newest undated page, then send
    assert "DateSent>" not in fixture.requests[1]["query"]


@pytest.mark.parametrize(
    ("status", "code", "error", "text"),
    [
        (400, 21211, Permanent, "sms provider: HTTP 400 (Twilio error 21211)"),
        (401, 20003, Permanent, "sms provider: HTTP 401 (Twilio error 20003)"),
        (404, 20404, Permanent, "sms provider: HTTP 404 (Twilio error 20404)"),
        (500, 20500, Transient, "sms provider: HTTP 500 (Twilio error 20500)"),
        (503, 20503, Transient, "sms provider: HTTP 503 (Twilio error 20503)"),
    ],
)
async def test_twilio_error_bodies_map_without_quoting_them(twilio, status, code, error, text):
    fixture, base = twilio
    secret_text = f"The 'To' number {LEAD} is not a valid phone number."
    fixture.answer = lambda request: twilio_error(status, code, secret_text)
    client, http = adapter(base)
    async with http:
        with pytest.raises(error) as caught:
            await client.send(LEAD, "hello", "key")
    assert type(caught.value) is error and str(caught.value) == text
    assert LEAD not in str(caught.value) and "twilio.com" not in str(caught.value)


async def test_429_is_rate_limited_with_its_retry_after(twilio):
    fixture, base = twilio

    def answer(request: dict) -> Response:
        response = twilio_error(429, 20429, "Too Many Requests")
        response.headers["Retry-After"] = "7"
        return response

    fixture.answer = answer
    client, http = adapter(base)
    async with http:
        with pytest.raises(RateLimited) as caught:
            await collect(client, LEAD)
    assert caught.value.retry_after == 7


async def test_an_unexpected_shape_is_malformed(twilio):
    fixture, base = twilio
    fixture.answer = lambda request: JSONResponse({"messages": "nope"})
    client, http = adapter(base)
    async with http:
        with pytest.raises(MalformedResponse):
            await collect(client, LEAD)


def test_address_is_the_leads_phone():
    client = TwilioSms(httpx.AsyncClient(), "https://api.twilio.com", SID, TOKEN, OURS, 5)
    assert client.address({"phone": LEAD, "sms_contact_id": "c-1"}) == LEAD
    assert client.address({"phone": None, "sms_contact_id": "c-1"}) is None


def test_settings_need_the_whole_twilio_account_for_the_twilio_kind():
    from pydantic import ValidationError

    from app.settings import Settings, describe_error

    complete = {
        "twilio_account_sid": SID,
        "twilio_auth_token": TOKEN,
        "twilio_from": OURS,
    }
    assert Settings(_env_file=None, sms_provider_kind="twilio", **complete).twilio_from == OURS
    for missing in complete:
        values = {k: v for k, v in complete.items() if k != missing}
        with pytest.raises(ValidationError) as caught:
            Settings(_env_file=None, sms_provider_kind="twilio", **values)
        assert describe_error(caught.value).endswith(f"needs {missing.upper()}")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, twilio_from="555-0100")
    assert describe_error(caught.value).startswith("invalid setting TWILIO_FROM:")
    service = Settings(_env_file=None, twilio_from="MG" + "f" * 32)
    assert service.twilio_from == "MG" + "f" * 32


def test_the_twilio_kind_builds_the_adapter_and_signs_with_its_token():
    from app.accounts.kinds import kind_for

    kind = kind_for("sms", "twilio")
    assert kind is not None and kind.secret_names() == ("auth_token",)
    account = kind.model_validate({"account_sid": SID, "auth_token": TOKEN, "sender": OURS})
    assert account.signing_secret() == TOKEN
    assert TOKEN not in str(account.public_values())
    client = account.client(httpx.AsyncClient(), 5)
    assert isinstance(client, TwilioSms) and client.sender == OURS
    with pytest.raises(ValueError):
        kind.model_validate({"account_sid": SID, "auth_token": TOKEN, "sender": "ours"})


def test_the_local_run_points_twilio_at_the_sandbox():
    from app.local import sandbox_twilio

    local = sandbox_twilio("http://127.0.0.1:8000", "k")
    assert local["sms_provider_kind"] == "twilio"
    assert local["twilio_api_url"] == "http://127.0.0.1:8000/sandbox/twilio"
    assert local["twilio_auth_token"] == "k"
