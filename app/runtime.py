"""What the API and the worker run on: the database, one HTTP client, the notifier, the runner
kicker, and runners on the settings' timings, opened and closed in one place."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from http.cookiejar import Cookie, CookieJar

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

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


def provider_http(settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client every provider call of the process goes through: httpx's interface
    on aiohttp's connection pool.

    httpx's own pool (httpcore) hands a freed connection to every request queued in the same
    loop turn and retries the losers, and checks each idle socket with a system call before
    use: eight jobs calling at once spent more time there than in the rest of a job (B11).
    """
    timeout = httpx.Timeout(settings.provider_timeout_s)
    return ProviderHttp(timeout=timeout, transport=ProviderTransport(limits=HTTP_LIMITS))


class _KeepNothing(CookieJar):
    def set_cookie(self, cookie: Cookie) -> None:
        return None


class _NoCookies(httpx.Cookies):
    """A cookie store that keeps nothing, however it is given one (one instance serves every
    client, so it must never hold anything)."""

    def __init__(self) -> None:
        super().__init__(_KeepNothing())

    def extract_cookies(self, response: httpx.Response) -> None:
        return None  # nothing would be kept: skip parsing the answer's Set-Cookie


class ProviderHttp(httpx.AsyncClient):
    """httpx's client without its cookie store (and its transport's aiohttp session has none).

    One client calls every client's provider accounts: a cookie one account's answer set (a
    load balancer's, a session's) would go out with another's calls to the same host. The
    provider APIs authenticate each call by its headers and set no cookie handoff needs; and
    reading every answer into the store cost about a tenth of a job's time in the real-handler
    drain (B11).
    """

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies


class ProviderTransport(AiohttpTransport):
    """httpx-aiohttp's transport, its failures told apart as httpx tells them.

    It maps every aiohttp connection error to httpx.ConnectTimeout: a refused connection or one
    the provider drops mid-answer would read as a timeout. And an aiohttp error it has no
    mapping for (a malformed status line) would escape as itself, not as an httpx error.
    """

    def get_client(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            keepalive_timeout=self.limits.keepalive_expiry,
            ssl=self.ssl_context,
        )
        # No cookie store here either (see ProviderHttp).
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
        # aiohttp sends a GET again, unasked, when a reused connection drops before the answer.
        # A call is made once: the queue's retry policy (its delays, its attempts) is the one
        # retry, and a rate-limited account's token pays for one call, not two.
        session._retry_connection = False  # noqa: SLF001 - aiohttp offers no public switch
        return session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _told_apart():
            response = await super().handle_async_request(request)
        response.stream = _MappedStream(response.stream)  # type: ignore[arg-type]
        return response


class _MappedStream(httpx.AsyncByteStream):
    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _told_apart():
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        with _told_apart():
            await self._stream.aclose()


@contextmanager
def _told_apart() -> Iterator[None]:
    try:
        yield
    except (httpx.TransportError, aiohttp.ClientError) as error:
        mapped = _as_httpx(error)
        if mapped is error:
            raise
        raise mapped from error


def _as_httpx(error: Exception) -> httpx.TransportError:
    """The httpx error an aiohttp failure is: a timeout only when it was one."""
    cause = error.__cause__ if isinstance(error, httpx.TransportError) else error
    if isinstance(error, httpx.TransportError) and not isinstance(error, httpx.ConnectTimeout):
        return error
    if isinstance(cause, TimeoutError):  # aiohttp's timeouts are asyncio.TimeoutError too
        return error if isinstance(error, httpx.TimeoutException) else httpx.ReadTimeout("")
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError("")
    if isinstance(cause, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return httpx.ReadError("")
    return httpx.RemoteProtocolError("")


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the database, the HTTP client and the notifier; close them on the way out."""
    if not settings.database_url:
        raise SystemExit("handoff: DATABASE_URL is not set")
    register_secrets(settings)
    db = await Database.open(settings.database_url, pooled=settings.pooled)
    try:
        async with provider_http(settings) as http, Notifier(db):
            background = Background(on_vercel=settings.vercel_env is not None)
            kicker = Kicker(settings, db, http, background)
            try:
                with notify.listening(kicker.poke):
                    yield Runtime(settings, db, Providers.from_settings(settings, http), kicker)
            finally:
                await background.aclose(BACKGROUND_GRACE_S)
    finally:
        await db.close()
