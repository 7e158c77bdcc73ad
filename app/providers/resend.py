"""Resend (https://resend.com) as the email provider, held to its published API reference.

- send: `POST /emails` (from, to, subject, text) with `Idempotency-Key`, so a send whose answer
  was lost is repeated safely: Resend answers the first email's id again.
- history: received emails (`GET /emails/receiving`) and sent ones (`GET /emails`), each list
  paged with `limit`/`after` while `has_more`, matched to the lead by address (`from` of a
  received email, any `to` of a sent one). A received email's text is read with
  `GET /emails/receiving/{email_id}` (the list carries none).
- errors: Resend's body `{"statusCode", "name", "message"}` is classified by `name` (a fixed
  vocabulary, so it may be named in an error); its `message` is never repeated, as it can quote
  addresses.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Mapping
from email.utils import getaddresses, parseaddr
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, Field

from app.providers.email import EmailReply
from app.providers.errors import (
    MalformedResponse,
    Permanent,
    ProviderError,
    RateLimited,
    Transient,
)
from app.providers.http import (
    MAX_PAGES,
    ProviderClient,
    SendResult,
    parse_model,
    rate_limit_wait,
)
from app.storable import StorableStr, UtcDatetime

PROVIDER = "email"
DEFAULT_API_URL = "https://api.resend.com"
PAGE_LIMIT = 100
MAX_IDEMPOTENCY_KEY = 256

# Resend's documented error names (its API reference, "Errors"), and what each means here.
RETRYABLE_NAMES = frozenset(
    {
        "concurrent_idempotent_requests",  # the same key's first request is still running
        "daily_quota_exceeded",
        "application_error",
        "internal_server_error",
    }
)
KNOWN_NAMES = RETRYABLE_NAMES | {
    "invalid_idempotency_key",
    "validation_error",
    "missing_api_key",
    "restricted_api_key",
    "invalid_api_key",
    "not_found",
    "method_not_allowed",
    "invalid_idempotent_request",
    "invalid_attachment",
    "invalid_from_address",
    "invalid_access",
    "invalid_parameter",
    "invalid_region",
    "missing_required_field",
    "monthly_quota_exceeded",
    "rate_limit_exceeded",
    "security_error",
}


def resend_error(response: httpx.Response) -> ProviderError | None:
    """The error a Resend error body names, or None to map by status alone."""
    try:
        body = response.json()
    except ValueError:
        return None
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or name not in KNOWN_NAMES:
        return None
    status = response.status_code
    detail = f"HTTP {status} ({name})"
    if name == "monthly_quota_exceeded":
        return Permanent(PROVIDER, detail)  # not before next month: give the send up
    if name == "rate_limit_exceeded":
        return RateLimited(PROVIDER, rate_limit_wait(response.headers))
    if name in RETRYABLE_NAMES or status >= 500 or status == 408:
        return Transient(PROVIDER, detail)
    if status == 429:
        return RateLimited(PROVIDER, rate_limit_wait(response.headers))
    return Permanent(PROVIDER, detail)


class _Text(HTMLParser):
    """The text of an HTML body, for a received email that has no plain-text part."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


def address_of(value: str) -> str:
    """The bare, lower-cased address in `Name <a@b.c>` or `a@b.c`."""
    return parseaddr(value)[1].lower()


class ReceivedEmail(BaseModel):
    """`GET /emails/receiving/{email_id}`: the parts used here."""

    id: StorableStr = Field(min_length=1)
    from_: StorableStr = Field(alias="from")
    to: list[StorableStr] = []
    subject: StorableStr | None = None
    text: StorableStr | None = None
    html: StorableStr | None = None
    created_at: UtcDatetime

    @property
    def body(self) -> str:
        return self.text if self.text else html_text(self.html or "")


class _ListItem(BaseModel):
    id: StorableStr = Field(min_length=1)
    from_: StorableStr = Field("", alias="from")
    to: list[StorableStr] | StorableStr = []
    subject: StorableStr | None = None
    text: StorableStr | None = None
    html: StorableStr | None = None
    created_at: UtcDatetime

    @property
    def recipients(self) -> set[str]:
        values = [self.to] if isinstance(self.to, str) else self.to
        return {address.lower() for _, address in getaddresses(values) if address}


class _ListPage(BaseModel):
    """A Resend list: `{"object": "list", "has_more", "data"}`."""

    has_more: bool = False
    data: list[_ListItem]


def idempotency_key_for(key: str) -> str:
    """The key as Resend takes it (1 to 256 characters): a longer one is hashed."""
    if len(key) <= MAX_IDEMPOTENCY_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class ResendClient(ProviderClient):
    """Calls Resend's API with one shared httpx client; the lead's address is its `email`."""

    provider = PROVIDER

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        key: str,
        from_address: str,
        timeout_s: float,
    ) -> None:
        super().__init__(http, base_url, key, timeout_s)
        self.from_address = from_address

    def address(self, lead: Mapping[str, Any]) -> str | None:
        email = lead.get("email")
        return (address_of(email) or None) if email else None

    def _on_error(self, response: httpx.Response) -> ProviderError | None:
        return resend_error(response)

    async def send(
        self, address: str, subject: str, text: str, idempotency_key: str, *, retry: bool = False
    ) -> str:
        """Send one email; the Idempotency-Key makes a repeat (`retry`) answer the same id."""
        data = await self._request(
            "POST",
            "/emails",
            json={
                "from": self.from_address,
                "to": [address],
                "subject": subject,
                "text": text,
            },
            headers={"Idempotency-Key": idempotency_key_for(idempotency_key)},
        )
        return parse_model(SendResult, data, self.provider).id

    async def fetch_received(self, email_id: str) -> ReceivedEmail:
        """One received email, its text included."""
        data = await self._request("GET", f"/emails/receiving/{quote(email_id, safe='')}")
        return parse_model(ReceivedEmail, data, self.provider)

    async def _pages(self, path: str) -> AsyncIterator[list[_ListItem]]:
        """Every page of a Resend list, following `after` while `has_more`."""
        after: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {"limit": PAGE_LIMIT}
            if after is not None:
                params["after"] = after
            page = parse_model(_ListPage, await self._request("GET", path, params=params), PROVIDER)
            yield page.data
            if not page.has_more:
                return
            if not page.data:
                raise MalformedResponse(PROVIDER, "a page says it has more but holds none")
            after = page.data[-1].id
            if after in seen:
                raise MalformedResponse(PROVIDER, "the list cursor repeats")
            seen.add(after)
        raise MalformedResponse(PROVIDER, f"more than {MAX_PAGES} pages of emails")

    async def history(self, address: str) -> AsyncIterator[list[EmailReply]]:
        """The lead's received emails, then the ones sent to it, one list per page."""
        address = address.lower()
        async for items in self._pages("/emails/receiving"):
            batch = []
            for item in items:
                if address_of(item.from_) != address:
                    continue
                full = await self.fetch_received(item.id)
                batch.append(
                    EmailReply(
                        id=full.id,
                        direction="inbound",
                        subject=full.subject or "",
                        text=full.body,
                        sent_at=full.created_at,
                    )
                )
            yield batch
        async for items in self._pages("/emails"):
            yield [
                EmailReply(
                    id=item.id,
                    direction="outbound",
                    subject=item.subject or "",
                    text=item.text or html_text(item.html or ""),
                    sent_at=item.created_at,
                )
                for item in items
                if address in item.recipients
            ]
