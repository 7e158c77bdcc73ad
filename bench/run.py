"""`python -m bench.run [--quick] [--only B1,B4]`: run the benchmarks, write the report.

The benchmarks, by report label and name: B1 single_enqueue, B2 bulk_enqueue, B3 http_sync,
B4 drain_noop, B5 drain_http, B6 budget_fidelity, B7 budget_utilization, B8 pickup_latency,
B9 claim_vs_table_size, B10 enqueue_with_listeners, B11 real_handler_drain, B12
drain_at_2ms_rtt, B13 kick_latency, B14 noisy_neighbour, B15 fairness_cost, B16 rate_limit,
B17 tracing_cost.

A full run writes bench/results.json, BENCHMARKS.md and docs/bench.png; `--only` re-measures
the named benchmarks and merges them into the existing results (each row keeps the time and
load it was measured under). `--quick` is a smoke test of every family with small counts and
one round; it writes under bench/quick/ so it never overwrites the published figures.
`--report` rewrites the report from the existing results without measuring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from bench import (
    budget,
    drain,
    enqueue,
    fair,
    handlers,
    http,
    kick,
    latency,
    netdelay,
    report,
    tracing,
)
from bench.common import (
    ADMIN_URL,
    DB_PREFIX,
    FAIR_DBS,
    PEER_DBS,
    ROOT,
    Row,
    Settings,
    drop_db,
    machine_cpu_seconds,
    own_cpu_seconds,
    postgres_cpu_seconds,
)
from bench.peers import quiet_peer_logs

Family = Callable[[Settings], Awaitable[list[Row]]]
# Each benchmark is known by its B-number in the report and on the command line; its function
# sets up, measures (raw figures) and turns the figures into report rows.
BENCHMARKS: dict[str, Family] = {
    "B1": enqueue.single_enqueue,
    "B2": enqueue.bulk_enqueue,
    "B3": http.http_sync,
    "B4": drain.drain_noop,
    "B5": drain.drain_http,
    "B6": budget.budget_fidelity,
    "B7": budget.budget_utilization,
    "B8": latency.pickup_latency,
    "B9": drain.claim_vs_table_size,
    "B10": enqueue.enqueue_with_listeners,
    "B11": handlers.real_handler_drain,
    "B12": netdelay.drain_at_2ms_rtt,
    "B13": kick.kick_latency,
    "B14": fair.noisy_neighbour,
    "B15": fair.fairness_cost,
    "B16": fair.rate_limit,
    "B17": tracing.tracing_cost,
}
# `--only` also takes the functions' names, e.g. `--only drain_noop`.
BY_NAME = {family.__name__: bench_id for bench_id, family in BENCHMARKS.items()}
PACKAGES = [
    "asyncpg",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httpx",
    "procrastinate",
    "psycopg",
    "psycopg-pool",
    "pgqueuer",
    "matplotlib",
    "opentelemetry-sdk",
]


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


class CpuMeter:
    """How busy the machine was with work other than this suite and its PostgreSQL server."""

    def __init__(self) -> None:
        self.start = (
            machine_cpu_seconds(),
            own_cpu_seconds(),
            postgres_cpu_seconds(),
            time.monotonic(),
        )

    def other_cores(self) -> float | None:
        (busy0, _), own0, pg0, t0 = self.start
        (busy1, _), own1, pg1, t1 = (
            machine_cpu_seconds(),
            own_cpu_seconds(),
            postgres_cpu_seconds(),
            time.monotonic(),
        )
        if t1 <= t0:
            return None
        # A subprocess still running (uvicorn) is not in RUSAGE_CHILDREN until it exits, so
        # this is read after each benchmark, when they all have.
        return round(max(0.0, (busy1 - busy0) - (own1 - own0) - (pg1 - pg0)) / (t1 - t0), 2)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def tool_version(args: list[str]) -> str:
    import subprocess

    try:
        out = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


async def machine() -> dict[str, Any]:
    from bench.common import pgbench_path
    from bench.http import wrk_path

    conn = await asyncpg.connect(ADMIN_URL)
    try:
        version = await conn.fetchval("SHOW server_version")
        settings = {
            r["name"]: r["setting"] + (r["unit"] or "")
            for r in await conn.fetch(
                "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)",
                [
                    "shared_buffers",
                    "synchronous_commit",
                    "fsync",
                    "max_connections",
                    "wal_sync_method",
                    "max_wal_size",
                ],
            )
        }
    finally:
        await conn.close()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": version,
        "postgres_settings": settings,
        "wrk": tool_version([wrk_path(), "--version"]),
        "pgbench": tool_version([pgbench_path(), "--version"]),
    }


def handoff_version() -> str:
    """The commit measured, and whether the work tree differed from it."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(  # noqa: S603
            ["git", *args],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    dirty = git("status", "--porcelain", "--", "app", "alembic")
    return f"commit {commit}" + (" with uncommitted changes under app/" if dirty else "")


