"""The Resend adapter against fixtures written from Resend's API reference (resend-openapi:
SendEmailRequest/Response, ListEmailsResponse, ListReceivedEmailsResponse,
GetReceivedEmailResponse; the Errors page's names; the rate-limit headers), served over real
HTTP on loopback."""

from __future__ import annotations

import httpx
import pytest

from app.accounts.kinds import ResendEmail
from app.providers import MalformedResponse, Permanent, RateLimited, Transient
from app.providers.resend import ResendClient

KEY = "re_test_0123456789abcdef"
FROM = "Acme <onboarding@acme.example>"
LEAD = "Ada Lovelace <Ada@Example.com>"
ADDRESS = "ada@example.com"


def client(server, **kwargs) -> ResendClient:
    http = httpx.AsyncClient()
    return ResendClient(http, server.base_url, KEY, FROM, timeout_s=5)


def received_item(email_id: str, sender: str, at: str = "2023-10-06T23:47:56.678Z") -> dict:
    """An item of ListReceivedEmailsResponse (no body: the list carries none)."""
    return {
        "id": email_id,
        "to": ["delivered@acme.example"],
        "from": sender,
        "subject": f"About {email_id}",
        "message_id": f"<{email_id}@example.com>",
        "bcc": None,
        "cc": None,
        "reply_to": None,
        "created_at": at,
        "attachments": [],
    }


def received_email(email_id: str, sender: str, text: str | None, html: str | None = None) -> dict:
    """GetReceivedEmailResponse."""
    return {
        "object": "email",
        **received_item(email_id, sender),
        "html": html,
        "text": text,
        "headers": {"X-Custom-Header": "value"},
    }


def sent_item(email_id: str, to: list[str], text: str) -> dict:
    """An `Email` of ListEmailsResponse."""
    return {
        "object": "email",
        "id": email_id,
        "to": to,
        "from": FROM,
        "created_at": "2023-04-03T22:13:42.674981+00:00",
        "subject": "Hello World",
        "html": None,
        "text": text,
        "bcc": [],
        "cc": [],
        "reply_to": [],
        "last_event": "delivered",
    }


def paged(pages: list[list[dict]]):
    """A list endpoint answering page n+1 for `after` = the last id of page n."""

    def answer(query: dict[str, str]):
        index = 0
        if "after" in query:
            index = next(i + 1 for i, page in enumerate(pages) if page[-1]["id"] == query["after"])
        body = {"object": "list", "has_more": index < len(pages) - 1, "data": pages[index]}
        return 200, body, {}

    return answer


async def test_send_posts_the_email_with_the_idempotency_key(fixture_server) -> None:
    fixture_server.answer("POST", "/emails", 200, {"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"})
    email_id = await client(fixture_server).send(
        ADDRESS, "Your viewing", "Thursday at 5?", "followup_send:f-1:0"
    )
    assert email_id == "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"
    [request] = fixture_server.requests("POST", "/emails")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["idempotency-key"] == "followup_send:f-1:0"
    assert request.body == {
        "from": FROM,
        "to": [ADDRESS],
        "subject": "Your viewing",
        "text": "Thursday at 5?",
    }


async def test_a_key_longer_than_resend_takes_is_hashed(fixture_server) -> None:
    fixture_server.answer("POST", "/emails", 200, {"id": "e-1"})
    await client(fixture_server).send(ADDRESS, "s", "t", "k" * 300)
    [request] = fixture_server.requests("POST", "/emails")
    assert 1 <= len(request.headers["idempotency-key"]) <= 256


