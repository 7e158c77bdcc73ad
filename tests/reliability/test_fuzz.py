"""Generated input against a running service: schemathesis over every operation of
/openapi.json, and hypothesis over webhook bodies and headers. No input may get a 5xx, and
every 4xx carries the contract's {"error", "detail"} body."""

from __future__ import annotations

import asyncio
import json
import warnings
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from tests.conftest import API_TOKEN, CRON_SECRET, WEBHOOK_SECRET
from tests.support import assert_error, seed, signed

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import schemathesis
    from schemathesis import GenerationMode

EXAMPLES = 20
# On the suite's `handoff` profile (tests/reliability/conftest.py): derandomized, no database.
FUZZ = settings(
    settings.get_profile("handoff"),
    max_examples=EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
# The runner drains for as long as its budget allows: fuzzed with a budget of 1 s.
SLOW = {"/api/cron/background-jobs"}


def assert_answer(response_status: int, content_type: str, text: str, what: str) -> None:
    """No 5xx; a 4xx is JSON {"error": str, "detail": str} without a trace."""
    assert response_status < 500, f"{what}: {response_status} {text[:500]}"
    if 400 <= response_status < 500:
        assert content_type.startswith("application/json"), f"{what}: {content_type} {text[:200]}"
        body = json.loads(text)
        assert isinstance(body, dict), (what, text[:200])
        assert isinstance(body.get("error"), str) and body["error"], (what, text[:200])
        assert isinstance(body.get("detail"), str) and body["detail"], (what, text[:200])
        assert "Traceback" not in text, what


def bearer(path: str) -> dict[str, str]:
    token = CRON_SECRET if path.startswith("/api/cron/") else API_TOKEN
    return {"Authorization": f"Bearer {token}"}


def fuzz_operation(operation, strategy, base_url: str):
    """A hypothesis test calling one operation with generated cases."""
    headers = bearer(operation.path)

    @FUZZ
    @given(case=strategy)
    def check(case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        # schemathesis keeps every value of a header, lower-cased names to lists.
        content_type = {k.lower(): v for k, v in response.headers.items()}.get("content-type")
        assert_answer(
            response.status_code,
            content_type[0] if content_type else "",
            response.text,
            f"{operation.label} {case.as_curl_command(headers=headers)}",
        )

    return check


async def seeded(service) -> list[str]:
    """Rows for generated ids to hit now and then: a client, leads, jobs, a sequence."""
    leads = await seed(service, leads=3)
    response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": leads[0]})
    assert response.status_code == 202
    steps = [{"after_s": 3600, "channel": "sms", "text": "Fuzz step"}]
    response = await service.api.post("/api/followups", json={"lead_id": leads[0], "steps": steps})
    assert response.status_code == 201
    return leads


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
async def test_schemathesis_finds_no_5xx_on_any_operation(mode, service, pii):
    pii.add("Fuzz step")
    await seeded(service)
    schema = await asyncio.to_thread(
        schemathesis.openapi.from_url, f"{service.base_url}/openapi.json"
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15, [op.label for op in operations]
    exercised = []
    failures: list[str] = []
    for operation in operations:
        if operation.path in SLOW:
            strategy = operation.as_strategy(mode, query={"budget_s": 1})
        else:
            strategy = operation.as_strategy(mode)
        check = fuzz_operation(operation, strategy, service.base_url)
        try:
            await asyncio.to_thread(check)
        except Unsatisfiable:
            # Nothing to break in this operation's input (no parameters, no body).
            assert mode == GenerationMode.NEGATIVE, operation.label
            continue
        except AssertionError as failure:
            # Go on with the other operations: one report names every failing one.
            failures.append(str(failure).split("\n")[0][:3000])
        exercised.append(operation.label)
    assert failures == [], "\n".join(failures)
    if mode == GenerationMode.POSITIVE:
        assert len(exercised) == len(operations), "every operation was called"


# Header values a sender could put on the wire: printable ASCII, no line breaks.
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(
    str.strip
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
# Any code point, surrogates and NUL included: senders do not all clean their text.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
ANY_VALUE = JSON | ANY_TEXT
VALID_EMAIL = {
    "client_id": "acme",
    "message_id": "fuzz-message",
    "from": "Fuzz Sender <fuzz.sender@example.com>",
    "subject": "Fuzzed subject",
    "text": "Fuzzed text",
    "received_at": "2025-06-01T10:00:00Z",
}


def post(base_url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        return client.post("/webhooks/email", content=body, headers=headers)


def check_webhook_answer(response: httpx.Response, allowed: set[int]) -> None:
    assert_answer(
        response.status_code,
        response.headers.get("content-type", ""),
        response.text,
        f"webhook {response.request.headers!r} {response.request.content[:300]!r}",
    )
    assert response.status_code in allowed, (response.status_code, response.text)


async def test_random_bytes_and_headers_are_refused_with_4xx(service):
    """Unsigned or wrongly signed deliveries: a 401 (or 413/422), never a 5xx."""

    @FUZZ
    @given(
        body=st.binary(max_size=4096),
        webhook_id=HEADER_TEXT,
        timestamp=HEADER_TEXT | st.integers(-(2**70), 2**70).map(str),
        signature=HEADER_TEXT,
        prefix=st.sampled_from(["webhook", "svix"]),
        content_type=st.sampled_from(["application/json", "text/plain", "", "application/x"]),
    )
    def check(body, webhook_id, timestamp, signature, prefix, content_type) -> None:
        headers = {
            f"{prefix}-id": webhook_id,
            f"{prefix}-timestamp": timestamp,
            f"{prefix}-signature": signature,
        }
        if content_type:
            headers["content-type"] = content_type
        check_webhook_answer(post(service.base_url, body, headers), {401, 413, 422})

    await asyncio.to_thread(check)


async def test_validly_signed_random_json_gets_202_or_422(service, db, pii):
    """Deliveries that pass the signature check carry any JSON at all: accepted, ignored or
    refused as 422, never a 5xx; each accepted delivery id has one job."""
    pii.add(VALID_EMAIL["subject"], VALID_EMAIL["text"])
    await seed(service, leads=1)
    accepted: set[str] = set()
    counter = iter(range(10**9))

    @FUZZ
    @given(
        event=st.one_of(
            JSON,
            st.fixed_dictionaries(
                {"type": st.sampled_from(["email.received", "email.sent"]) | st.text()},
                optional={"data": JSON},
            ),
        ),
        prefix=st.sampled_from(["webhook", "svix"]),
    )
    def any_json(event, prefix) -> None:
        body = json.dumps(event).encode()
        webhook_id = f"fuzz-json-{next(counter)}"
        response = post(service.base_url, body, signed(WEBHOOK_SECRET, body, msg_id=webhook_id))
        check_webhook_answer(response, {202, 422})
        if response.status_code == 202 and "job_id" in response.json():
            accepted.add(webhook_id)

    @FUZZ
    @example(data={**VALID_EMAIL, "text": "nul \x00 inside"}, age_s=0)
    @example(data={**VALID_EMAIL, "subject": "lone \ud800 surrogate"}, age_s=0)
    @example(data={**VALID_EMAIL, "from": "Zero \x00 <zero@example.com>"}, age_s=0)
    @given(
        data=st.fixed_dictionaries(
            {name: st.just(value) | ANY_VALUE for name, value in VALID_EMAIL.items()},
            optional={"email_lead_id": st.just("e-acme-lead-0") | ANY_VALUE},
        ),
        age_s=st.integers(-250, 250),
    )
    def email_shaped(data, age_s) -> None:
        # ensure_ascii: lone surrogates go out as \ud800 escapes, which is valid JSON.
        body = json.dumps({"type": "email.received", "data": data}).encode()
        webhook_id = f"fuzz-email-{next(counter)}"
        at = datetime.now(UTC) - timedelta(seconds=age_s)
        headers = signed(WEBHOOK_SECRET, body, msg_id=webhook_id, at=at)
        response = post(service.base_url, body, headers)
        check_webhook_answer(response, {202, 422})
        if response.status_code == 202:
            accepted.add(webhook_id)

    await asyncio.to_thread(any_json)
    await asyncio.to_thread(email_shaped)
    rows = await db.fetch("SELECT dedupe_key FROM jobs WHERE type = 'email_inbound'")
    assert {r["dedupe_key"].removeprefix("email_inbound:") for r in rows} == accepted
    # Whatever was accepted, the runner gets through it without a 5xx either.
    summary = await service.run_jobs(budget_s=20)
    assert summary["stop_reason"] == "drained"
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'running'") == 0


# Strings Postgres cannot store: NUL anywhere, and an unpaired surrogate (valid as a JSON
# escape, so any sender can produce one).
UNSTORABLE = ["nul\x00inside", "lone\ud800surrogate"]


def unstorable_requests(bad: str, lead: str) -> list[tuple[str, str, dict]]:
    """Every place a route takes a free-form string, with `bad` in it."""
    # As a client would percent-encode it; a lone surrogate as the bytes UTF-8 would give it.
    quoted = quote(bad.encode("utf-8", "surrogatepass"), safe="")
    step = {"after_s": 5, "channel": "sms", "text": bad}
    return [
        ("GET", f"/api/leads?client_id={quoted}", {}),
        ("GET", f"/api/jobs?type={quoted}", {}),
        ("GET", f"/api/leads/{quoted}", {}),
        ("GET", f"/api/leads/{quoted}/messages", {}),
        ("GET", f"/api/followups/{quoted}", {}),
        ("GET", f"/api/jobs/{quoted}", {}),
        ("POST", "/api/clients", {"json": {"id": "fuzz-client", "name": bad}}),
        (
            "POST",
            "/api/leads",
            {"json": {"client_id": "acme", "leads": [{"id": "f1", "name": bad}]}},
        ),
        (
            "POST",
            "/api/leads",
            {"json": {"client_id": "acme", "leads": [{"id": "f2", "email": bad}]}},
        ),
        (
            "POST",
            "/api/leads",
            {"json": {"client_id": "acme", "leads": [{"id": "f3", "phone": bad}]}},
        ),
        ("POST", "/api/followups", {"json": {"lead_id": lead, "steps": [step]}}),
        (
            "POST",
            "/api/reactivations",
            {
                "json": {
                    "id": "fuzz-campaign",
                    "client_id": "acme",
                    "inactive_days": 1,
                    "channel": "email",
                    "text": bad,
                    "subject": bad,
                }
            },
        ),
    ]


async def test_strings_postgres_cannot_store_get_4xx_not_5xx(service, db):
    """NUL and lone surrogates, in every free-form string of the API and of a signed webhook:
    refused (or cleaned and accepted), never a 500."""
    [lead] = await seed(service, leads=1)
    failures = []
    for n, bad in enumerate(UNSTORABLE):
        for method, path, kwargs in unstorable_requests(bad, lead):
            body = kwargs.get("json")
            content = json.dumps(body).encode() if body is not None else None
            headers = {"content-type": "application/json"} if content else {}
            headers |= bearer(path)
            # A connection of its own each: after a 500 the server drops the connection.
            async with httpx.AsyncClient(base_url=service.base_url) as client:
                response = await client.request(method, path, content=content, headers=headers)
            if response.status_code >= 500:
                failures.append(f"{method} {path} {kwargs!r}: {response.status_code}")
        for field in ("from", "subject", "text"):
            data = {**VALID_EMAIL, "message_id": f"unstorable-{n}-{field}", field: bad}
            event = json.dumps({"type": "email.received", "data": data}).encode()
            headers = signed(WEBHOOK_SECRET, event, msg_id=f"unstorable-{n}-{field}")
            async with httpx.AsyncClient(base_url=service.base_url) as client:
                response = await client.post("/webhooks/email", content=event, headers=headers)
            if response.status_code >= 500:
                failures.append(f"webhook with {bad!r} in {field}: {response.status_code}")
            elif response.status_code >= 400:
                assert_answer(
                    response.status_code,
                    response.headers["content-type"],
                    response.text,
                    f"webhook {field}",
                )
    assert failures == [], "\n".join(["5xx for unstorable strings:", *failures])
    # Whatever was accepted can be processed: the runner does not choke on it.
    summary = await service.run_jobs(budget_s=20)
    assert summary["stop_reason"] == "drained"


def test_every_generated_input_comes_from_a_derandomized_profile_without_a_database():
    """The same examples on every run, nothing remembered between runs: for the profile the
    suite loads, for FUZZ, and for a hypothesis test that names no settings of its own."""
    assert settings.default.derandomize is True and settings.default.database is None
    assert FUZZ.derandomize is True and FUZZ.database is None

    def examples() -> list[int]:
        seen: list[int] = []

        @given(st.integers())
        def draw(value: int) -> None:
            seen.append(value)

        draw()
        return seen

    first = examples()
    assert examples() == first and len(set(first)) > 10


async def test_job_ids_that_only_look_numeric_get_404(service):
    """Job ids are opaque strings: whatever str.isdigit() thinks of superscripts and other
    digits, an id no job has is a 404 on every job route."""
    failures = []
    for job_id in ["³", "²5", "①", "٣", "1" * 40, "-1", "0x1", "1e3", " 1"]:
        path = f"/api/jobs/{quote(job_id, safe='')}"
        for method, suffix in (("GET", ""), ("POST", "/retry"), ("POST", "/cancel")):
            # A connection of its own each: after a 500 the server drops the connection.
            async with httpx.AsyncClient(base_url=service.base_url, headers=bearer(path)) as c:
                response = await c.request(method, path + suffix)
            if response.status_code != 404:
                failures.append(f"{method} {path}{suffix}: {response.status_code}")
            else:
                assert_error(response, 404)
    assert failures == [], "\n".join(failures)
