"""Errors raised by the provider clients; the class alone decides retry or discard.

```
ProviderError            (base; .provider: str; the message is safe to store)
 ├── RateLimited         (.retry_after: float seconds, capped at 60) — 429
 ├── Transient           timeouts, connection errors, 5xx, 408
 │    └── MalformedResponse   invalid JSON or unexpected shape
 └── Permanent           other 4xx (401, 404, 409, 422 ...)
```

Messages read like "sms provider: HTTP 500" and end up in a job's `last_error`, so they
never carry the request path (contact ids can be phone numbers), a response body, message
text or a key.
"""

from __future__ import annotations

MAX_RETRY_AFTER_S = 60.0


class ProviderError(Exception):
    """A provider call failed; the message is safe to log and store."""

    def __init__(self, provider: str, detail: str) -> None:
        super().__init__(f"{provider} provider: {detail}")
        self.provider = provider


class RateLimited(ProviderError):
    """The provider answered 429; retry after `retry_after` seconds."""

    def __init__(self, provider: str, retry_after: float) -> None:
        self.retry_after = min(max(retry_after, 0.0), MAX_RETRY_AFTER_S)
        super().__init__(provider, f"rate limited (retry after {self.retry_after:g}s)")


class Transient(ProviderError):
    """A failure that may pass: timeout, connection trouble, 408 or 5xx."""


class MalformedResponse(Transient):
    """The provider answered success with a body we cannot read."""


class Permanent(ProviderError):
    """A 4xx other than 408 and 429: repeating the same call cannot succeed."""