async def test_history_pages_both_lists_to_the_end_and_keeps_the_leads_emails(
    fixture_server,
) -> None:
    stranger = "Bob <bob@example.net>"
    received_pages = [
        [received_item("r-3", stranger), received_item("r-2", LEAD)],
        [received_item("r-1", "ada@example.com")],
    ]
    sent_pages = [
        [sent_item("s-3", ["bob@example.net"], "not hers")],
        [sent_item("s-2", [ADDRESS], "Happy to help.")],
        [sent_item("s-1", ["Ada <ADA@example.com>", "x@example.net"], "Welcome!")],
    ]
    fixture_server.on("GET", "/emails/receiving", paged(received_pages))
    fixture_server.on("GET", "/emails", paged(sent_pages))
    fixture_server.answer(
        "GET", "/emails/receiving/r-2", 200, received_email("r-2", LEAD, "Is it still free?")
    )
    fixture_server.answer(
        "GET",
        "/emails/receiving/r-1",
        200,
        received_email("r-1", ADDRESS, None, "<p>Call me <b>tomorrow</b></p><style>p{}</style>"),
    )

    adapter = client(fixture_server)
    assert adapter.address({"email": LEAD}) == ADDRESS
    assert adapter.address({"email": None}) is None
    batches = [batch async for batch in adapter.history(ADDRESS)]

    replies = [reply for batch in batches for reply in batch]
    assert [(r.id, r.direction, r.text) for r in replies] == [
        ("r-2", "inbound", "Is it still free?"),
        ("r-1", "inbound", "Call me tomorrow"),
        ("s-2", "outbound", "Happy to help."),
        ("s-1", "outbound", "Welcome!"),
    ]
    assert len(batches) == 5  # one per page: 2 received, 3 sent
    afters = [s.query.get("after") for s in fixture_server.requests("GET", "/emails/receiving")]
    assert afters == [None, "r-2"]
    afters = [s.query.get("after") for s in fixture_server.requests("GET", "/emails")]
    assert afters == [None, "s-3", "s-2"]
    assert {s.query["limit"] for s in fixture_server.seen if "limit" in s.query} == {"100"}
    # Only the lead's received emails are fetched for their text.
    fetched = [s.path for s in fixture_server.seen if s.path.startswith("/emails/receiving/")]
    assert fetched == ["/emails/receiving/r-2", "/emails/receiving/r-1"]


async def test_a_repeating_cursor_ends_the_history_with_a_clear_error(fixture_server) -> None:
    page = {"object": "list", "has_more": True, "data": [received_item("r-9", "x@example.net")]}
    fixture_server.answer("GET", "/emails/receiving", 200, page)
    with pytest.raises(MalformedResponse, match="the list cursor repeats"):
        async for _ in client(fixture_server).history(ADDRESS):
            pass


async def test_has_more_with_an_empty_page_is_malformed(fixture_server) -> None:
    fixture_server.answer("GET", "/emails", 200, {"object": "list", "has_more": True, "data": []})
    fixture_server.answer(
        "GET", "/emails/receiving", 200, {"object": "list", "has_more": False, "data": []}
    )
    with pytest.raises(MalformedResponse):
        async for _ in client(fixture_server).history(ADDRESS):
            pass


def resend_error(status: int, name: str, message: str) -> dict:
    return {"statusCode": status, "name": name, "message": message}


SECRET_MESSAGE = "You can only send testing emails to your own email address (ada@example.com)."


@pytest.mark.parametrize(
    ("status", "name", "error", "detail"),
    [
        (400, "validation_error", Permanent, "HTTP 400 (validation_error)"),
        (401, "missing_api_key", Permanent, "HTTP 401 (missing_api_key)"),
        (403, "validation_error", Permanent, "HTTP 403 (validation_error)"),
        (404, "not_found", Permanent, "HTTP 404 (not_found)"),
        (409, "invalid_idempotent_request", Permanent, "HTTP 409 (invalid_idempotent_request)"),
        (409, "concurrent_idempotent_requests", Transient, "HTTP 409"),
        (422, "invalid_from_address", Permanent, "HTTP 422 (invalid_from_address)"),
        (429, "daily_quota_exceeded", Transient, "HTTP 429 (daily_quota_exceeded)"),
        (429, "monthly_quota_exceeded", Permanent, "HTTP 429 (monthly_quota_exceeded)"),
        (500, "application_error", Transient, "HTTP 500 (application_error)"),
        (500, "internal_server_error", Transient, "HTTP 500 (internal_server_error)"),
        (418, "a_name_not_documented", Permanent, "HTTP 418"),
    ],
)
async def test_error_bodies_map_by_name_without_quoting_the_message(
    fixture_server, status: int, name: str, error: type, detail: str
) -> None:
    fixture_server.answer("POST", "/emails", status, resend_error(status, name, SECRET_MESSAGE))
    with pytest.raises(error) as caught:
        await client(fixture_server).send(ADDRESS, "s", "t", "key-1")
    assert type(caught.value) is error
    assert str(caught.value).startswith(f"email provider: {detail}")
    assert "ada@" not in str(caught.value) and "testing" not in str(caught.value)


