"""The FastAPI app: its lifespan (engine, one shared HTTP client) and its routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

import app.handlers  # noqa: F401  (registers every job handler)
from app.api import (
    cron,
    dashboard,
    errors,
    health,
    jobs,
    leads,
    metrics,
    outreach,
    sync,
    webhooks,
)
from app.db import Database
from app.handlers import Providers
from app.queue.notify import Notifier
from app.settings import Settings, get_settings
from app.telemetry import configure_logging, register_secrets


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` default to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging()
        if not settings.database_url:
            raise SystemExit("handoff: DATABASE_URL is not set")
        register_secrets(settings)
        app.state.settings = settings
        app.state.db = await Database.open(settings.database_url, pooled=settings.pooled)
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        timeout = httpx.Timeout(settings.provider_timeout_s)
        try:
            async with (
                httpx.AsyncClient(timeout=timeout, limits=limits) as http,
                Notifier(app.state.db),
            ):
                app.state.providers = Providers.from_settings(settings, http)
                yield
        finally:
            await app.state.db.close()

    app = FastAPI(
        title="handoff",
        summary="Take slow work off a web app's request path.",
        version="0.1.0",
        lifespan=lifespan,
    )
    errors.install(app)
    # With the database hung rather than down, still answer within the contract's 5 s.
    app.add_middleware(errors.RequestDeadline, seconds=4.5, exempt=("/api/cron/background-jobs",))
    for router in (sync, webhooks, cron, jobs, leads, outreach, metrics, health, dashboard):
        app.include_router(router.router)
    dashboard.mount_static(app)
    return app


app = create_app()
