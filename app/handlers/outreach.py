"""Sending one message to a lead: the part follow-ups and reactivations share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from app.handlers.deps import providers, require
from app.handlers.store import StoredMessage
from app.providers import Permanent, ProviderError
from app.queue import Discard, JobContext


async def send_to_lead(
    ctx: JobContext,
    lead: Mapping[str, Any],
    channel: str,
    text: str,
    subject: str | None,
    mark_failed: Callable[[], Awaitable[None]],
) -> StoredMessage:
    """Send once: the job's dedupe key is the Idempotency-Key, the same on every attempt.

    A provider that refuses for good, or failing on the last attempt, marks the send failed
    (through `mark_failed`) before the error reaches the runner.
    """
    target = lead["sms_contact_id"] if channel == "sms" else lead["email_lead_id"]
    if not target:
        await mark_failed()
        raise Discard(f"the lead has no {channel} identity")
    key = ctx.job.dedupe_key
    try:
        if channel == "sms":
            message_id = await require(providers(ctx).sms, "sms").send(target, text, key)
        else:
            email = require(providers(ctx).email, "email")
            message_id = await email.send(target, subject or "", text, key)
    except ProviderError as error:
        if isinstance(error, Permanent) or ctx.job.attempt >= ctx.job.max_attempts:
            await mark_failed()
        raise
    except Discard:
        await mark_failed()
        raise
    return StoredMessage(channel, "outbound", text, message_id, datetime.now(UTC), subject)
