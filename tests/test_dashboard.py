"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against the app.

Each test starts one headless Chromium; the app runs on loopback with sandbox providers, so
the page talks to the same API as any client and the database tells what really happened.
Without Chromium (or Playwright) the browser tests are skipped, with the reason; under CI
(`CI` set, as CI services do) they fail instead, so a CI run never passes without them.

The test of a client key's sign-in needs the client keys API (`POST
/api/clients/{client_id}/keys`); a build without it skips that test, with the reason.

The README's picture, docs/dashboard.png, is taken by `test_sync_end_to_end` only when
`HANDOFF_SCREENSHOT=1` is set, so an ordinary run leaves the checkout as it was:
`HANDOFF_SCREENSHOT=1 pytest tests/test_dashboard.py -k end_to_end` renews it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import get_args
from urllib.parse import urlsplit

import pytest

from app.models.api import JobStatus
from app.queue.registry import registry
from tests.conftest import API_TOKEN, ROOT
from tests.support import assert_error, has_route, seed

# HANDOFF_TEST_CHROMIUM: another browser binary (tests of this rule point it at nothing).
CHROMIUM = Path(os.environ.get("HANDOFF_TEST_CHROMIUM") or "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
try:
    from playwright.async_api import async_playwright, expect
except ImportError:
    async_playwright = expect = None
if not CHROMIUM.exists():
    MISSING: str | None = (
        f"the dashboard's browser tests need Chromium at {CHROMIUM} (apt install chromium)"
    )
elif async_playwright is None:
    MISSING = "the dashboard's browser tests need playwright (pip install -e '.[test]')"
else:
    MISSING = None
# Outside CI a missing browser skips these tests before anything is set up for them.
needs_browser = pytest.mark.skipif(MISSING is not None and not IN_CI, reason=MISSING or "")

KEYS_ROUTE = "/api/clients/{client_id}/keys"
needs_client_keys = pytest.mark.skipif(
    not has_route(KEYS_ROUTE), reason=f"this build has no client keys ({KEYS_ROUTE})"
)

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SCREENSHOT = ROOT / "docs" / "dashboard.png"
# HANDOFF_SCREENSHOT=1: the end-to-end test (re)writes docs/dashboard.png.
TAKE_SCREENSHOT = os.environ.get("HANDOFF_SCREENSHOT", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture
async def browser() -> AsyncIterator:
    if MISSING is not None:
        # Under CI a missing browser is a failure; elsewhere `needs_browser` skips first.
        if IN_CI:
            pytest.fail(f"CI is set and {MISSING}", pytrace=False)
        pytest.skip(MISSING)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest.fixture
async def open_page(browser) -> AsyncIterator[Callable[..., Awaitable]]:
    """A fresh tab (its own sessionStorage); after the test, no script error may have happened."""
    problems: list[str] = []

    async def open_(viewport: dict[str, int] = LAPTOP):
        context = await browser.new_context(viewport=viewport)
        page = await context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console: {msg.text}")
                if "Content Security Policy" in msg.text
                else None
            ),
        )
        return page

    yield open_
    assert problems == []


async def signed_in(open_page, service, viewport: dict[str, int] = LAPTOP):
    page = await open_page(viewport)
    await page.goto(f"{service.base_url}/?token={API_TOKEN}")
    await expect(page.locator("#app")).to_be_visible()
    return page


async def count_sync_jobs(db) -> int:
    return await db.fetchval("SELECT count(*) FROM jobs WHERE type = 'conversation_sync'")


# An hour of acme's finished jobs: (minutes ago, type, status, how many). Each started the
# moment it was due, so none of them adds to the backlog ...
HISTORY = [
    (40, "lead_scoring", "succeeded", 4),
    (20, "followup_send", "cancelled", 2),
    (5, "lead_scoring", "succeeded", 3),
    (5, "followup_send", "failed", 1),
]
# ... but for two that were due 30 minutes ago and started 10 minutes ago.
WAITED = 2
HISTORY_TOTALS = {"succeeded": 9, "failed": 1, "cancelled": 2}


async def add_jobs(db, n: int, type_: str, status: str, key: str, due, started, finished) -> None:
    await db.execute(
        "INSERT INTO jobs (type, status, dedupe_key, dedupe_scope, client_id, lead_id, attempts,"
        " created_at, run_at, started_at, finished_at)"
        " SELECT $1, $2, $1 || ':' || $3 || '-' || i, 'forever', 'acme', 'acme-lead-0', 1,"
        " $4, $4, $5, $6"
        " FROM generate_series(1, $7) AS i",
        type_,
        status,
        key,
        due,
        started,
        finished,
        n,
    )


async def add_history(db) -> None:
    now = await db.fetchval("SELECT now()")
    for ago, type_, status, n in HISTORY:
        at = now - timedelta(minutes=ago)
        started = None if status == "cancelled" else at
        await add_jobs(db, n, type_, status, f"past-{ago}-{status}", at, started, at)
    due, started = now - timedelta(minutes=30), now - timedelta(minutes=10)
    await add_jobs(db, WAITED, "lead_scoring", "succeeded", "past-waited", due, started, started)


def chart_summary(succeeded: int, failed: int, cancelled: int, backlog: str) -> re.Pattern:
    """The chart's description, as the page writes it."""
    return re.compile(
        rf"^In the last hour: {succeeded} succeeded, {failed} failed, {cancelled} cancelled\. "
        rf"Due backlog now {backlog}\.$"
    )


async def test_page_and_assets_are_served_without_a_token(service):
    page = await service.anon.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # The first load carries the token in its address: not cached, not sent on as a Referer.
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert sorted(a.split("?")[0] for a in assets) == [
        "/static/dashboard.css",
        "/static/dashboard.js",
    ]
    for asset in assets:
        response = await service.anon.get(asset)
        assert response.status_code == 200, f"{asset}: is app/static mounted at /static?"
        assert response.text.strip()
    # The script is ES modules; those the entry pulls in (by plain names, without `?v=`) are
    # served as JavaScript and checked again on every use, so none outlives a deploy.
    assert '<script type="module" src="/static/dashboard.js?v=' in page.text
    modules, seen = ["dashboard.js"], set()
    while modules:
        name = modules.pop()
        if name in seen:
            continue
        seen.add(name)
        response = await service.anon.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith("text/javascript"), name
        assert response.headers["cache-control"] == "no-cache", name
        modules += re.findall(r'^import .* from "\./([\w-]+\.js)";$', response.text, re.M)
    assert len(seen) > 1
    assert seen == {p.name for p in (ROOT / "app" / "static").glob("*.js")}
    # The statuses come from the server, as data the script reads (types: see the filter).
    data = re.search(r'<script type="application/json" id="page-data">(.*?)</script>', page.text)
    assert data is not None
    assert json.loads(data.group(1)) == {"statuses": list(get_args(JobStatus))}
    assert "prune_jobs" in registry.types()
    assert "/" not in (await service.anon.get("/openapi.json")).json()["paths"]


@needs_browser
async def test_sync_end_to_end(service, db, open_page):
    await seed(service, leads=2)
    # An hour behind it, so the queue's chart (and the README's picture) has a past to show.
    await add_history(db)
    page = await signed_in(open_page, service)
    # The token left the address bar (and history) at once; the tab keeps it.
    assert "token" not in page.url
    assert API_TOKEN not in page.url
    await expect(page.locator("#signed-in-as")).to_have_text("API token: all clients")
    await expect(page.locator("#chart-desc")).to_have_text(
        chart_summary(**HISTORY_TOTALS, backlog=f"0, at most {WAITED}")
    )

    await page.select_option("#client-select", "acme")
    await page.select_option("#lead-select", "acme-lead-0")
    sync_posts: list[str] = []
    page.on(
        "request",
        lambda r: sync_posts.append(r.url) if r.method == "POST" and r.url.endswith("/sync") else 0,
    )

    # A double click sends one request (the button is disabled while it is out) ...
    await page.dblclick("#sync-button")
    followed = page.locator("#sync-jobs li")
    await expect(followed).to_have_count(2)
    await expect(page.locator("#sync-message")).to_have_text("Started 2 jobs.")
    assert len(sync_posts) == 1
    assert await count_sync_jobs(db) == 2
    await expect(followed.nth(0)).to_contain_text("acme-lead-0:")
    details = sorted(await followed.locator(".muted").all_text_contents())
    assert [d.rsplit(":", 1)[-1] for d in details] == ["email", "sms"]

    # ... and a second sync while they wait joins them instead of creating new ones.
    await page.click("#sync-button")
    await expect(page.locator("#sync-message")).to_have_text("Already syncing: following 2 jobs.")
    await expect(followed.locator(".tag")).to_have_text(["already syncing"] * 2)
    assert len(sync_posts) == 2
    assert await count_sync_jobs(db) == 2
    await expect(followed.locator(".status")).to_have_text(["pending", "pending"])

    summary = await service.run_jobs()
    assert summary["succeeded"] == 2

    # Followed live, without a reload: both succeed, and the lead view shows what was stored.
    await expect(followed.locator(".status")).to_have_text(["succeeded", "succeeded"])
    stored = await db.fetch(
        "SELECT text FROM messages WHERE lead_id = 'acme-lead-0' ORDER BY sent_at, id"
    )
    assert len(stored) > 0
    rows = page.locator("#messages-body tr")
    await expect(rows).to_have_count(len(stored))
    await expect(rows.locator(".message-text")).to_have_text([m["text"] for m in stored])
    await expect(page.locator("#lead-title")).to_contain_text("acme-lead-0")

    # The jobs table and the overview caught up by themselves too.
    for job_id in await db.fetch("SELECT id FROM jobs WHERE type = 'conversation_sync'"):
        row = page.locator(f'#jobs-body tr[data-job-id="{job_id["id"]}"]')
        await expect(row.locator(".status")).to_have_text("succeeded")
        await expect(row.locator('[data-label="Duration"]')).to_have_text(re.compile(r"\d"))
    await expect(page.locator("#runs-body tr")).to_have_count(1)
    await expect(page.locator("#runs-body tr")).to_contain_text("drained")
    await expect(page.locator("#runs-note")).to_be_hidden()
    await expect(page.locator("#stat-due")).to_have_text("0")
    # The chart counts the two syncs with the hour's other finished jobs.
    totals = {**HISTORY_TOTALS, "succeeded": HISTORY_TOTALS["succeeded"] + 2}
    await expect(page.locator("#chart-desc")).to_have_text(
        chart_summary(**totals, backlog=r"0, .*")
    )

    # The picture in the README, when asked for: no hover or focus state left over from the
    # clicks above.
    if TAKE_SCREENSHOT:
        await page.mouse.move(0, 0)
        await page.evaluate("document.activeElement.blur()")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=True)


@needs_browser
async def test_queue_chart_draws_the_last_hour(service, db, open_page):
    await seed(service, leads=1)
    await add_history(db)
    page = await signed_in(open_page, service)

    # An image with a name and a description in words, which say what it shows.
    chart = page.locator("#chart-svg")
    await expect(chart).to_have_attribute("role", "img")
    await expect(chart).to_have_accessible_name(re.compile("^Jobs finished per minute"))
    summary = chart_summary(**HISTORY_TOTALS, backlog=f"0, at most {WAITED}")
    await expect(chart).to_have_accessible_description(summary)

    # One bar per minute and outcome that had any, as tall as its count, where the database
    # says those jobs finished.
    minute_of = (
        "SELECT to_char(date_trunc('minute', finished_at) AT TIME ZONE 'UTC',"
        " 'YYYY-MM-DD\"T\"HH24:MI') AS minute, status, count(*)::int AS n FROM jobs"
        " WHERE finished_at IS NOT NULL GROUP BY 1, 2"
    )
    want = {(r["minute"], r["status"]): r["n"] for r in await db.fetch(minute_of)}
    bars = page.locator("#chart-svg rect.bar")
    await expect(bars).to_have_count(len(want))
    drawn = await bars.evaluate_all(
        "(bars) => bars.map((b) => [b.dataset.minute, b.getAttribute('class'),"
        " Number(b.dataset.count), b.getBBox().height])"
    )
    assert {(m[:16], c.removeprefix("bar bar-")): n for m, c, n, _ in drawn} == want
    height = {n: h for _, _, n, h in drawn}
    assert height[4] > height[3] > height[2] > height[1] > 0
    # The backlog line has a point for each of the 60 minutes, and every minute a hover title.
    points = await page.locator("#chart-svg .backlog-line").get_attribute("points")
    assert points is not None and len(points.split()) == 60
    await expect(page.locator("#chart-svg .hit title")).to_have_count(60)
    await expect(page.locator("#chart-svg .chart-labels text", has_text="now")).to_have_count(1)
    # Drawn with DOM calls and the stylesheet's classes: no inline style anywhere in it.
    assert await page.locator("#queue-chart [style]").count() == 0

    # It refreshes with the rest of the panel: a job that fails now is drawn without a reload.
    now = await db.fetchval("SELECT now()")
    await add_jobs(db, 1, "lead_scoring", "failed", "late", now, now, now)
    totals = {**HISTORY_TOTALS, "failed": HISTORY_TOTALS["failed"] + 1}
    await expect(chart).to_have_accessible_description(chart_summary(**totals, backlog=r"0, .*"))
    await expect(bars).to_have_count(len(want) + 1)


@needs_browser
@needs_client_keys
async def test_a_client_key_sees_its_own_client_alone(service, db, open_page):
    for client in ("acme", "globex"):
        await seed(service, client, leads=2)
        sync = {"client_id": client, "lead_id": f"{client}-lead-0"}
        assert (await service.api.post("/sync", json=sync)).status_code == 202
    await service.run_jobs()
    # Two jobs of globex's still due, and a past hour of acme's.
    await service.api.post("/sync", json={"client_id": "globex"})
    await service.api.post("/sync", json={"client_id": "globex", "lead_id": "globex-lead-1"})
    await add_history(db)
    response = await service.api.post("/api/clients/acme/keys")
    assert response.status_code == 201, response.text
    key = response.json()["key"]
    assert key.startswith("hk_")

    page = await open_page()
    answers: list[tuple[int, str]] = []
    page.on("response", lambda r: answers.append((r.status, urlsplit(r.url).path)))
    await page.goto(f"{service.base_url}/?token={key}")
    await expect(page.locator("#app")).to_be_visible()
    assert key not in page.url
    await expect(page.locator("#signed-in-as")).to_have_text("Client key: acme")

    # Its client, its leads and its jobs: nothing of globex's.
    assert await page.locator("#client-select option").evaluate_all(
        "(options) => options.map((o) => o.value)"
    ) == ["acme"]
    await expect(page.locator("#lead-select option")).to_have_count(3)
    acme_jobs = {
        str(r["id"]) for r in await db.fetch("SELECT id FROM jobs WHERE client_id = 'acme'")
    }
    rows = page.locator("#jobs-body tr")
    await expect(rows).to_have_count(len(acme_jobs))
    shown = await rows.evaluate_all("(rows) => rows.map((row) => row.dataset.jobId)")
    assert set(shown) == acme_jobs
    # The queue panel counts acme's jobs only: globex's due syncs are not in it, and there
    # are no runner runs (they drain every client's jobs), which the panel says.
    await expect(page.locator("#stat-due")).to_have_text("0")
    totals = {**HISTORY_TOTALS, "succeeded": HISTORY_TOTALS["succeeded"] + 2}
    await expect(page.locator("#chart-desc")).to_have_text(
        chart_summary(**totals, backlog=r"0, .*")
    )
    await expect(page.locator("#counts-body tr")).to_have_count(3)
    await expect(page.locator("#counts-body")).not_to_contain_text("sync_all")
    await expect(page.locator("#runs-panel")).to_be_hidden()
    await expect(page.locator("#runs-note")).to_be_visible()
    assert "globex" not in await page.locator("body").inner_text()

    # And it acts for its client: a Sync of all acme's leads.
    await page.click("#sync-button")
    await expect(page.locator("#sync-message")).to_have_text("Started 1 job.")
    sync_all = await db.fetchval(
        "SELECT client_id FROM jobs WHERE type = 'sync_all' ORDER BY id DESC LIMIT 1"
    )
    assert sync_all == "acme"

    # Nothing it asked for was refused or needs the API token (no /metrics, no admin route).
    await expect(page.locator("#app-error")).to_be_hidden()
    assert [a for a in answers if a[0] >= 400] == []
    assert all(
        path == "/" or path.startswith(("/static/", "/api/", "/sync")) for _, path in answers
    )
    assert not any(path.startswith(("/metrics", "/api/clients/")) for _, path in answers)


@needs_browser
async def test_failed_job_retry_and_cancel(service, db, sandbox, open_page):
    state, _ = sandbox
    await seed(service, leads=1)
    only_sms = {"client_id": "acme", "lead_id": "acme-lead-0", "channels": ["sms"]}
    state.add_fault("sms", "error")
    failed_id = (await service.api.post("/sync", json=only_sms)).json()["jobs"][0]["id"]
    # One attempt only, so the provider's error fails the job in a single runner pass.
    await db.execute("UPDATE jobs SET max_attempts = 1 WHERE id = $1", int(failed_id))
    await service.run_jobs()
    failed = await db.fetchrow("SELECT status, last_error FROM jobs WHERE id = $1", int(failed_id))
    assert failed["status"] == "failed" and failed["last_error"]
    state.clear_faults()

    page = await signed_in(open_page, service)
    failed_row = page.locator(f'#jobs-body tr[data-job-id="{failed_id}"]')
    await expect(failed_row.locator(".status")).to_have_text("failed")
    await expect(failed_row.locator(".last-error")).to_have_text(failed["last_error"])
    await expect(page.locator("#stat-failed")).to_have_text("1")

    # A new sync of the same lead and channel is active: Retry answers 409, shown in words.
    twin_id = (await service.api.post("/sync", json=only_sms)).json()["jobs"][0]["id"]
    twin_row = page.locator(f'#jobs-body tr[data-job-id="{twin_id}"]')
    await expect(twin_row.locator(".status")).to_have_text("pending")
    await failed_row.get_by_role("button", name=f"Retry job {failed_id}").click()
    message = page.locator("#jobs-message")
    await expect(message).to_contain_text(f"Job {failed_id} was not retried")
    await expect(message).to_contain_text("already pending or running")
    await expect(message).to_contain_text(f"The active one is job {twin_id}.")
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", int(failed_id)) == "failed"

    # Cancel the pending twin from the page (by keyboard); then the retry goes through.
    await twin_row.get_by_role("button", name=f"Cancel job {twin_id}").focus()
    await page.keyboard.press("Enter")
    await expect(twin_row.locator(".status")).to_have_text("cancelled")
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", int(twin_id)) == "cancelled"
    await failed_row.get_by_role("button", name=f"Retry job {failed_id}").click()
    await expect(failed_row.locator(".status")).to_have_text("pending")
    await expect(message).to_have_text(f"Job {failed_id} is pending again (status: pending).")
    assert await db.fetchval("SELECT status FROM jobs WHERE id = $1", int(failed_id)) == "pending"
    await expect(failed_row.get_by_role("button", name=f"Cancel job {failed_id}")).to_be_visible()

    # The status filter asks the API for that status only.
    await page.select_option("#status-filter", "cancelled")
    await expect(page.locator("#jobs-body tr")).to_have_count(1)
    await expect(page.locator("#jobs-body tr")).to_have_attribute("data-job-id", twin_id)
    await page.select_option("#status-filter", "")

    # Message text is shown as text: markup in it is neither rendered nor run.
    markup = '<img src=x onerror="window.injected = 1"><b>bold</b>'
    await db.execute(
        "INSERT INTO messages"
        " (client_id, lead_id, channel, direction, text, provider_message_id, sent_at)"
        " VALUES ('acme', 'acme-lead-0', 'sms', 'inbound', $1, 'sms-markup-1', now())",
        markup,
    )
    await page.get_by_role("button", name="Show lead acme-lead-0").first.click()
    text = page.locator("#messages-body .message-text")
    await expect(text).to_have_text([markup])
    assert await page.locator("#messages-body img, #messages-body b").count() == 0
    assert await page.evaluate("window.injected") is None


@needs_browser
async def test_sign_in_form_and_wrong_token(service, open_page):
    await seed(service, leads=1)
    page = await open_page()
    await page.goto(f"{service.base_url}/")
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#app")).to_be_hidden()
    await expect(page.get_by_label("API token")).to_be_focused()

    # The API's own sentence for a bad token, shown as is; nothing is kept for the tab.
    expected = assert_error(
        await service.anon.get("/api/clients", headers={"Authorization": "Bearer wrong"}),
        401,
        "unauthorized",
    )["detail"]
    await page.keyboard.type("wrong-token-0123")
    # The keyboard reaches the button, and the focused control shows it.
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Sign in")).to_be_focused()
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"
    await page.keyboard.press("Enter")
    await expect(page.locator("#signin-error")).to_have_text(expected)
    await expect(page.locator("#app")).to_be_hidden()
    assert await page.evaluate("sessionStorage.length") == 0

    # The right token, by keyboard again, opens the dashboard, which survives a reload.
    await page.get_by_label("API token").fill(API_TOKEN)
    await page.keyboard.press("Enter")
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#client-select")).to_have_value("acme")
    # No job and no run yet: each empty table says so in one cell across all its columns.
    await expect(page.locator("#counts-body")).to_have_text("No jobs yet.")
    await expect(page.locator("#runs-body")).to_have_text("The runner has not run yet.")
    await expect(page.locator("#jobs-body")).to_have_text("No jobs match these filters.")
    spans = await page.evaluate(
        "[...document.querySelectorAll('tr.empty td')].map((td) =>"
        " [td.closest('table').id, td.colSpan, td.closest('table').tHead.rows[0].cells.length])"
    )
    assert sorted(table for table, _, _ in spans) == ["counts-table", "jobs-table", "runs-table"]
    assert all(span == columns for _, span, columns in spans), spans
    # The filters and the counts' columns list what the server knows, not a copy in the script.
    statuses = list(get_args(JobStatus))
    assert await page.locator("#status-filter option").evaluate_all(
        "(options) => options.map((o) => o.value)"
    ) == ["", *statuses]
    assert await page.locator("#type-filter option").evaluate_all(
        "(options) => options.map((o) => o.value)"
    ) == ["", *registry.types()]
    await expect(page.locator("#counts-table thead th")).to_have_text(["Type", *statuses, "total"])
    await page.reload()
    await expect(page.locator("#app")).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#signin")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0

    # A wrong token in the link gets the same answer, and leaves the address bar too.
    await page.goto(f"{service.base_url}/?token=wrong-token-0123")
    await expect(page.locator("#signin-error")).to_have_text(expected)
    assert "token" not in page.url


@needs_browser
async def test_phone_layout_has_no_horizontal_overflow(service, db, open_page):
    await seed(service, leads=1)
    await db.execute(
        "INSERT INTO jobs (type, status, dedupe_key, dedupe_scope, lead_id, client_id,"
        " attempts, last_error, finished_at)"
        " VALUES ('conversation_sync', 'failed', 'acme-lead-0:sms', 'active', 'acme-lead-0',"
        " 'acme', 5, $1, now())",
        "sms provider answered HTTP 502 " + "x" * 300,
    )
    page = await signed_in(open_page, service, PHONE)
    await page.select_option("#lead-select", "acme-lead-0")
    await page.click("#sync-button")
    await expect(page.locator("#sync-jobs li")).to_have_count(2)
    await service.run_jobs()
    await expect(page.locator("#sync-jobs li .status")).to_have_text(["succeeded"] * 2)
    await expect(page.locator("#messages-body tr").first).to_be_visible()
    await expect(page.locator("#runs-body tr")).to_have_count(1)

    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    # Tables become labelled cards instead of hiding columns in a sideways scroll.
    scrolling = await page.evaluate(
        "[...document.querySelectorAll('.table-scroll')]"
        ".filter((box) => box.scrollWidth > box.clientWidth).length"
    )
    assert scrolling == 0
    await expect(page.locator("#jobs-body .last-error")).to_contain_text("HTTP 502")
    # Every control is still reachable: the Sync button fits on the screen.
    box = await page.locator("#sync-button").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]


@needs_browser
async def test_each_clients_provider_kinds_are_shown(service, open_page):
    await seed(service, leads=1)
    await seed(service, client_id="beta", leads=0)
    account = {
        "kind": "resend",
        "settings": {"key": "re_0123456789abcdef", "from_address": "hello@acme.example"},
    }
    response = await service.api.put("/api/clients/acme/providers/email", json=account)
    assert response.status_code == 200, response.text
    page = await signed_in(open_page, service)
    await page.select_option("#client-select", "acme")
    await expect(page.locator("#client-providers")).to_have_text(
        "SMS: generic (global) · Email: resend (own account) · AI: generic (global)"
    )
    await page.select_option("#client-select", "beta")
    await expect(page.locator("#client-providers")).to_have_text(
        "SMS: generic (global) · Email: generic (global) · AI: generic (global)"
    )
