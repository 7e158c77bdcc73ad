"""The one HTTP call every provider client makes, and the mapping of its failures."""

from __future__ import annotations

import asyncio
import copy
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, Self, TypeVar

import httpx
from pydantic import BaseModel, Field, ValidationError

from app import tracing
from app.metrics import PROVIDER_CALLS, status_class
from app.providers.errors import (
    MAX_RETRY_AFTER_S,
    MalformedResponse,
    Permanent,
    ProviderError,
    RateLimited,
    Transient,
)
from app.storable import StorableStr

DEFAULT_RETRY_AFTER_S = 1.0
# Guards against a provider whose pages never end: a history longer than this is an error.
MAX_PAGES = 10_000

Model = TypeVar("Model", bound=BaseModel)


class SendResult(BaseModel):
    """What a provider answers to a send."""

    id: StorableStr = Field(min_length=1)


def parse_retry_after(value: str | None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), within [0, 60]."""
    if value is None:
        return DEFAULT_RETRY_AFTER_S
    text = value.strip()
    try:
        seconds: float | None = float(text)
    except ValueError:
        seconds = _seconds_until(text)
    if seconds is None or math.isnan(seconds):
        return DEFAULT_RETRY_AFTER_S
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


# A Go-style duration as OpenAI's x-ratelimit-reset-* headers give it: "1s", "6m0s", "20ms",
# "1h2m3.5s". Each part is a number and a unit; the whole must be parts only.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
MAX_DURATION_CHARS = 64


def parse_duration(value: str | None) -> float | None:
    """Seconds in a duration like `6m0s`, `1s` or `20ms` (plain seconds too), or None when the
    value is not one."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > MAX_DURATION_CHARS:
        return None
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            return None
        seconds = sum(float(number) * _DURATION_UNIT_S[unit] for number, unit in parts)
    return None if math.isnan(seconds) or seconds < 0 else seconds


def rate_limit_wait(headers: httpx.Headers) -> float:
    """Seconds a 429 asks to wait: Retry-After when given; else the later of OpenAI's
    x-ratelimit-reset-requests and -tokens, or the `ratelimit-reset` seconds (Resend, the IETF
    draft); else the default. Within [0, 60]."""
    if headers.get("Retry-After") is not None:
        return parse_retry_after(headers.get("Retry-After"))
    resets = [
        parse_duration(headers.get(name))
        for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens", "ratelimit-reset")
    ]
    known = [seconds for seconds in resets if seconds is not None]
    if not known:
        return DEFAULT_RETRY_AFTER_S
    return min(max(known), MAX_RETRY_AFTER_S)


def _seconds_until(http_date: str) -> float | None:
    """Seconds from now until an HTTP-date, or None when it is not one."""
    try:
        when = parsedate_to_datetime(http_date)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - datetime.now(UTC)).total_seconds()


async def request_json(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    provider: str,
    timeout_s: float,
    json: Any = None,
    data: dict | None = None,
    params: dict | None = None,
    headers: dict | None = None,
    on_error: Callable[[httpx.Response], ProviderError | None] | None = None,
) -> Any:
    """Call a provider and return its JSON body, or raise the matching ProviderError.

    `headers` carry the authentication (ProviderClient adds its own); `data` is a form body.
    `on_error` may classify a non-2xx answer from its body (a vendor's error names or codes,
    never its message); when it returns None the status alone decides (`status_error`)."""
    # httpx's timeouts bound each read, so a body dripped one byte at a time never trips
    # them; asyncio.timeout bounds the whole call. Causes are dropped (`from None`) because
    # httpx errors can quote the URL, and the URL can hold a phone number.
    # The call's span (when tracing is on) names the host and path, never the query string.
    with tracing.provider_call(provider, method, url) as call:
        try:
            async with asyncio.timeout(timeout_s):
                response = await http.request(
                    method,
                    url,
                    json=json,
                    data=data,
                    params=params,
                    headers=headers,
                    timeout=timeout_s,
                )
        except (httpx.TimeoutException, TimeoutError):
            PROVIDER_CALLS.labels(provider, "timeout").inc()
            call.failed("timeout")
            raise Transient(provider, f"timed out after {timeout_s:g}s") from None
        except httpx.TransportError:
            PROVIDER_CALLS.labels(provider, "error").inc()
            call.failed("error")
            raise Transient(provider, "connection failed") from None
        except httpx.DecodingError:
            PROVIDER_CALLS.labels(provider, "error").inc()
            call.failed("error")
            raise MalformedResponse(provider, "undecodable response body") from None
        call.answered(response.status_code)

    status = response.status_code
    PROVIDER_CALLS.labels(provider, status_class(status)).inc()
    if 200 <= status < 300:
        try:
            return response.json()
        except ValueError:
            raise MalformedResponse(provider, "malformed JSON in response") from None
    raise (on_error(response) if on_error is not None else None) or status_error(provider, response)


def status_error(provider: str, response: httpx.Response, note: str | None = None) -> ProviderError:
    """The error an answer's status means: 429 waits, 408 and 5xx pass, other 4xx are for good.
    `note` (a vendor's error code, never its message) is added to the message."""
    status = response.status_code
    if status == 429:
        return RateLimited(provider, rate_limit_wait(response.headers))
    detail = f"HTTP {status}" if not note else f"HTTP {status} ({note})"
    if status == 408 or status >= 500:
        return Transient(provider, detail)
    return Permanent(provider, detail)


def parse_model(model: type[Model], data: Any, provider: str) -> Model:
    """Validate a provider's JSON into `model`, or raise MalformedResponse."""
    try:
        return model.model_validate(data)
    except ValidationError:
        # Dropped as cause: pydantic quotes the offending input, message text included.
        raise MalformedResponse(provider, "unexpected response shape") from None


class Gate(Protocol):
    """What a client asks before each call, and tells after a 429: an account's rate limit.
    It may raise to stop the call (its caller decides what that means)."""

    async def before_call(self) -> None: ...

    async def rate_limited(self, retry_after_s: float) -> None: ...


class ProviderClient:
    """Base of the provider clients: one shared httpx client, a base URL, a key, a bound, and
    optionally a gate every call passes."""

    provider: str
    _gate: Gate | None = None

    def __init__(self, http: httpx.AsyncClient, base_url: str, key: str, timeout_s: float) -> None:
        self._http = http
        # Paths below start with "/", so a base URL given with or without one joins cleanly.
        self._base_url = base_url.rstrip("/")
        self._key = key
        self._timeout_s = timeout_s

    def gated(self, gate: Gate) -> Self:
        """This client with every call passing `gate` (a copy: the original stays ungated)."""
        twin = copy.copy(self)
        twin._gate = gate
        return twin

    def _auth_headers(self) -> dict[str, str]:
        """The headers that authenticate a call: a bearer key unless the provider says other."""
        return {"Authorization": f"Bearer {self._key}"}

    def _on_error(self, response: httpx.Response) -> ProviderError | None:
        """The error a vendor's error body names, or None to map by status alone."""
        return None

    async def _request(
        self, method: str, path: str, *, headers: dict | None = None, **kwargs: Any
    ) -> Any:
        """Send one authenticated request to `path` under the base URL."""
        if self._gate is not None:
            await self._gate.before_call()
        try:
            return await request_json(
                self._http,
                method,
                self._base_url + path,
                provider=self.provider,
                timeout_s=self._timeout_s,
                headers={**(headers or {}), **self._auth_headers()},
                on_error=self._on_error,
                **kwargs,
            )
        except RateLimited as exc:
            if self._gate is not None:
                await self._gate.rate_limited(exc.retry_after)
            raise
