"""BENCHMARKS.md and docs/bench.png from results.json.

The table's figures come from the results; what the figures mean and what limits them lives in
bench/analysis.md, written by hand after looking at a run, and is copied in as it is.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT

ANALYSIS = ROOT / "bench" / "analysis.md"


def fmt(value: float, unit: str = "") -> str:
    if value != value or value in (float("inf"), float("-inf")):  # NaN, inf
        return "n/a"
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "jobs":
        return f"{value:.0f} jobs"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def spread(s: dict[str, float], unit: str = "") -> str:
    if s["min"] == s["max"]:
        return fmt(s["median"], unit)
    return f"{fmt(s['median'], unit)} ({fmt(s['min'], unit)}–{fmt(s['max'], unit)})"


def is_own(row: dict[str, Any], name: str) -> bool:
    """Which samples are handoff's (the rest are peers and floors)."""
    return not name.startswith(("pgbench", "no queue", "GET /healthz", "procrastinate", "pgqueuer"))


def target_text(check: dict[str, Any]) -> str:
    if check["target"] is None:
        return "—"
    unit = check["unit"]
    return f"{check['op'].replace('>=', '≥').replace('<=', '≤')} {fmt(check['target'], unit)}"


def met_text(check: dict[str, Any]) -> str:
    return {True: "yes", False: "**no**", None: "—"}[check["met"]]


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| # | measure | handoff | peers and floors | ratio or figure | target | met? |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        unit = row["unit"]
        own = [
            f"{k}: {spread(s, unit if unit in ('ms', '%') else '')}"
            for k, s in row["summary"].items()
            if is_own(row, k)
        ]
        peers = [
            f"{k}: {spread(s, unit if unit in ('ms', '%') else '')}"
            for k, s in row["summary"].items()
            if not is_own(row, k)
        ]
        first = True
        for check in row["checks"]:
            cells = [
                row["id"] if first else "",
                f"{row['label']} ({unit})" if first else "",
                "<br>".join(own) if first else "",
                ("<br>".join(peers) or "—") if first else "",
                f"{check['name']}: {spread(check, check['unit'])}",
                target_text(check),
                met_text(check),
            ]
            lines.append("| " + " | ".join(cells) + " |")
            first = False
    return lines


def extras(rows: list[dict[str, Any]]) -> list[str]:
    """Secondary figures worth a line: B3's p99, B6's overshoot, B8's tail, B13's runners."""
    out = []
    for row in rows:
        extra = row.get("extra", {})
        if "p99_ms" in extra:
            parts = [
                f"{name} {spread(_summary(v), 'ms')}" for name, v in extra["p99_ms"].items() if v
            ]
            out.append(
                f"- **{row['id']} p99 latency** (median and range over rounds): "
                + "; ".join(parts)
                + "."
            )
        if extra.get("new_jobs_per_request"):
            low = min(extra["new_jobs_per_request"])
            out.append(
                f"- **{row['id']}**: each *new* request created {low:.2f} jobs or more (2 = one "
                "per channel, none deduplicated); the *deduplicated* ones created none."
            )
        if "answered_minus_budget_s" in extra:
            o = extra["answered_minus_budget_s"]
            out.append(
                f"- **{row['id']}**: answered − budget, over all invocations: median "
                f"{o['median']:+.2f} s, min {o['min']:+.2f} s, max {o['max']:+.2f} s; "
                f"{extra['succeeded']} attempts succeeded, {extra['released']} were released "
                "by the budget."
            )
        if "p90_ms" in extra:
            parts = [f"{n} {spread(_summary(v), 'ms')}" for n, v in extra["p90_ms"].items() if v]
            worst = ", ".join(f"{n} {v:.1f} ms" for n, v in extra["max_ms"].items())
            out.append(
                f"- **{row['id']} p90** (median and range over rounds): "
                + "; ".join(parts)
                + f"; worst single pick-up: {worst}."
            )
        if "succeeded_per_round" in extra:
            out.append(
                f"- **{row['id']}**: jobs completed per invocation: "
                + ", ".join(str(x) for x in extra["succeeded_per_round"])
                + "."
            )
        if "kicked_invocations_per_round" in extra:
            worst = ", ".join(f"{n} {v:.1f} ms" for n, v in extra["max_ms"].items())
            out.append(
                f"- **{row['id']}**: worst single wait: {worst}; kicked runner invocations per "
                "round (both kinds): "
                + ", ".join(str(x) for x in extra["kicked_invocations_per_round"])
                + "."
            )
        if "notifications_received" in extra:
            out.append(
                f"- **{row['id']}**: the listeners received "
                f"{extra['notifications_received']:,} notifications over the whole benchmark."
            )
        if extra.get("cpu_per_job"):
            parts = [
                f"{name} {statistics.median(v['client_us']):,.0f} + "
                f"{statistics.median(v['postgres_us']):,.0f}"
                for name, v in extra["cpu_per_job"].items()
            ]
            out.append(
                f"- **{row['id']} CPU per job** ({row.get('short') or row['label']}; µs, median "
                "over rounds, client process + PostgreSQL server): " + "; ".join(parts) + "."
            )
        for name, d in row.get("diagnostics_summary", {}).items():
            out.append(
                f"- **{row['id']} diagnostic** ({row['label']}), {name}: {spread(d)} "
                f"{row['unit']}, {spread(d['vs_reference'], '×')} {row['reference']}'s figure "
                "in the same rounds."
            )
    return out


