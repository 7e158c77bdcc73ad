"""Telemetry as the contract states it: one JSON line per finished attempt with its top-level
fields, one per runner invocation with its summary, and a worker's `invocation_id` on every
line the worker process writes, its warnings included."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import app.queue.runner
import app.worker
from app.queue.enqueue import enqueue
from tests.support import eventually, seed

# The contract's per-attempt fields and their JSON types.
ATTEMPT_FIELDS = {
    "job_id": str,
    "type": str,
    "outcome": str,
    "attempt": int,
    "duration_ms": int,
    "lead_id": str,
    "invocation_id": str,
}
SUMMARY_FIELDS = (
    "processed",
    "succeeded",
    "retried",
    "failed",
    "released_stale",
    "remaining_due",
    "duration_ms",
    "stop_reason",
)


def attempt_lines(records: list[dict], job_id: str | None = None) -> list[dict]:
    return [
        r
        for r in records
        if r.get("msg") == "job attempt finished" and job_id in (None, r.get("job_id"))
    ]


def assert_attempt_line(line: dict) -> None:
    """The contract's fields, top-level, each of its type (a bool is no integer here)."""
    for name, kind in ATTEMPT_FIELDS.items():
        assert name in line, (name, line)
        assert isinstance(line[name], kind) and not isinstance(line[name], bool), (name, line)
    assert line["attempt"] >= 1 and line["duration_ms"] >= 0, line


async def test_each_attempt_logs_its_job_type_outcome_attempt_duration_lead_and_runner(
    service, sandbox, db, logs
):
    state, _ = sandbox
    [lead] = await seed(service, leads=1)
    response = await service.api.post(
        "/sync", json={"client_id": "acme", "lead_id": lead, "channels": ["sms"]}
    )
    [job] = response.json()["jobs"]
    state.add_fault("sms", "error", times=1)

    started = time.monotonic()
    first = await service.run_jobs()
    first_took_ms = (time.monotonic() - started) * 1000
    await db.execute("UPDATE jobs SET run_at = now() WHERE id = $1", int(job["id"]))
    second = await service.run_jobs()

    lines = attempt_lines(logs.records(), job["id"])
    assert len(lines) == 2, lines
    for line in lines:
        assert_attempt_line(line)
        assert (line["job_id"], line["type"], line["lead_id"]) == (
            job["id"],
            "conversation_sync",
            lead,
        )
    retried, succeeded = lines
    # The attempt counts from 1, and each line names the invocation that ran it.
    assert (retried["outcome"], retried["attempt"]) == ("retried", 1)
    assert (succeeded["outcome"], succeeded["attempt"]) == ("succeeded", 2)
    assert retried["invocation_id"] == first["invocation_id"]
    assert succeeded["invocation_id"] == second["invocation_id"]
    assert first["invocation_id"] != second["invocation_id"]
    assert retried["duration_ms"] <= first_took_ms
    assert retried["level"] == "info" and succeeded["level"] == "info"


async def test_each_runner_invocation_logs_its_id_and_summary_as_answered_and_stored(
    service, sandbox, logs
):
    state, _ = sandbox
    leads = await seed(service, leads=2)
    for lead in leads:
        await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    # The SMS syncs hang past the budget (not past the provider timeout, 5 s): a summary
    # with every kind of count in it.
    state.add_fault("sms", "hang", hang_s=4)
    summary = await service.run_jobs(budget_s=2)
    assert summary["stop_reason"] == "budget" and summary["released"] == 2

    lines = [r for r in logs.records() if r.get("msg", "").startswith("runner finished")]
    assert len(lines) == 1, lines
    [line] = lines
    assert line["invocation_id"] == summary["invocation_id"]
    for name in SUMMARY_FIELDS:
        assert line[name] == summary[name], (name, line, summary)
    assert isinstance(line["duration_ms"], int)
    # The attempts of this invocation name it too.
    ran = attempt_lines(logs.records())
    assert len(ran) == 4 and {r["invocation_id"] for r in ran} == {summary["invocation_id"]}
    # The summary kept for the dashboard is the one the runner answered.
    [stored] = (await service.api.get("/api/jobs/overview")).json()["runs"]
    for name in SUMMARY_FIELDS:
        assert stored[name] == summary[name], (name, stored, summary)


async def test_a_runner_invocation_id_made_of_digits_is_not_masked_as_a_phone_number(
    service, logs, monkeypatch
):
    """Log lines mask phone-shaped text; an invocation id whose random part came out all
    digits (one in about 280) must still name its invocation."""
    real = uuid.uuid4
    monkeypatch.setattr(
        app.queue.runner.uuid, "uuid4", lambda: uuid.UUID("440215555277" + real().hex[12:])
    )
    [lead] = await seed(service, leads=1)
    await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    summary = await service.run_jobs()
    assert "440215555277" in summary["invocation_id"]
    named = {
        r["invocation_id"]
        for r in logs.records()
        if r.get("msg") in ("job attempt finished", "runner finished")
    }
    assert named == {summary["invocation_id"]}


