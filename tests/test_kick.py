"""Runner kicks, end to end: `uvicorn app.main:app` alone (no worker, no cron) whose
RUNNER_KICK_URL is its own runner route starts jobs within a second of the 202; a burst never
runs more than RUNNER_KICK_MAX kicked runners at once and runs every job once; a kick URL that
refuses or hangs costs the requests nothing and the cron runner drains everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime

import httpx
import pytest
from pydantic import ValidationError

from app.background import Background
from app.kick import KICK_HEADER, KICK_TIMEOUT_S, RUNNER_PATH, kick_url, loggable
from app.settings import Settings, describe_error
from tests.support import (
    CRON_SECRET,
    Service,
    assert_error,
    eventually,
    free_port,
    gather_limited,
    seed,
    spawn,
    wait_until_serving,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ProcessStarter = Callable[..., Awaitable[Service]]


@pytest.fixture
async def start_kicking(make_settings, process_logs) -> AsyncIterator[ProcessStarter]:
    """`uvicorn app.main:app` in a process of its own; `kick="self"` points RUNNER_KICK_URL at
    its own runner route, any other string is the URL itself, None leaves it unset."""
    running: list[tuple[object, Service]] = []

    async def start(kick: str | None = "self", **overrides: object) -> Service:
        port = free_port()
        if kick == "self":
            kick = f"http://127.0.0.1:{port}{RUNNER_PATH}"
        settings = make_settings(runner_kick_url=kick, **overrides)
        process = spawn(
            ["-m", "uvicorn", "app.main:app", "--port", str(port)], settings, process_logs, "server"
        )
        service = Service(f"http://127.0.0.1:{port}")
        running.append((process, service))
        await wait_until_serving(service, process, lambda: process_logs.stderr()[-2000:])
        return service

    yield start
    for process, service in running:
        await service.aclose()
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
async def sandbox_process(process_logs) -> AsyncIterator[str]:
    """The sandbox providers in a process of their own (no key: any bearer token passes), so
    under load they do not share the tests' interpreter; yields their base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["-m", "uvicorn", "app.sandbox:create_sandbox_app", "--factory", "--port", str(port)]
    process = spawn(args, Settings(_env_file=None), process_logs, "sandbox")
    async with httpx.AsyncClient() as client:

        async def up() -> bool:
            with contextlib.suppress(httpx.TransportError):
                return (await client.get(f"{base}/sms/contacts/x/messages")).status_code == 200
            return False

        await eventually(up, 30, what="the sandbox process answers")
    yield base
    process.kill()
    process.wait(timeout=10)


async def sync(service: Service, lead_id: str, **body: object) -> tuple[float, list[str]]:
    """POST /sync for one lead: when the 202 arrived (epoch seconds) and the jobs' ids."""
    body = {"client_id": "acme", "lead_id": lead_id, **body}
    response = await service.api.post("/sync", json=body)
    arrived = time.time()
    assert response.status_code == 202, response.text
    return arrived, [job["id"] for job in response.json()["jobs"]]


async def all_succeeded(db, count: int) -> bool:
    done = await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
    return done == count


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of intervals open at one instant (an end before a start at a tie)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = current = 0
    for _, step in events:
        current += step
        most = max(most, current)
    return most


