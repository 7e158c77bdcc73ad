"""The SMS channel's interface, and the client for the contract's own SMS API.

`SmsProvider` is what the handlers call; each provider is one class implementing it (the
contract's API here, Twilio in app/providers/twilio.py), so another provider is another file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import quote

from pydantic import BaseModel

from app.providers.errors import MalformedResponse
from app.providers.http import MAX_PAGES, ProviderClient, SendResult, parse_model
from app.storable import StorableStr, UtcDatetime


class SmsMessage(BaseModel):
    """One SMS in a contact's history."""

    id: StorableStr
    direction: Literal["inbound", "outbound"]
    body: StorableStr
    sent_at: UtcDatetime


class SmsPage(BaseModel):
    """One page of a contact's history; `next_cursor` is None on the last page."""

    messages: list[SmsMessage]
    next_cursor: str | None = None


class SmsProvider(Protocol):
    """What the handlers need from an SMS provider."""

    provider: str  # "sms": the metrics label and error prefix

    def address(self, lead: Mapping[str, Any]) -> str | None:
        """The lead's identity at this provider; None when the lead cannot be reached here."""
        ...

    def history(self, address: str) -> AsyncIterator[list[SmsMessage]]:
        """Every page of the conversation, one list per page, to the end; MalformedResponse
        when a cursor or page link repeats or past MAX_PAGES (never a loop)."""
        ...

    async def send(
        self, address: str, body: str, idempotency_key: str, *, retry: bool = False
    ) -> str:
        """Send and return the provider's message id. `retry`: an earlier attempt of this send
        may have reached the provider, so one without idempotency keys looks first."""
        ...


class SmsClient(ProviderClient):
    """The contract's SMS API (the sandbox speaks it), on one shared httpx client."""

    provider = "sms"

    def address(self, lead: Mapping[str, Any]) -> str | None:
        return lead.get("sms_contact_id") or None

    async def list_messages(self, contact_id: str, cursor: str | None = None) -> SmsPage:
        """Fetch one page of a contact's messages, starting at `cursor`."""
        data = await self._request(
            "GET",
            f"/contacts/{quote(contact_id, safe='')}/messages",
            params=None if cursor is None else {"cursor": cursor},
        )
        return parse_model(SmsPage, data, self.provider)

    async def history(self, address: str) -> AsyncIterator[list[SmsMessage]]:
        cursor: str | None = None
        seen: set[str | None] = set()
        for _ in range(MAX_PAGES):
            page = await self.list_messages(address, cursor)
            yield page.messages
            seen.add(cursor)
            cursor = page.next_cursor
            if cursor is None:
                return
            if cursor in seen:
                raise MalformedResponse(self.provider, "the message cursor repeats")
        raise MalformedResponse(self.provider, f"more than {MAX_PAGES} pages of messages")

    async def send(
        self, address: str, body: str, idempotency_key: str, *, retry: bool = False
    ) -> str:
        """Send an SMS and return the provider's message id (the Idempotency-Key makes a
        repeated attempt safe, so `retry` changes nothing here)."""
        data = await self._request(
            "POST",
            "/messages",
            json={"contact_id": address, "body": body},
            headers={"Idempotency-Key": idempotency_key},
        )
        return parse_model(SendResult, data, self.provider).id