async def test_a_worker_invocation_id_made_of_digits_is_not_masked_as_a_phone_number(
    make_settings, db, logs, monkeypatch
):
    real = uuid.uuid4
    monkeypatch.setattr(
        app.worker.uuid, "uuid4", lambda: uuid.UUID("440215555277" + real().hex[12:])
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(
        app.worker.run_worker(make_settings(worker_poll_interval_s=0.1), stop)
    )
    try:
        job = await enqueue(
            db, "prune_jobs", "probe", payload={"keep_days": 7, "keep_failed_days": 30}
        )

        async def done() -> bool:
            return await db.fetchval("SELECT status FROM jobs WHERE id = $1", int(job.id)) == (
                "succeeded"
            )

        await eventually(done, 10)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 20)
    owner = await db.fetchval("SELECT locked_by FROM jobs WHERE id = $1", int(job.id))
    assert "440215555277" in owner
    lines = [
        r
        for r in logs.records()
        if r.get("msg") in ("worker started", "job attempt finished", "worker stopped")
    ]
    assert len(lines) == 3 and {r["invocation_id"] for r in lines} == {owner}


async def test_job_and_lead_ids_with_long_digit_runs_are_logged_as_they_are(service, db, logs):
    """Job ids are a growing integer: past 100 million they have nine digits, and lead ids
    often carry dates and numbers. The attempt line still names the job and its lead."""
    await db.execute("SELECT setval(pg_get_serial_sequence('jobs', 'id'), 4402155552)")
    await seed(service, leads=0)
    lead = "lead-2024-000123456"
    body = {"client_id": "acme", "leads": [{"id": lead, "sms_contact_id": "c-1"}]}
    assert (await service.api.post("/api/leads", json=body)).status_code == 200
    response = await service.api.post("/sync", json={"client_id": "acme", "lead_id": lead})
    [job] = response.json()["jobs"]
    assert len(job["id"]) == 10
    await service.run_jobs()
    [line] = attempt_lines(logs.records())
    assert (line["job_id"], line["lead_id"]) == (job["id"], lead)


class Proxy:
    """A TCP proxy in front of Postgres: `down` refuses and drops connections, and a
    connection whose client sends `drop_on` is dropped there (what a worker sees of a
    database that goes away mid-statement)."""

    def __init__(self, database_url: str, drop_on: bytes) -> None:
        parts = urlsplit(database_url)
        # The server's address: a host and port, or (as the embedded one gives it) a socket
        # directory in the `host` query parameter.
        socket_dir = dict(parse_qsl(parts.query)).get("host", "")
        port = parts.port or 5432
        self.socket = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir.startswith("/") else None
        self.target = (parts.hostname or "127.0.0.1", port)
        self.drop_on = drop_on
        self.down = False
        self.dropped = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by this proxy's."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def set_down(self, down: bool) -> None:
        self.down = down
        if down:
            for writer in list(self.writers):
                writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        try:
            if self.socket:
                up_reader, up_writer = await asyncio.open_unix_connection(self.socket)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src, dst, inspect: bool) -> None:
            try:
                while data := await src.read(65536):
                    if inspect and self.drop_on in data:
                        self.dropped += 1
                        break
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                for end in (writer, up_writer):
                    end.close()
                    self.writers.discard(end)

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    async def close(self) -> None:
        self.set_down(True)
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)


async def test_every_line_of_a_worker_process_names_its_invocation(
    service, start_worker, database_url, db, process_logs
):
    """Start-up with the database unreachable (claim, LISTEN and pruning fail), jobs run,
    every NOTIFY the worker sends dropped mid-statement, then SIGTERM: each line, warnings
    included, carries the worker's own invocation_id."""
    proxy = await Proxy(database_url, b"pg_notify").start()
    try:
        proxy.set_down(True)
        worker = start_worker(
            database_url=proxy.url(database_url),
            worker_poll_interval_s=0.2,
        )

        def messages() -> set[str]:
            return {r.get("msg") for r in process_logs.records("worker")}

        async def complained() -> bool:
            return {"claim failed", "could not schedule pruning"} <= messages()

        async def notify_failed() -> bool:
            return "could not notify workers" in messages()

        await eventually(complained, 20, what="the worker warned of the unreachable database")
        proxy.set_down(False)
        await seed(service, leads=2)
        # A sync_all run by the worker enqueues the per-lead syncs: the worker's own notifier
        # then sends a NOTIFY, which the proxy drops.
        await service.api.post("/sync", json={"client_id": "acme"})

        async def done() -> bool:
            return await db.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'") == 5

        await eventually(done, 20, what="the worker ran sync_all and the four syncs")
        await eventually(notify_failed, 10, what="the worker's notifier warned")
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 20) == 0
    finally:
        await proxy.close()

    assert proxy.dropped >= 1
    records = process_logs.records("worker")
    [started] = [r for r in records if r.get("msg") == "worker started"]
    worker_id = started["invocation_id"]
    assert worker_id.startswith("worker-")
    unnamed = [r for r in records if r.get("invocation_id") != worker_id]
    assert unnamed == [], unnamed[:5]
    expected = {
        "worker started",
        "worker stopped",
        "claim failed",
        "could not schedule pruning",
        "cannot listen for notifications; polling",
        "could not notify workers",
        "job attempt finished",
    }
    assert expected <= {r["msg"] for r in records}
    ran = attempt_lines(records)
    assert len(ran) == 5
    for line in ran:
        if line["type"] == "sync_all":
            # A job for no lead: the field is there, null.
            assert "lead_id" in line and line["lead_id"] is None
            line = {**line, "lead_id": "-"}
        assert_attempt_line(line)
        assert line["outcome"] == "succeeded" and line["attempt"] == 1
    owners = await db.fetch("SELECT id, locked_by FROM jobs")
    assert {str(r["id"]) for r in owners} == {r["job_id"] for r in ran}
    assert {r["locked_by"] for r in owners} == {worker_id}
    # Nothing but JSON lines: no traceback or warning text on stderr.
    assert process_logs.stderr("worker") == ""
