"""A real PgBouncer in transaction mode (what Neon's and Supabase's poolers run), and a look at
the server connections behind it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from app.db import asyncpg_dsn

# The server connections PgBouncer keeps per database: few, so that this many concurrent
# transactions visit every one of them (see server_sessions).
POOL_SIZE = 8
# Debian installs it outside an unprivileged user's PATH.
CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer")


def find_pgbouncer() -> str | None:
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


class Bouncer:
    """PgBouncer in front of the server of `admin_url`, on a free loopback port."""

    def __init__(self, binary: str, admin_url: str, directory: Path, port: int) -> None:
        self.binary = binary
        self.admin_url = admin_url
        self.directory = directory
        self.port = port
        self.process: subprocess.Popen | None = None

    def url(self, database_url: str) -> str:
        """The same database, user and password, through the pooler."""
        parts = urlsplit(database_url)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in {"host", "port"}]
        auth = parts.netloc.rpartition("@")[0]
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(netloc=f"{auth}@{address}" if auth else address, query=urlencode(query))
        )

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Bouncer:
        ini = self._write_config()
        args = [self.binary, str(ini)]
        user = _unprivileged_user(self._server()[0])
        if user is not None:
            # PgBouncer refuses to run as root; its files must be the user's it runs as.
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            args[1:1] = ["-u", user.pw_name]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        asyncio.run(self._wait_until_accepting())
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def _server(self) -> tuple[str, int, str, str]:
        """(host or socket directory, port, user, password) of the tests' server."""
        parts = urlsplit(self.admin_url)
        query = dict(parse_qsl(parts.query))
        # The embedded server is reached through a socket directory given as ?host=.
        host = query.get("host") or parts.hostname or "127.0.0.1"
        port = int(query.get("port") or parts.port or 5432)
        return host, port, unquote(parts.username or "postgres"), unquote(parts.password or "")

    def _write_config(self) -> Path:
        host, port, user, password = self._server()
        # auth_type trust still wants the user listed; the password, when the server asks for
        # one, is what PgBouncer logs in to the server with.
        (self.directory / "users.txt").write_text(f'"{user}" "{password}"\n')
        ini = self.directory / "pgbouncer.ini"
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": self.port,
            "unix_socket_dir": "",
            "pool_mode": "transaction",
            # Hand out idle server connections in turn, as a busy shared pooler effectively
            # does: otherwise an idle test pool gives a client back the connection it just
            # used and hides state left behind on one.
            "server_round_robin": 1,
            "auth_type": "trust",
            "auth_file": self.directory / "users.txt",
            "default_pool_size": POOL_SIZE,
            "max_client_conn": 2000,
            "logfile": self.directory / "pgbouncer.log",
            "pidfile": self.directory / "pgbouncer.pid",
        }
        lines = ["[databases]", f"* = host={host} port={port}", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        ini.write_text("\n".join(lines) + "\n")
        return ini

    async def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + 15
        url = asyncpg_dsn(self.url(self.admin_url))
        while True:
            assert self.process is not None
            assert self.process.poll() is None, f"pgbouncer exited: {self.log()[-2000:]}"
            try:
                conn = await asyncpg.connect(url, timeout=2, statement_cache_size=0)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                assert time.monotonic() < deadline, f"pgbouncer is not answering: {self.log()}"
                await asyncio.sleep(0.1)
                continue
            await conn.close()
            return


def _unprivileged_user(server_host: str) -> pwd.struct_passwd | None:
    """Who to run PgBouncer as when we are root (None when we are not): the owner of the
    server's socket directory, who alone may reach it (the embedded server's), else any."""
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        owner = pwd.getpwuid(os.stat(server_host).st_uid)
        if owner.pw_uid != 0:
            return owner
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, and there is neither a postgres nor a nobody user")


@dataclass(frozen=True)
class ServerSession:
    """What one server connection behind the pooler carries from session to session."""

    pid: int
    jit: str
    jit_source: str
    prepared: int
    listening: int


SESSION_STATE = """
SELECT pg_backend_pid() AS pid, s.setting AS jit, s.source AS jit_source,
       (SELECT count(*) FROM pg_prepared_statements) AS prepared,
       (SELECT count(*) FROM pg_listening_channels()) AS listening
FROM pg_settings s WHERE s.name = 'jit'
"""


async def server_sessions(pooled_url: str) -> list[ServerSession]:
    """The state of every server connection the pooler keeps for this database: POOL_SIZE
    transactions open at once each hold a different one, and together they hold them all."""
    dsn = asyncpg_dsn(pooled_url)
    conns = [await asyncpg.connect(dsn, statement_cache_size=0) for _ in range(POOL_SIZE)]
    try:
        transactions = [conn.transaction() for conn in conns]
        await asyncio.gather(*(t.start() for t in transactions))
        rows = await asyncio.gather(*(conn.fetchrow(SESSION_STATE) for conn in conns))
        await asyncio.gather(*(t.rollback() for t in transactions))
    finally:
        await asyncio.gather(*(conn.close() for conn in conns))
    sessions = [ServerSession(**dict(row)) for row in rows]
    assert len({s.pid for s in sessions}) == POOL_SIZE, sessions
    return sessions


def leftovers(sessions: list[ServerSession], start: ServerSession) -> list[ServerSession]:
    """Server connections that differ from a fresh one (`start`): a setting changed in the
    session, a statement still prepared, a channel listened to."""
    fresh = (start.jit, start.jit_source, 0, 0)
    return [s for s in sessions if (s.jit, s.jit_source, s.prepared, s.listening) != fresh]


async def direct_session(database_url: str) -> ServerSession:
    """The same, on a fresh direct connection: what a server connection starts with."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url), statement_cache_size=0)
    try:
        return ServerSession(**dict(await conn.fetchrow(SESSION_STATE)))
    finally:
        await conn.close()
