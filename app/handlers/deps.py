"""What handlers need from the app: the provider clients for a job's client, built on the one
shared HTTP client.

A client with its own account on a channel (app/accounts) gets a client for that account; a
client without one gets the global settings' provider. A stored account that cannot be read
(ENCRYPTION_KEYS unset or without its key) fails the attempt (a Transient provider error, so it
is retried while the keys are being fixed) and never falls back to the global account.

An account with a rate (a client's `rate_per_min`, the global accounts' *_RATE_PER_MIN) gets a
client whose every call first takes a token from the account's bucket (app/queue/ratelimit);
with none free the job is throttled: put back until its turn, its attempt given back. A 429
from the provider holds the bucket off for its Retry-After, in every process.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import httpx

from app.accounts import AccountUnreadable, ProviderChannel, load_account
from app.db import Database
from app.providers import (
    AiClient,
    EmailClient,
    Permanent,
    ProviderError,
    RateLimited,
    SmsClient,
    SmsProvider,
    Transient,
)
from app.providers.email import EmailProvider
from app.providers.http import ProviderClient
from app.providers.resend import ResendClient
from app.providers.twilio import TwilioSms
from app.queue import Discard, JobContext, RetryLater, Throttled
from app.queue.ratelimit import hold_off, interval_s, take_token, turn_after
from app.queue.registry import (
    PRIORITY_DEFAULT,
    DedupeScope,
    Handler,
    HandlerFn,
    Registry,
    registry,
)
from app.settings import Settings

T = TypeVar("T")

# How long a client's account, once read, serves that process's jobs before it is read again:
# a change (PUT, DELETE, a rotation) reaches every process within this, and a burst of sends
# reads each client's account once a second rather than once a job.
ACCOUNT_CACHE_S = 1.0
# How far ahead a job already under way reserves its next call's token, and waits for it.
MID_JOB_WAIT_S = 10.0
# Past this many cached accounts the expired ones are dropped.
MAX_CACHED_ACCOUNTS = 4096


class BucketGate:
    """An account's rate limit, as one job's client's gate: a token before each call. The
    job's first call waits at most one interval for its token, else the job is throttled
    (put back until its turn, holding no slot); a later call, with the job's work under way,
    reserves its token up to MID_JOB_WAIT_S ahead and waits for it rather than start over."""

    def __init__(self, db: Database, key: str, per_min: float) -> None:
        self.db = db
        self.key = key  # the bucket: the channel, and the client for a client's own account
        self.per_min = per_min
        self.calls = 0

    async def before_call(self) -> None:
        ahead = interval_s(self.per_min) if self.calls == 0 else MID_JOB_WAIT_S
        take = await take_token(self.db, self.key, self.per_min, ahead_s=ahead)
        if not take.granted:
            after = turn_after(take.wait_s, self.per_min)
            raise Throttled("the account's rate limit has no token free", after=after)
        self.calls += 1
        if take.wait_s > 0:
            await asyncio.sleep(take.wait_s)

    async def rate_limited(self, retry_after_s: float) -> None:
        await hold_off(self.db, self.key, retry_after_s)


# An account as read: its client (None: no account) and its rate (None: unlimited).
Account = tuple[ProviderClient | None, float | None]


def global_sms(settings: Settings, http: httpx.AsyncClient) -> ProviderClient | None:
    """The global SMS account's client, of SMS_PROVIDER_KIND (None: not configured)."""
    timeout = settings.provider_timeout_s
    if settings.sms_provider_kind == "twilio":
        return TwilioSms(
            http,
            settings.twilio_api_url,
            settings.twilio_account_sid or "",
            settings.twilio_auth_token or "",
            settings.twilio_from or "",
            timeout,
        )
    if settings.sms_provider_url:
        return SmsClient(http, settings.sms_provider_url, settings.sms_provider_key, timeout)
    return None


def global_email(settings: Settings, http: httpx.AsyncClient) -> ProviderClient | None:
    """The global email account's client, of EMAIL_PROVIDER_KIND (None: not configured)."""
    timeout = settings.provider_timeout_s
    if settings.email_provider_kind == "resend":
        return ResendClient(
            http,
            settings.resend_api_url,
            settings.resend_api_key or "",
            settings.resend_from or "",
            timeout,
        )
    if not settings.email_provider_url:
        return None
    return EmailClient(http, settings.email_provider_url, settings.email_provider_key, timeout)