def _summary(values: list[float]) -> dict[str, float]:
    from bench.common import summary

    return summary(values)


def write_markdown(results: dict[str, Any], path: Path, png: Path) -> None:
    m = results["machine"]
    rows = results["rows"]
    checks = [c for r in rows for c in r["checks"] if c["met"] is not None]
    met = sum(1 for c in checks if c["met"])
    settings = ", ".join(f"`{k}={v}`" for k, v in sorted(m["postgres_settings"].items()))
    lines = [
        "# Benchmarks",
        "",
        "How handoff's queue compares with two Postgres job queues for Python, "
        "[procrastinate](https://procrastinate.readthedocs.io/) and "
        "[pgqueuer](https://pgqueuer.readthedocs.io/), and with `pgbench` running handoff's own "
        "statements (the most the database itself can do), all on the same PostgreSQL in the "
        "same run. Every figure is a ratio against a peer or a floor measured in the same "
        "round; each benchmark runs its systems interleaved, in an order that rotates from round "
        f"to round, over {results['rounds']} round{'s' if results['rounds'] > 1 else ''}, and "
        "reports the median with the "
        "min–max over rounds in brackets.",
        "",
        f"![benchmark results]({_link(png, path)})",
        "",
        f"**{met} of {len(checks)} targets met** in this run.",
        "",
        *table(rows),
        "",
        *extras(rows),
        "",
    ]
    if ANALYSIS.exists():
        lines += [ANALYSIS.read_text().strip(), ""]
    lines += [
        "## How the figures were made",
        "",
        "- **Command**: `" + results["command"] + "` from the repository root, with the `bench` "
        "extra installed (`pip install -e '.[bench]'`), `wrk` and `pgbench` on the machine, and "
        "`BENCH_DATABASE_URL` (default `postgresql://postgres@127.0.0.1:5432/postgres`) naming "
        "a server where it may create and drop databases named `bench_handoff*`, "
        "`bench_procrastinate` and `bench_pgqueuer`.",
        f"- **Run**: started {results['started_at']}, took {results['duration_s'] // 60} min "
        f"{results['duration_s'] % 60} s; load average (1, 5, 15 min) "
        f"{_load(results['loadavg_before'])} before and {_load(results['loadavg_after'])} after; "
        f"other work on the machine (CPU not used by the suite or PostgreSQL) took "
        f"{_cores(results.get('other_cores'))} on average.",
    ]
    for rerun in results.get("partial_reruns", []):
        lines.append(
            f"- **Re-run** `{rerun['command']}` at {rerun['started_at']} "
            f"({rerun['duration_s']} s, load {_load(rerun['loadavg_before'])} before, "
            f"{_load(rerun['loadavg_after'])} after)."
        )
    lines += [
        f"- **Machine**: {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}; "
        f"Python {m['python']}.",
        f"- **PostgreSQL** {m['postgres']} on the same machine, over TCP on loopback, "
        f"stock settings: {settings}.",
        f"- **Tools**: {m['wrk']}; {m['pgbench']}.",
        "- **Packages**: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        "- **Per benchmark** (when measured, seconds taken, load average before → after, other "
        "work's CPU):",
        "",
    ]
    seen = set()
    for row in rows:
        if row["id"] in seen:
            continue
        seen.add(row["id"])
        notes = "; ".join(row.get("notes", []))
        lines.append(
            f"  - {row['id']}: {row['measured_at']}, {row['seconds']} s, load "
            f"{_load(row['loadavg_before'])} → {_load(row['loadavg_after'])}, other work "
            f"{_cores(row.get('other_cores'))}"
            + (f". {notes[0].upper() + notes[1:]}." if notes else ".")
        )
    lines += [
        "",
        "The raw figures, every round of every system, are in "
        "[bench/results.json](bench/results.json).",
        "",
    ]
    path.write_text("\n".join(lines))


def _link(target: Path, page: Path) -> str:
    """target as a link from page's folder."""
    import os

    return Path(os.path.relpath(target, page.parent)).as_posix()


def _cores(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} cores"


def _load(values: list[float]) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "n/a"


def print_row(row: dict[str, Any]) -> None:
    for line in table([row])[2:]:
        print(line, file=sys.stderr, flush=True)


# The throughput panels: which row, and a title for it.
PANELS = [
    ("B1", "32 callers", "B1 single enqueue, 32 callers"),
    ("B2", "", "B2 bulk enqueue (1,000 per statement)"),
    ("B4", "", "B4 drain, no-op jobs, concurrency 8"),
    ("B5", "", "B5 drain, one HTTP call per job"),
    ("B11", "", "B11 drain, the conversation_sync handler"),
]
# Diagnostic variants have long names; two short lines fit beside a bar.
DIAGNOSTIC_LABELS = {
    "handoff's statement alone": "handoff's statement\nalone (diagnostic)",
}
COLORS = {"handoff": "#1565c0", "procrastinate": "#8d6e63", "pgqueuer": "#6a1b9a"}


def _target_items(
    results: dict[str, Any],
) -> list[tuple[str, tuple[float, float, float], bool, str]]:
    """(label, (median, low, high) as a multiple of the target, met, text) per target."""
    items = []
    for row in results["rows"]:
        for c in row["checks"]:
            if c["target"] is None:
                continue
            label = f"{row['id']} {row.get('short') or row['label']}: {c['name']}"
            t = c["target"]
            if c["op"] == ">=":
                score = (c["median"] / t, c["min"] / t, c["max"] / t)
            elif t == 0:  # "none left running": a count that must stay at zero
                score = (1.0, 1.0, 1.0) if c["median"] == 0 else (0.1, 0.1, 0.1)
            else:  # smaller is better: the target over the figure
                score = tuple(t / max(v, 1e-9) for v in (c["median"], c["max"], c["min"]))
            text = f"{fmt(c['median'], c['unit'])}  (target {target_text(c)})"
            items.append((label, score, bool(c["met"]), text))
    return items


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: every target, as how far its median lands from it. Right: the raw throughputs
    behind the main ratios, with each system's min–max over rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    items = _target_items(results)
    rows = results["rows"]
    panels = []
    for bench_id, needle, title in PANELS:
        for row in rows:
            if row["id"] == bench_id and needle in row["label"]:
                panels.append((row, title))
                break
    height = max(0.32 * len(items) + 1.8, 2.2 * len(panels) + 0.8)
    fig = plt.figure(figsize=(15, height), dpi=100)
    grid = fig.add_gridspec(
        max(1, len(panels)), 2, width_ratios=[1.35, 1], wspace=0.55, hspace=0.45
    )

    ax = fig.add_subplot(grid[:, 0])
    items = items[::-1]
    ys = list(range(len(items)))
    for y, (_, (med, lo, hi), ok, text) in zip(ys, items, strict=True):
        color = "#2e7d32" if ok else "#c62828"
        ax.plot([lo, hi], [y, y], color=color, lw=2, alpha=0.5, solid_capstyle="round")
        ax.plot([med], [y], "o", color=color, ms=7)
        ax.annotate(
            text,
            (max(hi, med), y),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=7.5,
            color="#333",
        )
    ax.axvline(1.0, color="#333", ls="--", lw=1)
    ax.set_xscale("log")
    lows = [s[1] for _, s, _, _ in items] + [0.5]
    highs = [s[2] for _, s, _, _ in items] + [2.0]
    ax.set_xlim(min(lows) / 1.4, max(highs) * 4)
    ticks = [t for t in (0.05, 0.1, 0.2, 0.5, 1, 2, 5) if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(ys)
    ax.set_yticklabels([label for label, _, _, _ in items], fontsize=8)
    ax.set_ylim(-0.7, len(items) - 0.3)
    ax.set_xlabel(
        "median ÷ target, log scale (1 = on target; right of the dashed line = met)\n"
        "dot: median over rounds; line: min–max",
        fontsize=8.5,
    )
    ax.grid(axis="x", alpha=0.25)
    met = sum(1 for *_, ok, _ in items if ok)
    ax.set_title(f"Targets: {met} of {len(items)} met", fontsize=10, loc="left")

    for i, (row, title) in enumerate(panels):
        pax = fig.add_subplot(grid[i, 1])
        # The row's systems, then its diagnostic variants (hatched): what a fix would give.
        figures = {**row["summary"], **row.get("diagnostics_summary", {})}
        names = list(figures)
        diagnostic = [n in row.get("diagnostics_summary", {}) for n in names]
        meds = [figures[n]["median"] for n in names]
        los = [figures[n]["median"] - figures[n]["min"] for n in names]
        his = [figures[n]["max"] - figures[n]["median"] for n in names]
        colors = [next((c for k, c in COLORS.items() if n.startswith(k)), "#9e9e9e") for n in names]
        yy = list(range(len(names)))[::-1]
        bars = pax.barh(yy, meds, color=colors, height=0.6, alpha=0.9)
        for bar, diag in zip(bars, diagnostic, strict=True):
            if diag:
                bar.set_alpha(0.35)
                bar.set_hatch("///")
        pax.errorbar(meds, yy, xerr=[los, his], fmt="none", ecolor="#222", capsize=2, lw=0.8)
        for y, m, h in zip(yy, meds, his, strict=True):
            pax.annotate(
                fmt(m),
                (m + h, y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7.5,
            )
        pax.set_yticks(yy)
        pax.set_yticklabels([DIAGNOSTIC_LABELS.get(n, n) for n in names], fontsize=8)
        pax.set_xlim(0, max(m + h for m, h in zip(meds, his, strict=True)) * 1.3)
        pax.tick_params(axis="x", labelsize=7.5)
        pax.set_title(f"{title} ({row['unit']})", fontsize=9, loc="left")
        pax.grid(axis="x", alpha=0.25)

    m = results["machine"]
    fig.suptitle(
        f"handoff benchmarks, {results['started_at'][:10]}: {m['nproc']} cores, "
        f"PostgreSQL {m['postgres'].split()[0]}, {results['rounds']} round"
        f"{'s' if results['rounds'] > 1 else ''}, systems interleaved",
        fontsize=11,
    )
    fig.subplots_adjust(left=0.25, right=0.97, top=1 - 0.55 / height, bottom=0.9 / height)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