def metric(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_kick_starts_each_sync_within_a_second(start_kicking, db):
    service = await start_kicking()
    leads = await seed(service, leads=50)
    answered: dict[str, float] = {}
    for lead in leads:  # one at a time, as people press Sync
        arrived, ids = await sync(service, lead)
        answered.update(dict.fromkeys(ids, arrived))
    await eventually(lambda: all_succeeded(db, 100), 60, what="every job ran, no cron")
    rows = await db.fetch("SELECT id, started_at, attempts FROM jobs")
    assert {r["attempts"] for r in rows} == {1}
    # Per request, the later of its two jobs: from the 202 to that job's start.
    waits: dict[float, float] = {}
    for r in rows:
        arrived = answered[str(r["id"])]
        waits[arrived] = max(waits.get(arrived, -1e9), r["started_at"].timestamp() - arrived)
    ordered = sorted(waits.values())
    p50, p99 = statistics.median(ordered), ordered[int(0.99 * (len(ordered) - 1))]
    assert p50 <= 1.0 and p99 <= 3.0, (p50, p99)
    # A runner records its summary, then lets its slot go.
    await eventually(lambda: _no_kick_slot(db), 10, what="every slot let go")
    kicked = await db.fetchval("SELECT count(*) FROM runner_invocations")
    assert 1 <= kicked <= 100


async def test_a_burst_never_runs_more_than_runner_kick_max_runners(
    start_kicking, sandbox_process, db
):
    providers = {"sms_provider_url": f"{sandbox_process}/sms"}
    service = await start_kicking(runner_kick_max=4, **providers)
    leads = await seed(service, leads=1000)
    # One job per request (its SMS conversation), to keep the drain short.
    await gather_limited(32, [sync(service, lead, channels=["sms"]) for lead in leads])
    await eventually(lambda: all_succeeded(db, 1000), 180, what="every job ran, no cron")
    assert await db.fetchval("SELECT count(*) FROM jobs WHERE attempts <> 1") == 0
    # A runner records its summary, then lets its slot go.
    await eventually(lambda: _no_kick_slot(db), 10, what="every slot let go")
    runs = await db.fetch("SELECT started_at, finished_at, summary FROM runner_invocations")
    intervals = [(r["started_at"], r["finished_at"]) for r in runs]
    assert 1 <= most_at_once(intervals) <= 4, intervals
    # Each job ran in exactly one invocation.
    assert sum(json.loads(r["summary"])["succeeded"] for r in runs) == 1000
    assert len(runs) < 1000


async def _no_kick_slot(db) -> bool:
    return await db.fetchval("SELECT count(*) FROM runner_kicks") == 0


@contextlib.asynccontextmanager
async def hanging_server() -> AsyncIterator[str]:
    """An HTTP address that accepts connections and reads requests but never answers."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}{RUNNER_PATH}?token=kick-query-secret-0123"
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_a_refused_or_hung_kick_costs_requests_nothing_and_cron_drains(
    start_kicking, db, process_logs
):
    refused_url = f"http://127.0.0.1:{free_port()}{RUNNER_PATH}"
    async with hanging_server() as hung_url:
        kicks = {"none": None, "refused": refused_url, "hung": hung_url}
        started = await asyncio.gather(*(start_kicking(kick=url) for url in kicks.values()))
        services = dict(zip(kicks, started, strict=True))
        leads = await seed(services["none"], leads=90)
        # Warm each server's pools before timing.
        for name, service in services.items():
            assert (await service.api.get("/api/jobs?limit=1")).status_code == 200, name
        timings: dict[str, list[float]] = {name: [] for name in services}
        for i in range(30):  # interleaved, so each sees the same machine
            for k, (name, service) in enumerate(services.items()):
                started = time.perf_counter()
                await sync(service, leads[3 * i + k])
                timings[name].append(time.perf_counter() - started)
        # A kick that waited on its answer would hold a /sync for the 5 s kick timeout; one
        # second is a safety bound far above a 202's milliseconds, not a speed target.
        slowest = {name: max(t) for name, t in timings.items()}
        for name in ("refused", "hung"):
            assert slowest[name] < 1.0, slowest
        assert await db.fetchval("SELECT count(*) FROM jobs WHERE status <> 'pending'") == 0

        # The failures are counted (the hung one once its timeout has passed).
        async def failures_counted() -> bool:
            refused = (await services["refused"].api.get("/metrics")).text
            hung = (await services["hung"].api.get("/metrics")).text
            return (
                metric(refused, "handoff_runner_kicks_total", outcome="error") >= 1
                and metric(hung, "handoff_runner_kicks_total", outcome="timeout") >= 1
            )

        await eventually(failures_counted, KICK_TIMEOUT_S + 10, what="kick failures counted")

    summary = await services["none"].run_jobs()
    assert summary["remaining_due"] == 0 and summary["failed"] == 0
    assert await all_succeeded(db, 180)
    warnings = [r for r in process_logs.records() if r.get("msg", "").startswith("runner kick")]
    assert {r["outcome"] for r in warnings} >= {"error", "timeout"}
    for record in warnings:
        assert "kick-query-secret" not in str(record), record
    await eventually(lambda: _no_kick_slot(db), 10, what="failed kicks gave their slots up")


async def test_a_kick_whose_slot_is_not_held_is_refused(start_kicking, db):
    service = await start_kicking()
    for token in ("not-a-token", "0b6a3b7e-8a4f-4c53-9a4e-2a1f6f1e8b11"):
        response = await service.cron.post(RUNNER_PATH, headers={KICK_HEADER: token})
        assert_error(response, 409, "kick_not_held")
    assert await db.fetchval("SELECT count(*) FROM runner_invocations") == 0
    unauthenticated = await service.anon.post(RUNNER_PATH, headers={KICK_HEADER: "x"})
    assert_error(unauthenticated, 401)


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, cron_secret=CRON_SECRET, **values)


def test_the_kick_url_defaults_to_this_deployments_runner_on_vercel():
    assert kick_url(settings()) is None
    assert kick_url(settings(runner_kick_url="http://10.0.0.1:8000/x")) == "http://10.0.0.1:8000/x"
    production = settings(
        vercel_env="production",
        vercel_url="handoff-abc123.vercel.app",
        vercel_project_production_url="handoff.example.com",
    )
    assert kick_url(production) == f"https://handoff.example.com{RUNNER_PATH}"
    preview = settings(
        vercel_env="preview",
        vercel_url="handoff-abc123.vercel.app",
        vercel_project_production_url="handoff.example.com",
    )
    assert kick_url(preview) == f"https://handoff-abc123.vercel.app{RUNNER_PATH}"
    development = settings(vercel_env="development", vercel_url="localhost:3000")
    assert kick_url(development) is None


def test_a_loggable_kick_url_has_no_credentials_or_query():
    url = "https://user:pw@host.example:8443/api/cron/background-jobs?x-vercel-protection-bypass=s"
    assert loggable(url) == "https://host.example:8443/api/cron/background-jobs"


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"runner_kick_url": "ftp://x"}, "RUNNER_KICK_URL"),
        ({"runner_kick_max": 0}, "RUNNER_KICK_MAX"),
        ({"runner_kick_max": "many"}, "RUNNER_KICK_MAX"),
        ({"runner_kick_url": "http://x", "cron_secret": None}, "RUNNER_KICK_URL"),
    ],
)
def test_invalid_kick_settings_name_the_setting(values, named):
    values = {"cron_secret": CRON_SECRET, **values}
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, **values)
    line = describe_error(raised.value)
    assert named in line and "\n" not in line, line


async def test_work_after_the_response_is_handed_to_vercels_wait_until():
    from vercel.cache.context import set_context

    handed: list[object] = []
    set_context(wait_until=handed.append)  # what Vercel's runtime does for each invocation
    try:
        background = Background(on_vercel=True)
        task = background.start(asyncio.sleep(0))
        assert handed == [task]
        await task
        elsewhere = Background(on_vercel=False)
        assert elsewhere.wait_until is None
        await elsewhere.start(asyncio.sleep(0))
        assert handed == [task]
    finally:
        set_context(wait_until=None)


async def test_a_kick_is_never_sent_without_a_url():
    background = Background(on_vercel=False)
    from app.kick import Kicker

    async with httpx.AsyncClient() as http:
        kicker = Kicker(settings(), None, http, background)  # type: ignore[arg-type]
        kicker.poke()
        assert not kicker.enabled and not background.tasks