class Providers:
    """The process's provider clients: the global settings' ones, and clients' own accounts
    (read from the database, decrypted, kept for ACCOUNT_CACHE_S)."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient) -> None:
        self._settings = settings
        self._http = http
        timeout = settings.provider_timeout_s
        self.global_clients: dict[ProviderChannel, ProviderClient | None] = {
            "sms": global_sms(settings, http),
            "email": global_email(settings, http),
            "ai": AiClient(
                http, settings.ai_provider_url, settings.ai_provider_key, settings.ai_model, timeout
            )
            if settings.ai_provider_url
            else None,
        }
        self.global_rates: dict[ProviderChannel, float | None] = {
            "sms": settings.sms_rate_per_min,
            "email": settings.email_rate_per_min,
            "ai": settings.ai_rate_per_min,
        }
        self._cache: dict[tuple[str, str], tuple[float, Account]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> Providers:
        return cls(settings, http)

    async def client_for(
        self, db: Database, client_id: str | None, channel: ProviderChannel
    ) -> ProviderClient | None:
        """The client's own provider on this channel, else the global one (None: neither),
        gated by its account's rate when it has one."""
        own: Account = (None, None)
        if client_id is not None:
            now = time.monotonic()
            cached = self._cache.get((client_id, channel))
            if cached is not None and cached[0] > now:
                own = cached[1]
            else:
                own = await self._read(db, client_id, channel)
                if len(self._cache) >= MAX_CACHED_ACCOUNTS:
                    self._cache = {key: hit for key, hit in self._cache.items() if hit[0] > now}
                self._cache[(client_id, channel)] = (now + ACCOUNT_CACHE_S, own)
        if own[0] is not None:
            client, rate, bucket = own[0], own[1], f"{channel}:{client_id}"
        else:
            client, rate, bucket = self.global_clients[channel], self.global_rates[channel], channel
        if client is None or rate is None:
            return client
        return client.gated(BucketGate(db, bucket, rate))

    def forget(self, client_id: str, channel: ProviderChannel) -> None:
        """Read this account again on its next use (it was just changed in this process)."""
        self._cache.pop((client_id, channel), None)

    async def _read(self, db: Database, client_id: str, channel: ProviderChannel) -> Account:
        async with db.engine.connect() as conn:
            try:
                account = await load_account(conn, self._settings.encryption, client_id, channel)
            except AccountUnreadable as error:
                raise Transient(
                    channel, f"the client's account cannot be decrypted ({error})"
                ) from None
        if account is None:
            return None, None
        client = account.values.client(self._http, self._settings.provider_timeout_s)
        return client, account.values.rate_per_min


@dataclass(frozen=True)
class JobProviders:
    """The providers as a job sees them: the process's clients, read through its database."""

    providers: Providers
    db: Database

    async def sms_for(self, client_id: str | None) -> SmsProvider | None:
        client = await self.providers.client_for(self.db, client_id, "sms")
        return cast(SmsProvider | None, client)

    async def email_for(self, client_id: str | None) -> EmailProvider | None:
        client = await self.providers.client_for(self.db, client_id, "email")
        return cast(EmailProvider | None, client)

    async def ai_for(self, client_id: str | None) -> AiClient | None:
        return cast(AiClient | None, await self.providers.client_for(self.db, client_id, "ai"))


def providers(ctx: JobContext) -> JobProviders:
    return JobProviders(ctx.deps, ctx.db)


def require(client: T | None, name: str) -> T:
    if client is None:
        raise Discard(f"the {name} provider is not configured")
    return client


def job_handler(
    type: str,
    *,
    dedupe: DedupeScope,
    max_attempts: int = 5,
    timeout_s: float | None = None,
    priority: int = PRIORITY_DEFAULT,
    registry: Registry = registry,
) -> Callable[[HandlerFn], HandlerFn]:
    """Register a job handler with provider failures mapped onto the retry policy.

    Every handler goes through here, so none can forget the mapping: without it a 429 would
    be a plain failure (its Retry-After ignored) and a permanent 4xx retried to the last
    attempt.
    """

    def decorate(fn: HandlerFn) -> HandlerFn:
        mapped = provider_errors(fn)
        registry.register(Handler(type, mapped, dedupe, max_attempts, timeout_s, priority))
        return mapped

    return decorate


def provider_errors(
    fn: Callable[[JobContext], Awaitable[None]],
) -> Callable[[JobContext], Awaitable[None]]:
    """Map provider failures onto the queue's retry policy: 429 waits, 4xx gives up."""

    @functools.wraps(fn)
    async def wrapper(ctx: JobContext) -> None:
        try:
            await fn(ctx)
        except RateLimited as exc:
            raise RetryLater(str(exc), after=exc.retry_after) from None
        except Permanent as exc:
            raise Discard(str(exc)) from None
        except ProviderError as exc:
            raise RetryLater(str(exc)) from None

    return wrapper
