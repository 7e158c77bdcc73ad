"""The email channel's interface (EmailProvider), and the client for the contract's email API.

A provider is one file implementing EmailProvider: the generic client here, Resend in
app/providers/resend.py. Handlers know only the interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, Protocol
from urllib.parse import quote

from pydantic import BaseModel

from app.providers.errors import MalformedResponse
from app.providers.http import MAX_PAGES, ProviderClient, SendResult, parse_model
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


class EmailProvider(Protocol):
    """What the email jobs ask of a provider."""

    provider: str

    def address(self, lead: Mapping[str, Any]) -> str | None:
        """The lead's identity at this provider; None: the lead cannot be reached here."""
        ...

    def history(self, address: str) -> AsyncIterator[list[EmailReply]]:
        """Every page of the lead's thread to the end, one list per page; MalformedResponse
        when a page link repeats or past MAX_PAGES."""
        ...

    async def send(
        self, address: str, subject: str, text: str, idempotency_key: str, *, retry: bool = False
    ) -> str:
        """Send one email and return the provider's message id; `retry` is True when an
        earlier attempt of this send may have reached the provider."""
        ...


class EmailClient(ProviderClient):
    """Calls the contract's email API with one shared httpx client."""

    provider = "email"

    def address(self, lead: Mapping[str, Any]) -> str | None:
        return lead.get("email_lead_id") or None

    async def list_replies(self, email_lead_id: str, page: int = 1) -> EmailPage:
        """Fetch one page (from 1) of a lead's replies."""
        data = await self._request(
            "GET",
            f"/leads/{quote(email_lead_id, safe='')}/replies",
            params={"page": page},
        )
        return parse_model(EmailPage, data, self.provider)

    async def history(self, address: str) -> AsyncIterator[list[EmailReply]]:
        page_no = 1
        for _ in range(MAX_PAGES):
            page = await self.list_replies(address, page_no)
            yield page.replies
            if page.next_page is None:
                return
            if page.next_page <= page_no:
                raise MalformedResponse(self.provider, "the reply pages do not advance")
            page_no = page.next_page
        raise MalformedResponse(self.provider, f"more than {MAX_PAGES} pages of replies")

    async def send(
        self, address: str, subject: str, text: str, idempotency_key: str, *, retry: bool = False
    ) -> str:
        """Send an email to a lead and return the provider's message id (the Idempotency-Key
        makes a repeated send safe, so `retry` changes nothing)."""
        data = await self._request(
            "POST",
            "/replies",
            json={"lead_id": address, "subject": subject, "text": text},
            headers={"Idempotency-Key": idempotency_key},
        )
        return parse_model(SendResult, data, self.provider).id
