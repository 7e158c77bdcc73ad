"""What the API and the worker run on: the database, one HTTP client, the notifier, the runner
kicker, and runners on the settings' timings, opened and closed in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from app.background import Background
from app.db import Database
from app.handlers import Providers  # importing app.handlers registers every job's handler
from app.kick import Kicker
from app.queue import Runner, notify, registry, retention
from app.queue.notify import Notifier
from app.settings import Settings
from app.telemetry import register_secrets

# Connections to the providers, for the whole process.
HTTP_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

# The queue's own upkeep: pruning finished jobs.
retention.register(registry)
# What work after a response (kicks, kicked drains) gets to end when the process stops; then it
# is cancelled, and a cancelled drain releases its jobs.
BACKGROUND_GRACE_S = 2.0


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    providers: Providers
    kicker: Kicker

    def runner(self, invocation_id: str | None = None) -> Runner:
        """A runner on the settings' timings whose handlers get the providers."""
        return Runner(
            self.db,
            concurrency=self.settings.runner_concurrency,
            client_concurrency=self.settings.client_concurrency,
            job_timeout_s=self.settings.job_timeout_s,
            lease_s=self.settings.lease_s,
            deps=self.providers,
            invocation_id=invocation_id,
        )


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the database, the HTTP client and the notifier; close them on the way out."""
    if not settings.database_url:
        raise SystemExit("handoff: DATABASE_URL is not set")
    register_secrets(settings)
    db = await Database.open(settings.database_url, pooled=settings.pooled)
    timeout = httpx.Timeout(settings.provider_timeout_s)
    try:
        async with httpx.AsyncClient(timeout=timeout, limits=HTTP_LIMITS) as http, Notifier(db):
            background = Background(on_vercel=settings.vercel_env is not None)
            kicker = Kicker(settings, db, http, background)
            try:
                with notify.listening(kicker.poke):
                    yield Runtime(settings, db, Providers.from_settings(settings, http), kicker)
            finally:
                await background.aclose(BACKGROUND_GRACE_S)
    finally:
        await db.close()