def versions() -> dict[str, str]:
    out = {"handoff": handoff_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


async def cleanup_leftovers() -> None:
    """Drop the databases a crashed run left behind (see common.DB_PREFIX, PEER_DBS and
    FAIR_DBS)."""
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 OR datname = ANY($2)",
            DB_PREFIX + "%",
            [*PEER_DBS, *FAIR_DBS],
        )
    finally:
        await conn.close()
    for row in names:
        await drop_db(row["datname"])


async def measure(ids: list[str], cfg: Settings) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for bench_id in ids:
        before, started, meter = loadavg(), time.monotonic(), CpuMeter()
        print(f"{bench_id} ...", file=sys.stderr, flush=True)
        results = await BENCHMARKS[bench_id](cfg)
        others = meter.other_cores()
        for row in results:
            data = row.as_dict()
            data["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
            data["loadavg_before"] = before
            data["loadavg_after"] = loadavg()
            data["seconds"] = round(time.monotonic() - started, 1)
            # Cores' worth of CPU that other work on the machine took meanwhile, on average.
            data["other_cores"] = others
            rows.append(data)
            report.print_row(data)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts, one round")
    parser.add_argument(
        "--only", help="comma-separated ids or names, e.g. B1,B4 or single_enqueue,drain_noop"
    )
    parser.add_argument("--report", action="store_true", help="rewrite the report only")
    args = parser.parse_args()
    cfg = Settings(quick=args.quick)
    ids = list(BENCHMARKS)
    if args.only:
        ids = [BY_NAME.get(x.strip(), x.strip().upper()) for x in args.only.split(",") if x.strip()]
        unknown = [x for x in ids if x not in BENCHMARKS]
        if unknown:
            parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    out_dir = ROOT / "bench" / "quick" if args.quick else ROOT / "bench"
    results_path = out_dir / "results.json"
    md_path = out_dir / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md"
    png_path = out_dir / "bench.png" if args.quick else ROOT / "docs" / "bench.png"
    out_dir.mkdir(parents=True, exist_ok=True)

    if args.report:
        results = json.loads(results_path.read_text())
    else:
        quiet_peer_logs()
        results = run(ids, cfg, args, results_path)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    report.write_markdown(results, md_path, png_path)
    report.plot(results, png_path)
    print(
        f"wrote {results_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}, "
        f"{png_path.relative_to(ROOT)}",
        file=sys.stderr,
    )


def run(ids: list[str], cfg: Settings, args: argparse.Namespace, path: Path) -> dict[str, Any]:
    command = "python -m bench.run" + (" --quick" if args.quick else "")
    if args.only:
        command += f" --only {','.join(ids)}"

    async def go() -> dict[str, Any]:
        # A partial re-run leaves other databases alone (each benchmark recreates its own), so
        # it never drops one another run on the same server is using.
        if not args.only:
            await cleanup_leftovers()
        started = time.monotonic()
        info = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": command,
            "quick": cfg.quick,
            "rounds": cfg.rounds,
            "machine": await machine(),
            "versions": versions(),
            "loadavg_before": loadavg(),
        }
        meter = CpuMeter()
        rows = await measure(ids, cfg)
        info["other_cores"] = meter.other_cores()
        info["loadavg_after"] = loadavg()
        info["duration_s"] = round(time.monotonic() - started)
        return {**info, "rows": rows}

    try:
        import uvloop

        fresh = uvloop.run(go())
    except ImportError:
        fresh = asyncio.run(go())
    if not args.only or not path.exists():
        return fresh
    # A partial re-run: keep the other benchmarks' rows, replace these ones, and keep the
    # full run's header; each row carries when and under what load it was measured.
    old = json.loads(path.read_text())
    kept = [r for r in old["rows"] if r["id"] not in ids]
    order = list(BENCHMARKS)
    old["rows"] = sorted(kept + fresh["rows"], key=lambda r: order.index(r["id"]))
    old.setdefault("partial_reruns", []).append(
        {
            k: fresh[k]
            for k in ("started_at", "command", "loadavg_before", "loadavg_after", "duration_s")
        }
    )
    old["versions"] = fresh["versions"]
    return old


if __name__ == "__main__":
    main()
