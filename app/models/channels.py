"""A lead's identity on each channel, which decides what can be synced or sent there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.models.api import CHANNELS


def identity(lead: Mapping[str, Any], channel: str) -> str | None:
    """Whether the lead can be reached on the channel: its SMS contact id or phone number, its
    email provider lead id or address. Which one counts is the provider's (its `address`)."""
    if channel == "sms":
        return lead.get("sms_contact_id") or lead.get("phone")
    return lead.get("email_lead_id") or lead.get("email")


def channels_of(lead: Mapping[str, Any], wanted: list[str] | None = None) -> list[str]:
    """The channels, in contract order, that were asked for and the lead has an identity on."""
    return [c for c in CHANNELS if (wanted is None or c in wanted) and identity(lead, c)]
