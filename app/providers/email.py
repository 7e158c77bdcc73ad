"""Client for the email provider: a lead's reply history, and sending."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel

from app.providers.http import ProviderClient, SendResult, parse_model
from app.storable import StorableStr, UtcDatetime


class EmailReply(BaseModel):
    """One email in a lead's thread."""

    id: StorableStr
    direction: Literal["inbound", "outbound"]
    subject: StorableStr = ""
    text: StorableStr
    sent_at: UtcDatetime


class EmailPage(BaseModel):
    """One page of a lead's replies; `next_page` is None on the last page."""

    replies: list[EmailReply]
    next_page: int | None = None


class EmailClient(ProviderClient):
    """Calls the email provider's API with one shared httpx client."""

    provider = "email"

    async def list_replies(self, email_lead_id: str, page: int = 1) -> EmailPage:
        """Fetch one page (from 1) of a lead's replies."""
        data = await self._request(
            "GET",
            f"/leads/{quote(email_lead_id, safe='')}/replies",
            params={"page": page},
        )
        return parse_model(EmailPage, data, self.provider)

    def address(self, lead: Mapping[str, Any]) -> str | None:
        return lead.get("email_lead_id") or None

    async def send(
        self, lead_id: str, subject: str, text: str, idempotency_key: str, *, retry: bool = False
    ) -> str:
        """Send an email to a lead and return the provider's message id."""
        data = await self._request(
            "POST",
            "/replies",
            json={"lead_id": lead_id, "subject": subject, "text": text},
            headers={"Idempotency-Key": idempotency_key},
        )
        return parse_model(SendResult, data, self.provider).id
