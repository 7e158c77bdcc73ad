"""What every benchmark family shares: databases, pgbench, timing, and the result model.

The machine these figures come from has two cores and other work on it, so no absolute number
is trusted on its own: each figure is a ratio against a peer or a floor measured in the same
round, with the systems interleaved (their order rotates from round to round) and the whole
thing repeated. `Check` holds one such per-round ratio series and its target.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT = Path(__file__).resolve().parents[1]
# An admin URL of the server to benchmark on; every database the suite uses is created (and
# dropped again) under it, so it must be allowed to CREATE DATABASE.
ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Every database the suite makes is one of these names, or starts with the first one, so a
# crashed run's leftovers can be dropped without touching anyone else's databases.
DB_PREFIX = "bench_handoff"
PEER_DBS = ("bench_procrastinate", "bench_pgqueuer")
# handoff's databases named outside DB_PREFIX: the fair claim's (bench/fair.py).
FAIR_DBS = ("bench_fair_claim",)


def ours(name: str) -> bool:
    return name.startswith(DB_PREFIX) or name in PEER_DBS or name in FAIR_DBS


def db_url(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def admin_execute(*statements: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def recreate_db(name: str) -> str:
    """A fresh, empty database for one system: each run starts from the same state."""
    assert ours(name), name
    await admin_execute(
        f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'
    )
    return db_url(name)


async def drop_db(name: str) -> None:
    assert ours(name), name
    await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def checkpoint() -> None:
    """Flush dirty pages now, so a checkpoint is less likely to land inside a measurement."""
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await admin_execute("CHECKPOINT")


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetchval(url: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def apply_handoff_schema(url: str) -> None:
    from app.migrations import upgrade_to_head

    # Alembic's env runs its own event loop, which cannot nest inside ours.
    await asyncio.to_thread(upgrade_to_head, url)


HANDOFF_TABLES = "jobs, runner_invocations, client_turns, rate_buckets"


async def reset_handoff(url: str) -> None:
    await execute(url, f"TRUNCATE {HANDOFF_TABLES} RESTART IDENTITY")


# --- load loops -------------------------------------------------------------------------------


async def closed_loop(
    workers: int, seconds: float, op: Callable[[int, int], Awaitable[Any]]
) -> float:
    """`workers` callers each issue `op(worker, i)` back to back for `seconds`; ops per second.

    Closed loop (a caller waits for its answer before the next call) is how a web app's
    request handlers use a queue: concurrency is the number of callers, not an arrival rate.
    """
    counts = [0] * workers
    deadline = time.perf_counter() + seconds

    async def caller(w: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            await op(w, i)
            i += 1
        counts[w] = i

    started = time.perf_counter()
    await asyncio.gather(*(caller(w) for w in range(workers)))
    return sum(counts) / (time.perf_counter() - started)


def rotated(items: Sequence[str], round_: int) -> list[str]:
    """The systems in a different order each round, so none always runs first (or last)."""
    k = round_ % len(items)
    return [*items[k:], *items[:k]]


# --- pgbench ----------------------------------------------------------------------------------


def pgbench_path() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True):
        return str(candidate)
    raise SystemExit("bench: pgbench not found (install postgresql-client)")


@dataclass
class PgbenchResult:
    tps: float  # transactions per second, connection time excluded
    elapsed_s: float  # wall clock of the whole pgbench process
    transactions: int


def pgbench_sync(
    url: str,
    script: str,
    *,
    clients: int,
    seconds: float | None = None,
    transactions: int | None = None,
) -> PgbenchResult:
    """Run one custom pgbench script (no built-in tables) and parse its summary."""
    parts = urlsplit(url)
    threads = min(clients, os.cpu_count() or 1)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
        path = f.name
    args = [
        pgbench_path(),
        "-n",  # no vacuum of pgbench's own tables: there are none
        "-M",
        "prepared",  # as asyncpg does: parse once, then bind and execute
        "-c",
        str(clients),
        "-j",
        str(threads),
        "-f",
        path,
        "-h",
        parts.hostname or "127.0.0.1",
        "-p",
        str(parts.port or 5432),
        "-U",
        parts.username or "postgres",
    ]
    args += ["-T", str(max(1, round(seconds)))] if seconds else ["-t", str(transactions)]
    args.append(parts.path.lstrip("/"))
    env = dict(os.environ)
    if parts.password:
        env["PGPASSWORD"] = parts.password
    started = time.perf_counter()
    try:
        out = subprocess.run(args, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    finally:
        os.unlink(path)
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip()[-500:]}")
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", out.stdout)
    done = re.search(r"number of transactions actually processed: (\d+)", out.stdout)
    if tps is None or done is None:
        raise RuntimeError(f"cannot parse pgbench output: {out.stdout[-500:]}")
    return PgbenchResult(float(tps.group(1)), elapsed, int(done.group(1)))


async def pgbench(url: str, script: str, **kwargs: Any) -> PgbenchResult:
    return await asyncio.to_thread(pgbench_sync, url, script, **kwargs)


# --- CPU accounting ---------------------------------------------------------------------------


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    try:
        values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return (0.0, 0.0)
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]  # idle + iowait
    return ((sum(values) - idle) / tick, sum(values) / tick)


def postgres_cpu_seconds() -> float:
    """CPU seconds of the local server's processes (user postgres), exited backends included
    (the postmaster's cutime/cstime hold them). 0 when the server is not on this machine."""
    try:
        import pwd

        uid = str(pwd.getpwnam("postgres").pw_uid)
    except (KeyError, ImportError):
        return 0.0
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            if f"\nUid:\t{uid}\t" not in status:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """This process and its exited children (pgbench, wrk, uvicorn, the provider)."""
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class CpuPerJob:
    """CPU spent per job during one timed section, split between the client side (this process
    and the pgbench it runs) and the PostgreSQL server: where a system's cost per job goes."""

    def __init__(self) -> None:
        self.samples: dict[str, dict[str, list[float]]] = {}

    @contextlib.contextmanager
    def measure(self, system: str, jobs: Callable[[], float]):  # noqa: ANN201
        """Time the block; `jobs()` (called after it) says how many jobs it handled."""
        own, pg = own_cpu_seconds(), postgres_cpu_seconds()
        yield
        n = jobs()
        if n > 0:
            entry = self.samples.setdefault(system, {"client_us": [], "postgres_us": []})
            entry["client_us"].append((own_cpu_seconds() - own) / n * 1e6)
            entry["postgres_us"].append((postgres_cpu_seconds() - pg) / n * 1e6)

    def as_extra(self) -> dict[str, Any]:
        return {"cpu_per_job": self.samples}


# --- results ----------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def per_round(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """a / b round by round: each ratio pairs two figures measured minutes apart at most."""
    return [x / y if y else float("inf") for x, y in zip(a, b, strict=True)]


@dataclass
class Check:
    """One target: a series of per-round values (usually ratios) and the bound they must meet."""

    name: str  # e.g. "handoff / pgqueuer"
    values: list[float]
    target: float | None  # None: reported, no target
    op: Literal[">=", "<="] = ">="
    unit: str = "×"

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.median >= self.target if self.op == ">=" else self.median <= self.target


@dataclass
class Row:
    """One line of the results table: a measure, its per-system samples and its checks."""

    id: str  # "B1"
    label: str  # what was measured, e.g. "single enqueue, concurrency 32"
    unit: str  # of the samples, e.g. "jobs/s"
    samples: dict[str, list[float]]  # system -> one value per round
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # secondary figures (p99, counts ...)
    # Variants measured in the same rounds to locate a limit (not part of any target), each
    # compared round by round with the samples named by `reference`.
    diagnostics: dict[str, list[float]] = field(default_factory=dict)
    reference: str = "handoff"
    short: str = ""  # a few words for the plot, e.g. "enqueue, 32 callers"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = {name: summary(v) for name, v in self.samples.items() if v}
        out["diagnostics_summary"] = {
            name: {
                **summary(v),
                "vs_reference": summary(per_round(v, self.samples[self.reference])),
            }
            for name, v in self.diagnostics.items()
            if v
        }
        for check, raw in zip(self.checks, out["checks"], strict=True):
            raw["median"] = check.median
            raw["min"] = min(check.values)
            raw["max"] = max(check.values)
            raw["met"] = check.met
        return out


@dataclass
class Settings:
    """How big a run is: the full run, or `--quick` for a smoke test of every family."""

    quick: bool = False

    @property
    def rounds(self) -> int:
        return 1 if self.quick else 3

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


# --- handoff as a library ---------------------------------------------------------------------

HANDOFF_DB = "bench_handoff"


def handoff_registry(noop: Any = None, **bodies: Any) -> Any:
    """A Registry of its own (not the app's): `noop` (forever keys) and `noop_active` (active
    keys), both running `noop` (default: return at once), plus any `name=(fn, dedupe)`."""
    from app.queue import Registry

    jobs = Registry()

    async def nothing(_ctx: Any) -> None:
        return None

    jobs.handler("noop", dedupe="forever")(noop or nothing)
    jobs.handler("noop_active", dedupe="active")(noop or nothing)
    for name, (fn, dedupe) in bodies.items():
        jobs.handler(name, dedupe=dedupe)(fn)
    return jobs


async def open_handoff(url: str, pool_size: int) -> Any:
    """handoff's Database, opened as the app opens it."""
    from app.db import Database

    return await Database.open(url, pool_size=pool_size)


async def warm_pool(db: Any, size: int) -> None:
    """Open every pool connection before timing: connecting is not what is measured."""
    conns = [await db.pool.acquire() for _ in range(size)]
    for conn in conns:
        await db.pool.release(conn)


def sql_for_pgbench(statement: str, params: dict[int, str]) -> str:
    """handoff's own statement from queries.sql with its $n replaced by pgbench expressions, so
    the floor always runs exactly what the library runs."""
    return re.sub(r"\$(\d+)\b", lambda m: params[int(m.group(1))], statement) + ";\n"
