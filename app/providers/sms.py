"""Client for the SMS provider: a contact's message history, and sending."""

from __future__ import annotations

from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel

from app.providers.http import ProviderClient, SendResult, parse_model
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


class SmsClient(ProviderClient):
    """Calls the SMS provider's API with one shared httpx client."""

    provider = "sms"

    async def list_messages(self, contact_id: str, cursor: str | None = None) -> SmsPage:
        """Fetch one page of a contact's messages, starting at `cursor`."""
        data = await self._request(
            "GET",
            f"/contacts/{quote(contact_id, safe='')}/messages",
            params=None if cursor is None else {"cursor": cursor},
        )
        return parse_model(SmsPage, data, self.provider)

    async def send(self, contact_id: str, body: str, idempotency_key: str) -> str:
        """Send an SMS and return the provider's message id."""
        data = await self._request(
            "POST",
            "/messages",
            json={"contact_id": contact_id, "body": body},
            headers={"Idempotency-Key": idempotency_key},
        )
        return parse_model(SendResult, data, self.provider).id
