"""B12 `drain_at_2ms_rtt`: B4 and B11 again with 2 ms of round-trip time between every system
and PostgreSQL, as a database 1-5 ms away (serverless Postgres) puts it.

How the delay is made (nothing in PostgreSQL is changed; it keeps listening on 127.0.0.1 only):

- netem (the default): a network namespace (`handoff-b12`) joined to the host by a veth pair,
  10.231.0.1 on the host's end and 10.231.0.2 inside, each end's egress delayed 1 ms by
  `tc qdisc add dev ... root netem delay 1ms`. On the host's end socat forwards port 5432 to
  127.0.0.1:5432, so the server sees loopback connections its pg_hba already trusts. Every
  system, its peers, pgbench and the local HTTP provider run in one child process inside the
  namespace (`ip netns exec`); the provider answers on the namespace's own loopback, with no
  delay. The namespace (with its veth end), the host's end and socat are removed afterwards.
- Where that cannot be set up (not root, no `ip netns`, a kernel without sch_netem), B12 is
  skipped with the reason, unless `BENCH_DELAY=proxy`: then a forwarder of this module
  (`python -m bench.netdelay proxy PORT`, plain asyncio, whose timers keep sub-millisecond
  precision) holds every chunk 1 ms in each direction between 127.0.0.1:PORT and the server.
  It is a process of its own and costs CPU per chunk, which falls hardest on the system making
  the most round trips; the row says which method made it, and the round trip it measured.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from bench.common import ADMIN_URL, ROOT, Row, Settings

NETNS = "handoff-b12"
HOST_DEV, NS_DEV = "hb12h", "hb12n"
HOST_ADDR, NS_ADDR = "10.231.0.1", "10.231.0.2"
ONE_WAY_MS = 1.0
PG_PORT = 5432


def _with_host(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}{host}:{port}"))


def _run(*args: str) -> None:
    out = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603
    if out.returncode != 0:
        raise RuntimeError(f"`{' '.join(args)}`: {(out.stderr or out.stdout).strip()}")


def _teardown_netns() -> None:
    for args in (["ip", "netns", "del", NETNS], ["ip", "link", "del", HOST_DEV]):
        subprocess.run(args, capture_output=True, check=False)  # noqa: S603


@contextlib.asynccontextmanager
async def netem_postgres() -> AsyncIterator[tuple[list[str], str]]:
    """The namespace, its delayed veth and the forwarder; yields (the command prefix that runs
    a process inside, the admin URL it reaches the server by). RuntimeError: not possible
    here, with the failing step."""
    import shutil

    for tool in ("ip", "tc", "socat"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found")
    _teardown_netns()  # a crashed run's leftovers
    socat = None
    try:
        _run("ip", "netns", "add", NETNS)
        _run("ip", "link", "add", HOST_DEV, "type", "veth", "peer", "name", NS_DEV)
        _run("ip", "link", "set", NS_DEV, "netns", NETNS)
        _run("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", HOST_DEV)
        _run("ip", "link", "set", HOST_DEV, "up")
        inside = ["ip", "netns", "exec", NETNS]
        _run(*inside, "ip", "addr", "add", f"{NS_ADDR}/30", "dev", NS_DEV)
        _run(*inside, "ip", "link", "set", NS_DEV, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        delay = f"{ONE_WAY_MS:g}ms"
        _run("tc", "qdisc", "add", "dev", HOST_DEV, "root", "netem", "delay", delay)
        _run(*inside, "tc", "qdisc", "add", "dev", NS_DEV, "root", "netem", "delay", delay)
        target = urlsplit(ADMIN_URL)
        socat = subprocess.Popen(  # noqa: S603, ASYNC220
            [  # noqa: S607
                "socat",
                f"TCP-LISTEN:{PG_PORT},bind={HOST_ADDR},fork,reuseaddr,nodelay",
                f"TCP:{target.hostname or '127.0.0.1'}:{target.port or 5432},nodelay",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(0.3)
        if socat.poll() is not None:
            raise RuntimeError("socat did not start")
        yield inside, _with_host(ADMIN_URL, HOST_ADDR, PG_PORT)
    finally:
        if socat is not None:
            socat.terminate()
            await asyncio.to_thread(socat.wait)
        _teardown_netns()


@contextlib.asynccontextmanager
async def proxied_postgres() -> AsyncIterator[tuple[list[str], str]]:
    """The userspace forwarder on a free loopback port; yields ([], the admin URL through it)."""
    from bench.http import free_port

    port = free_port()
    target = urlsplit(ADMIN_URL)
    proxy = subprocess.Popen(  # noqa: S603, ASYNC220
        [
            sys.executable,
            "-m",
            "bench.netdelay",
            "proxy",
            str(port),
            target.hostname or "127.0.0.1",
            str(target.port or 5432),
        ],
        cwd=ROOT,
    )
    try:
        await asyncio.sleep(0.5)
        yield [], _with_host(ADMIN_URL, "127.0.0.1", port)
    finally:
        proxy.terminate()
        await asyncio.to_thread(proxy.wait)


async def round_trip_ms(url: str, n: int = 200) -> float:
    """Median time of `SELECT 1` over one connection to `url`."""
    conn = await asyncpg.connect(url)
    try:
        times = []
        for _ in range(n):
            started = time.perf_counter()
            await conn.fetchval("SELECT 1")
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await conn.close()
    return statistics.median(times)


async def run_child(prefix: list[str], admin_url: str, cfg: Settings) -> dict[str, Any]:
    """B4's and B11's measurements in a child process reaching the server at `admin_url`."""
    env = {**os.environ, "BENCH_DATABASE_URL": admin_url}
    args = [*prefix, sys.executable, "-m", "bench.netdelay", "child"]
    if cfg.quick:
        args.append("--quick")
    proc = await asyncio.create_subprocess_exec(
        *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"B12's child failed ({proc.returncode})")
    line = next(x for x in out.decode().splitlines()[::-1] if x.startswith("B12 "))
    return json.loads(line.removeprefix("B12 "))


async def child(cfg: Settings) -> None:
    """Inside the delay: B4's systems, then B11's; one JSON line on stdout."""
    from bench.drain import drain_noop_measure, drain_systems
    from bench.handlers import handler_drains, real_handler_drain_measure
    from bench.peers import quiet_peer_logs

    quiet_peer_logs()
    rtt = await round_trip_ms(ADMIN_URL)
    print(f"B12: SELECT 1 round trip {rtt:.2f} ms", file=sys.stderr, flush=True)
    if rtt < 2 * ONE_WAY_MS * 0.75:
        raise SystemExit(f"B12: the delay did not take ({rtt:.2f} ms round trip)")
    async with drain_systems(floor=True) as drains:
        noop = await drain_noop_measure(drains, cfg)
    async with handler_drains(cfg.pick(2_000, 600)) as systems:
        handlers = await real_handler_drain_measure(systems, cfg)
    print("B12 " + json.dumps({"rtt_ms": rtt, "noop": asdict(noop), "handlers": asdict(handlers)}))


async def drain_at_2ms_rtt(cfg: Settings) -> list[Row]:
    """B12: B4 and B11 with 2 ms of round-trip time to PostgreSQL."""
    from bench.drain import DrainNoopFigures, drain_noop_rows
    from bench.handlers import HandlerFigures, real_handler_drain_rows

    method = os.environ.get("BENCH_DELAY", "netem")
    direct = await round_trip_ms(ADMIN_URL)
    try:
        place = netem_postgres() if method == "netem" else proxied_postgres()
        async with place as (prefix, url):
            figures = await run_child(prefix, url, cfg)
    except RuntimeError as error:
        if method != "netem":
            raise
        print(
            f"B12 skipped: netem cannot delay PostgreSQL's traffic here ({error}); "
            "BENCH_DELAY=proxy measures it through a userspace forwarder instead",
            file=sys.stderr,
            flush=True,
        )
        return []
    how = (
        f"netem, {ONE_WAY_MS:g} ms each way on a veth pair"
        if method == "netem"
        else f"a userspace forwarder holding each chunk {ONE_WAY_MS:g} ms each way (no netem)"
    )
    note = (
        f"2 ms RTT by {how}: SELECT 1 took {figures['rtt_ms']:.2f} ms there against "
        f"{direct:.2f} ms direct (median of 200)"
    )
    rows = [
        *drain_noop_rows(DrainNoopFigures(**figures["noop"])),
        *real_handler_drain_rows(HandlerFigures(**figures["handlers"])),
    ]
    for row, short in zip(rows, ("drain no-op, 2 ms RTT", "real handler, 2 ms RTT"), strict=True):
        row.label = f"{row.id} at 2 ms RTT: {row.label}"
        row.id = "B12"
        row.short = short
        row.notes = [note, *row.notes]
    return rows


# --- the userspace forwarder ------------------------------------------------------------------


class _Side(asyncio.Protocol):
    """One end of a forwarded connection: what it receives reaches the other end ONE_WAY_MS
    later, in order."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.other: _Side | None = None
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.queue.append((self.loop.time() + self.delay_s, data))
        if self.timer is None:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        other = self.other
        if other is None or other.transport is None:  # still connecting
            self.timer = self.loop.call_later(0.0002, self.flush)
            return
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            other.transport.write(self.queue.popleft()[1])
        if self.queue:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)
        elif self.closing:
            other.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.timer is None:
            self.loop.call_later(self.delay_s, self.flush)


async def serve_proxy(port: int, host: str, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    delay_s = ONE_WAY_MS / 1000

    def accepted() -> _Side:
        near = _Side(delay_s)
        far = _Side(delay_s)
        near.other, far.other = far, near

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: far, host, target_port)
            except OSError:
                if near.transport is not None:
                    near.transport.close()

        loop.create_task(connect())  # noqa: RUF006 - the connection holds its own references
        return near

    server = await loop.create_server(accepted, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    if sys.argv[1:2] == ["proxy"]:
        # Plain asyncio: uvloop's timers tick in whole milliseconds.
        asyncio.run(serve_proxy(int(sys.argv[2]), sys.argv[3], int(sys.argv[4])))
    elif sys.argv[1:2] == ["child"]:
        import uvloop

        uvloop.run(child(Settings(quick="--quick" in sys.argv)))
    else:
        raise SystemExit("usage: python -m bench.netdelay proxy PORT HOST TARGET_PORT | child")


if __name__ == "__main__":
    main()
