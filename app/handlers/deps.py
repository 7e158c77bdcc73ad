"""What handlers need from the app: one client per provider, built on the shared HTTP client."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from app.providers import AiClient, EmailClient, Permanent, ProviderError, RateLimited, SmsClient
from app.queue import Discard, JobContext, RetryLater
from app.queue.registry import DedupeScope, Handler, HandlerFn, Registry, registry
from app.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class Providers:
    sms: SmsClient | None
    email: EmailClient | None
    ai: AiClient | None

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.AsyncClient) -> Providers:
        timeout = settings.provider_timeout_s
        return cls(
            sms=SmsClient(http, settings.sms_provider_url, settings.sms_provider_key, timeout)
            if settings.sms_provider_url
            else None,
            email=EmailClient(
                http, settings.email_provider_url, settings.email_provider_key, timeout
            )
            if settings.email_provider_url
            else None,
            ai=AiClient(
                http, settings.ai_provider_url, settings.ai_provider_key, settings.ai_model, timeout
            )
            if settings.ai_provider_url
            else None,
        )


def providers(ctx: JobContext) -> Providers:
    return ctx.deps


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
    registry: Registry = registry,
) -> Callable[[HandlerFn], HandlerFn]:
    """Register a job handler with provider failures mapped onto the retry policy.

    Every handler goes through here, so none can forget the mapping: without it a 429 would
    be a plain failure (its Retry-After ignored) and a permanent 4xx retried to the last
    attempt.
    """

    def decorate(fn: HandlerFn) -> HandlerFn:
        mapped = provider_errors(fn)
        registry.register(Handler(type, mapped, dedupe, max_attempts, timeout_s))
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