async def test_rate_limit_exceeded_honours_retry_after(fixture_server) -> None:
    headers = {
        "ratelimit-limit": "2",
        "ratelimit-remaining": "0",
        "ratelimit-reset": "1",
        "retry-after": "7",
    }
    body = resend_error(429, "rate_limit_exceeded", "Too many requests.")
    fixture_server.answer("GET", "/emails", 429, body, **headers)
    with pytest.raises(RateLimited) as caught:
        async for _ in client(fixture_server)._pages("/emails"):
            pass
    assert caught.value.retry_after == 7


async def test_rate_limit_without_retry_after_uses_ratelimit_reset(fixture_server) -> None:
    body = resend_error(429, "rate_limit_exceeded", "Too many requests.")
    fixture_server.answer("POST", "/emails", 429, body, **{"ratelimit-reset": "3"})
    with pytest.raises(RateLimited) as caught:
        await client(fixture_server).send(ADDRESS, "s", "t", "key-1")
    assert caught.value.retry_after == 3


async def test_fetch_received_reads_the_text(fixture_server) -> None:
    email = received_email("4ef9a417-02e9-4d39-ad75-9611e0fcc33c", LEAD, "Hello there")
    fixture_server.answer("GET", f"/emails/receiving/{email['id']}", 200, email)
    got = await client(fixture_server).fetch_received(email["id"])
    assert (got.id, got.from_, got.body, got.subject) == (
        email["id"],
        LEAD,
        "Hello there",
        email["subject"],
    )


async def test_a_received_email_of_another_shape_is_malformed(fixture_server) -> None:
    fixture_server.answer("GET", "/emails/receiving/x", 200, {"object": "email"})
    with pytest.raises(MalformedResponse, match="unexpected response shape"):
        await client(fixture_server).fetch_received("x")


def test_the_kind_builds_the_adapter_and_keeps_its_secrets() -> None:
    kind = ResendEmail.model_validate(
        {"key": KEY, "from_address": FROM, "webhook_secret": "whsec_" + "QUJD" * 11}
    )
    assert ResendEmail.secret_names() == ("key", "webhook_secret")
    assert kind.public_values() == {"from_address": FROM, "url": "https://api.resend.com"}
    adapter = kind.client(httpx.AsyncClient(), 5)
    assert isinstance(adapter, ResendClient) and adapter.from_address == FROM
    assert kind.signing_secret() == "whsec_" + "QUJD" * 11
    with pytest.raises(ValueError, match="email address"):
        ResendEmail.model_validate({"key": KEY, "from_address": "not an address"})


def test_the_resend_api_key_is_masked_in_log_lines() -> None:
    from app.settings import Settings
    from app.telemetry import register_secrets, scrub

    key = "re_MaskMe0123456789abcdef"
    settings = Settings(
        _env_file=None,
        email_provider_kind="resend",
        resend_api_key=key,
        resend_from="hello@acme.example",
    )
    register_secrets(settings)
    assert key not in scrub(f"Authorization: Bearer {key}")


async def test_the_generic_email_client_pages_its_history_to_the_end(fixture_server) -> None:
    from app.providers import EmailClient

    def reply(i: int) -> dict:
        at = "2026-01-01T00:00:00Z"
        return {"id": f"r{i}", "direction": "inbound", "text": f"t{i}", "sent_at": at}

    def pages(query: dict[str, str]):
        page = int(query["page"])
        return 200, {"replies": [reply(page)], "next_page": page + 1 if page < 3 else None}, {}

    fixture_server.on("GET", "/leads/e-1/replies", pages)
    generic = EmailClient(httpx.AsyncClient(), fixture_server.base_url, KEY, 5)
    assert generic.address({"email_lead_id": "e-1", "email": ADDRESS}) == "e-1"
    got = [r.id async for batch in generic.history("e-1") for r in batch]
    assert got == ["r1", "r2", "r3"]

    fixture_server.answer("GET", "/leads/e-2/replies", 200, {"replies": [], "next_page": 1})
    with pytest.raises(MalformedResponse, match="do not advance"):
        async for _ in generic.history("e-2"):
            pass
