"""Twilio's Messages resource (API 2010-04-01) as an SmsProvider.

- History: `GET /2010-04-01/Accounts/{AccountSid}/Messages.json`, once filtered `To` the lead
  and once `From` the lead, `PageSize` per page, following `next_page_uri` to the end. A page
  link seen twice, one that leaves the account's Messages list, or more than MAX_PAGES pages
  ends the sync with MalformedResponse. Messages are stored by SID; Twilio's `inbound` is
  inbound, its `outbound-api`, `outbound-call` and `outbound-reply` are outbound.
- Sends: `POST .../Messages.json`, form-encoded `To`, `Body` and `From` (an E.164 number or
  sender id) or `MessagingServiceSid` (a sender starting `MG`). Twilio takes no idempotency
  key, so a send that may have reached Twilio before (`retry=True`) first lists the messages to
  the lead from this sender sent within RETRY_LOOKBACK, and the newest page whether sent yet or
  not, and answers the SID of one with the same body rather than send it again.
- Errors: Twilio's body (`code`, `message`, `more_info`, `status`) is read for its numeric code
  alone; the message and link are never quoted.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field

from app.providers.errors import MalformedResponse, ProviderError
from app.providers.http import MAX_PAGES, ProviderClient, parse_model, status_error
from app.providers.sms import SmsMessage

DEFAULT_API_URL = "https://api.twilio.com"
PAGE_SIZE = 50
# How far back a retried send looks for its earlier attempt: far past the retry policy's
# longest wait between attempts, short enough that last week's identical text is not taken
# for this one.
RETRY_LOOKBACK = timedelta(days=2)
# Statuses of a message Twilio took but will never deliver: a send to retry, not a send made.
NOT_SENT = frozenset({"failed", "canceled"})


class TwilioMessage(BaseModel):
    """The fields of Twilio's Message resource this adapter reads."""

    model_config = ConfigDict(populate_by_name=True)

    sid: str = Field(min_length=1)
    direction: str | None = None
    body: str | None = None
    to: str | None = None
    from_: str | None = Field(None, alias="from")
    status: str | None = None
    date_sent: str | None = None
    date_created: str | None = None


class TwilioPage(BaseModel):
    """One page of Twilio's Messages list."""

    messages: list[TwilioMessage]
    next_page_uri: str | None = None


class TwilioError(BaseModel):
    """Twilio's error body; only its numeric code is ever repeated."""

    code: int | None = None
    status: int | None = None


def rfc2822(value: str | None) -> datetime | None:
    """Twilio's dates (`Thu, 24 Aug 2023 05:01:45 +0000`) as aware datetimes."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def as_sms(message: TwilioMessage) -> SmsMessage:
    """A Twilio message as the SMS history stores it."""
    sent_at = rfc2822(message.date_sent) or rfc2822(message.date_created)
    if sent_at is None:
        raise MalformedResponse("sms", "a message without a readable date")
    direction = "inbound" if message.direction == "inbound" else "outbound"
    return SmsMessage(id=message.sid, direction=direction, body=message.body or "", sent_at=sent_at)


class TwilioSms(ProviderClient):
    """Twilio's Messages API for one account (basic auth: account SID and auth token) and one
    sender (`From` number, or a Messaging Service SID `MG…`)."""

    provider = "sms"

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        account_sid: str,
        auth_token: str,
        sender: str,
        timeout_s: float,
        *,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__(http, base_url, auth_token, timeout_s)
        self.account_sid = account_sid
        self.sender = sender
        self.page_size = page_size
        self._list_path = f"/2010-04-01/Accounts/{quote(account_sid, safe='')}/Messages.json"

    def _auth_headers(self) -> dict[str, str]:
        pair = f"{self.account_sid}:{self._key}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    def _on_error(self, response: httpx.Response) -> ProviderError | None:
        try:
            error = TwilioError.model_validate(response.json())
        except ValueError:  # not JSON, or not Twilio's shape (pydantic's error is one)
            return None
        if error.code is None:
            return None
        return status_error(self.provider, response, f"Twilio error {error.code}")

    @property
    def uses_service(self) -> bool:
        """Whether the sender is a Messaging Service rather than a number."""
        return self.sender.startswith("MG")

    def address(self, lead: Mapping[str, Any]) -> str | None:
        return lead.get("phone") or None

    async def _pages(self, params: dict[str, str]) -> AsyncIterator[list[TwilioMessage]]:
        """Every page of one filtered listing, following `next_page_uri` to the end."""
        path: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            if path is None:
                data = await self._request(
                    "GET", self._list_path, params={**params, "PageSize": str(self.page_size)}
                )
            else:
                data = await self._request("GET", path)
            page = parse_model(TwilioPage, data, self.provider)
            yield page.messages
            following = page.next_page_uri
            if not following:
                return
            # The link is followed with the account's credentials: only within its own list.
            if following.partition("?")[0] != self._list_path:
                raise MalformedResponse(self.provider, "a page link leaves the messages list")
            if following in seen:
                raise MalformedResponse(self.provider, "a page link repeats")
            seen.add(following)
            path = following
        raise MalformedResponse(self.provider, f"more than {MAX_PAGES} pages of messages")

    async def history(self, address: str) -> AsyncIterator[list[SmsMessage]]:
        """Messages to the lead, then messages from the lead (Twilio ANDs its filters)."""
        for side in ("To", "From"):
            async for page in self._pages({side: address}):
                yield [as_sms(message) for message in page]

    async def send(
        self, address: str, body: str, idempotency_key: str, *, retry: bool = False
    ) -> str:
        """Send `body` to `address` and return the message SID; with `retry`, first answer the
        SID of the earlier attempt's message if Twilio has it."""
        if retry:
            earlier = await self.find_sent(address, body)
            if earlier is not None:
                return earlier
        form = {"To": address, "Body": body}
        form["MessagingServiceSid" if self.uses_service else "From"] = self.sender
        data = await self._request("POST", self._list_path, data=form)
        return parse_model(TwilioMessage, data, self.provider).sid

    async def find_sent(self, address: str, body: str) -> str | None:
        """The SID of a message with this body to `address` from this sender within
        RETRY_LOOKBACK (one not sent yet included), or None."""
        since = datetime.now(UTC) - RETRY_LOOKBACK
        filters = {"To": address}
        if not self.uses_service:
            filters["From"] = self.sender
        dated = {**filters, "DateSent>": since.strftime("%Y-%m-%dT%H:%M:%SZ")}
        async for page in self._pages(dated):
            found = _match(page, body, since)
            if found is not None:
                return found
        # A message still queued has no date_sent, which the DateSent filter leaves out: the
        # newest page of the undated listing holds it.
        async for page in self._pages(filters):
            return _match(page, body, since)
        return None


def _match(page: list[TwilioMessage], body: str, since: datetime) -> str | None:
    for message in page:
        if message.body != body or message.direction == "inbound" or message.status in NOT_SENT:
            continue
        created = rfc2822(message.date_created) or rfc2822(message.date_sent)
        if created is not None and created >= since:
            return message.sid
    return None
