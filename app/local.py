"""The local run: embedded Postgres, migrations, sandbox providers, one URL to open.

    python -m app.local [--host 127.0.0.1] [--port 8000] [--sms twilio] [--email resend]

Settings from the environment win; what is unset gets a local default: the embedded database
under ./.data/, the sandbox providers mounted at /sandbox, freshly generated secrets, and an
encryption key for provider accounts generated once and kept under ./.data/ (so the accounts
stored in the embedded database stay readable across runs). Beside
the API it runs one worker and plays vercel.json's cron schedule against the API, all in this
one process, so jobs drain by themselves as they would in production.

`--sms twilio` and `--email resend` send the global accounts through the Twilio and Resend
adapters to the sandbox's Twilio- and Resend-shaped APIs (/sandbox/twilio, /sandbox/resend), so
the vendor code paths run locally.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy.dialects.postgresql import insert

from app.db import make_engine, start_embedded
from app.localcron import play_all
from app.main import create_app
from app.migrations import upgrade_to_head
from app.models import clients, leads
from app.sandbox import SandboxState, create_sandbox_app
from app.sandbox.resend import resend_state
from app.sandbox.twilio import SANDBOX_NUMBER
from app.settings import Settings, load_settings
from app.telemetry import configure_logging
from app.worker import run_worker

DEMO_CLIENT = {"id": "demo", "name": "Demo Realty"}
# The account the sandbox's Twilio endpoints are called with when SMS goes through Twilio.
SANDBOX_TWILIO_SID = "AC" + "0" * 32
# The sender the sandbox's Resend endpoints send from when email goes through Resend.
SANDBOX_RESEND_FROM = "Demo Realty <hello@demo.sandbox.example>"
DEMO_LEADS = [
    {
        "id": f"demo-lead-{i}",
        "name": name,
        "email": f"{name.split()[0].lower()}@example.com",
        # A fictional number (555-01xx), the lead's identity when SMS goes through Twilio.
        "phone": f"+1555010{i:04d}",
        "sms_contact_id": f"sms-contact-{i}",
        "email_lead_id": f"email-lead-{i}",
    }
    for i, name in enumerate(
        ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson", "Edsger Dijkstra"], 1
    )
]


async def seed_demo(url: str) -> None:
    """A demo client and leads whose sandbox histories are ready to sync (idempotent)."""
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(clients).values(DEMO_CLIENT).on_conflict_do_nothing())
            rows = [{"client_id": DEMO_CLIENT["id"], **lead} for lead in DEMO_LEADS]
            await conn.execute(insert(leads).values(rows).on_conflict_do_nothing())
    finally:
        await engine.dispose()


def local_encryption_key(data_dir: Path) -> str:
    """The local run's Fernet key: made on the first run, readable by this user alone, then
    read back on every run after."""
    path = data_dir / "encryption.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(Fernet.generate_key())
    return path.read_text().strip()


def sandbox_twilio(base: str, key: str) -> dict[str, object]:
    """The settings that send the global SMS account through the Twilio adapter to the
    sandbox's Twilio endpoints (`--sms twilio`)."""
    return {
        "sms_provider_kind": "twilio",
        "twilio_account_sid": SANDBOX_TWILIO_SID,
        "twilio_auth_token": key,
        "twilio_from": SANDBOX_NUMBER,
        "twilio_api_url": f"{base}/sandbox/twilio",
    }


def sandbox_resend(base: str, key: str) -> dict[str, object]:
    """The settings that send the global email account through the Resend adapter to the
    sandbox's Resend endpoints (`--email resend`), its inbox holding the demo leads' emails."""
    return {
        "email_provider_kind": "resend",
        "resend_api_key": key,
        "resend_from": SANDBOX_RESEND_FROM,
        "resend_api_url": f"{base}/sandbox/resend",
    }


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.local", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", type=Path, default=Path(".data"))
    parser.add_argument(
        "--sms",
        choices=("generic", "twilio"),
        default="generic",
        help="the sandbox API SMS goes through: the contract's (generic) or Twilio's, through "
        "the Twilio adapter",
    )
    parser.add_argument(
        "--email",
        choices=("generic", "resend"),
        default="generic",
        help="the sandbox API email goes through: the contract's (generic) or Resend's, through "
        "the Resend adapter",
    )
    args = parser.parse_args(argv)

    base = f"http://{args.host}:{args.port}"
    sandbox_key = secrets.token_urlsafe(16)
    twilio = sandbox_twilio(base, sandbox_key) if args.sms == "twilio" else {}
    resend = sandbox_resend(base, sandbox_key) if args.email == "resend" else {}
    env = load_settings()
    if not port_is_free(args.host, args.port):
        sys.exit(f"handoff: port {args.port} is taken; pass --port to pick another")
    configure_logging()
    url = env.database_url or start_embedded(args.data_dir.resolve())
    upgrade_to_head(url)
    asyncio.run(seed_demo(url))

    overrides: dict[str, object] = {
        **twilio,
        **resend,
        # Where Twilio-signed deliveries are checked against: this server, unless set.
        "public_url": env.public_url or base,
        "database_url": url,
        "api_token": env.api_token or secrets.token_urlsafe(24),
        "cron_secret": env.cron_secret or secrets.token_urlsafe(24),
        "webhook_secret": env.webhook_secret
        or "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
        "encryption_keys": env.encryption_keys or local_encryption_key(args.data_dir.resolve()),
    }
    for provider in ("sms", "email", "ai"):
        if not getattr(env, f"{provider}_provider_url"):
            overrides[f"{provider}_provider_url"] = f"{base}/sandbox/{provider}"
            overrides[f"{provider}_provider_key"] = sandbox_key
    settings = load_settings(**overrides)

    app = create_app(settings)
    state = SandboxState()
    resend_state(state).seed([str(lead["email"]) for lead in DEMO_LEADS])
    app.mount("/sandbox", create_sandbox_app(state, key=sandbox_key))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None)
    server = LocalServer(
        config,
        banner=(
            f"\n  handoff is running\n"
            f"  dashboard:   {base}/?token={settings.api_token}\n"
            f"  API token:   {settings.api_token}\n"
            f"  cron secret: {settings.cron_secret}\n"
            f"  API docs:    {base}/docs\n"
        ),
    )
    asyncio.run(serve(server, settings, base))


class LocalServer(uvicorn.Server):
    """uvicorn without signal handling of its own: it would re-raise SIGINT or SIGTERM once
    it had stopped, ending the process before the worker stops and the embedded PostgreSQL
    shuts down. `serve` hands both signals to it instead, then stops the rest and returns.
    The banner is printed once the API is listening."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self.banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            print(self.banner, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(server: uvicorn.Server, settings: Settings, base_url: str) -> None:
    """The API, a worker and the cron schedule, until SIGINT or SIGTERM."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.handle_exit, signum, None)
    stop = asyncio.Event()
    beside = [
        asyncio.create_task(run_worker(settings, stop)),
        asyncio.create_task(play_all(base_url, settings.cron_secret or "", stop)),
    ]
    try:
        await server.serve()
    finally:
        stop.set()
        await asyncio.gather(*beside, return_exceptions=True)


if __name__ == "__main__":
    main()
