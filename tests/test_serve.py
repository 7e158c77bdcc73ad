"""The README's local run, `./scripts/serve`, as a user starts it: it prints the dashboard URL
with its token, runs what is enqueued by itself (its own worker and cron), and stops cleanly
on SIGINT or SIGTERM. Each run gets a free port and a data directory of the test's own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.settings import Settings
from tests.conftest import ROOT
from tests.support import eventually, free_port

# The first run may set up the environment (scripts/bootstrap local: a pip install).
START_S = 300
STOP_S = 15
DASHBOARD = re.compile(r"dashboard:\s+(http://\S+)/\?token=(\S+)")


def clean_env() -> dict[str, str]:
    """The test's environment without any handoff setting: the local defaults apply."""
    names = {name.upper() for name in Settings.model_fields}
    return {k: v for k, v in os.environ.items() if k.upper() not in names}


class Serve:
    """One `scripts/serve` process, its output kept in files."""

    def __init__(self, data_dir: Path, logs: Path, args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        n = len(list(logs.glob("*.err")))
        self.out, self.err = logs / f"{n}.out", logs / f"{n}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                ["scripts/serve", "--port", str(self.port), "--data-dir", str(data_dir), *args],
                cwd=ROOT,
                env=clean_env(),
                stdout=out,
                stderr=err,
            )

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    async def started(self) -> tuple[str, str]:
        """Wait for the banner and for the server to answer; the dashboard's base URL and the
        API token it printed."""
        deadline = time.monotonic() + START_S
        while not (found := DASHBOARD.search(self.stderr())):
            assert self.process.poll() is None, f"scripts/serve exited:\n{self.stderr()[-3000:]}"
            assert time.monotonic() < deadline, "scripts/serve printed no dashboard URL"
            await asyncio.sleep(0.1)
        base = found.group(1)

        async def answers() -> bool:
            assert self.process.poll() is None, f"scripts/serve exited:\n{self.stderr()[-3000:]}"
            with contextlib.suppress(httpx.TransportError):
                async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                    return (await client.get("/healthz")).status_code == 200
            return False

        # The banner comes as the server starts; it listens a moment later.
        await eventually(answers, 30, step_s=0.1, what="the printed URL answered")
        return base, found.group(2)

    async def stop(self, signum: int) -> tuple[int, float]:
        """Send `signum`; the exit status and how long the process took to exit."""
        sent = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = await asyncio.to_thread(self.process.wait, STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"scripts/serve did not stop within {STOP_S} s") from None
        return code, time.monotonic() - sent


def postmaster_pid(data_dir: Path) -> int | None:
    """The embedded PostgreSQL's pid while it runs, from its pid file."""
    pid_file = data_dir / "pg" / "postmaster.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        return int(pid_file.read_text().splitlines()[0])
    return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Iterator[Path]:
    """One data directory for the module's runs (the database is created once); afterwards
    no PostgreSQL of ours is left running, whatever the runs did."""
    path = tmp_path_factory.mktemp("serve-data")
    yield path
    pid = postmaster_pid(path)
    if pid is not None and alive(pid):
        os.kill(pid, signal.SIGINT)  # fast shutdown
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.1)


@pytest.fixture
def serve(data_dir, tmp_path) -> Iterator:
    runs: list[Serve] = []

    def start(*args: str) -> Serve:
        run = Serve(data_dir, tmp_path, args)
        runs.append(run)
        return run

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(10)


async def test_serve_prints_the_dashboard_url_and_runs_a_sync_by_itself(serve, data_dir):
    run = serve()
    base, token = await run.started()
    assert base == f"http://127.0.0.1:{run.port}"
    assert postmaster_pid(data_dir) is not None, "the embedded database is under --data-dir"
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as api:
        page = await api.get(f"/?token={token}")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        response = await api.post("/sync", json={"client_id": "demo", "lead_id": "demo-lead-1"})
        assert response.status_code == 202, response.text
        jobs = response.json()["jobs"]
        assert {job["type"] for job in jobs} == {"conversation_sync"} and len(jobs) == 2

        async def succeeded() -> bool:
            answers = [await api.get(f"/api/jobs/{job['id']}") for job in jobs]
            return all(a.json()["status"] == "succeeded" for a in answers)

        # Nobody calls the runner here: the local run's own worker takes the jobs.
        await eventually(succeeded, 15, step_s=0.1, what="the local worker ran the sync")
        messages = (await api.get("/api/leads/demo-lead-1/messages")).json()["messages"]
        assert {m["channel"] for m in messages} == {"sms", "email"}
    await run.stop(signal.SIGINT)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_serve_stops_cleanly_on_a_signal(serve, data_dir, signum):
    run = serve()
    await run.started()
    postgres = postmaster_pid(data_dir)
    assert postgres is not None and alive(postgres)

    code, took = await run.stop(signum)

    assert (code, "Traceback" in run.stderr()) == (0, False), run.stderr()[-3000:]
    assert took < STOP_S
    assert '"msg": "worker stopped"' in run.stdout(), "the local worker stopped by itself"

    # The embedded PostgreSQL went down with it.
    async def postgres_stopped() -> bool:
        return not alive(postgres)

    await eventually(postgres_stopped, 5, 0.1, "the embedded PostgreSQL stopping with it")


async def test_serve_runs_email_through_the_resend_adapter_on_request(serve):
    run = serve("--email", "resend")
    base, token = await run.started()
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as api:
        [demo] = (await api.get("/api/clients")).json()["clients"]
        assert demo["providers"]["email"] == {"kind": "resend", "account": "global"}
        body = {"client_id": "demo", "lead_id": "demo-lead-3", "channels": ["email"]}
        response = await api.post("/sync", json=body)
        assert response.status_code == 202, response.text
        [job] = response.json()["jobs"]

        async def succeeded() -> bool:
            return (await api.get(f"/api/jobs/{job['id']}")).json()["status"] == "succeeded"

        await eventually(succeeded, 15, step_s=0.1, what="the Resend sync ran")
        messages = (await api.get("/api/leads/demo-lead-3/messages")).json()["messages"]
        # The sandbox's Resend inbox holds the demo leads' emails to the demo client.
        assert messages and {(m["channel"], m["direction"]) for m in messages} == {
            ("email", "inbound")
        }
    await run.stop(signal.SIGINT)
