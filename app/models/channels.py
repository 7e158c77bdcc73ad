"""A lead's identity on each channel, which decides what can be synced or sent there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.models.api import CHANNELS


def identity(lead: Mapping[str, Any], channel: str) -> str | None:
    """The lead's id at the channel's provider: its SMS contact, or its email provider lead."""
    return lead["sms_contact_id"] if channel == "sms" else lead["email_lead_id"]


def channels_of(lead: Mapping[str, Any], wanted: list[str] | None = None) -> list[str]:
    """The channels, in contract order, that were asked for and the lead has an identity on."""
    return [c for c in CHANNELS if (wanted is None or c in wanted) and identity(lead, c)]
