"""Synthetic conversations and scores: the same input always yields the same output.

Each history has 3 + (sha256 of the id % 10) messages, alternating inbound and outbound
(inbound first), spread over the 30 days before ANCHOR, so tests can predict every page.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

# Fixed rather than "now" so that histories, and the tests that page through them, never drift.
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)
SPAN_S = 30 * 24 * 3600

_INBOUND = (
    "Hi, is this still available?",
    "Can you tell me more about pricing?",
    "Thanks, I will think about it.",
    "What times do you have next week?",
    "Could you send me the details again?",
    "We are comparing a few options right now.",
    "Sounds good, what is the next step?",
)
_OUTBOUND = (
    "Happy to help, here is a quick overview.",
    "We have openings on Tuesday and Thursday.",
    "Just checking in on our last conversation.",
    "I have attached the details you asked for.",
    "Let me know if a short call would be easier.",
    "Thanks for getting back to us.",
)
_REASONS = {
    1: "No sign of interest in the latest message.",
    2: "Some interest, but no clear next step.",
    3: "Asked about pricing or timing.",
    4: "Ready to talk and asking for the next step.",
}
_TOPICS = (
    "Your enquiry",
    "Pricing for the starter plan",
    "Scheduling a demo",
    "Following up on our call",
    "Questions about onboarding",
)


def _digest(value: str) -> str:
    """Hex sha256, stable across processes unlike hash()."""
    return hashlib.sha256(value.encode()).hexdigest()


def _pick(options: tuple[str, ...], seed: str) -> str:
    """A deterministic choice among `options`."""
    return options[int(_digest(seed)[:8], 16) % len(options)]


def _timeline(owner_id: str) -> tuple[str, list[tuple[int, str, str]]]:
    """The id's digest prefix and its (index, direction, sent_at) entries, oldest first."""
    digest = _digest(owner_id)
    count = 3 + int(digest, 16) % 10
    start = ANCHOR - timedelta(seconds=SPAN_S)
    entries = []
    for index in range(count):
        sent_at = start + timedelta(seconds=SPAN_S * (index + 1) // (count + 1))
        direction = "inbound" if index % 2 == 0 else "outbound"
        entries.append((index, direction, iso(sent_at)))
    return digest[:10], entries


def _line(direction: str, seed: str) -> str:
    """A synthetic sentence fitting the message's direction."""
    return _pick(_INBOUND if direction == "inbound" else _OUTBOUND, seed)


def iso(moment: datetime) -> str:
    """An aware datetime as the providers write it: ISO 8601 in UTC with a Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sms_history(contact_id: str) -> list[dict]:
    """The synthetic SMS history of a contact, oldest first."""
    prefix, entries = _timeline(contact_id)
    return [
        {
            "id": f"sms_{prefix}_{index}",
            "direction": direction,
            "body": _line(direction, f"sms:{contact_id}:{index}"),
            "sent_at": sent_at,
        }
        for index, direction, sent_at in entries
    ]


def email_history(lead_id: str) -> list[dict]:
    """The synthetic email thread of a lead, oldest first."""
    prefix, entries = _timeline(lead_id)
    topic = _pick(_TOPICS, f"topic:{lead_id}")
    return [
        {
            "id": f"em_{prefix}_{index}",
            "direction": direction,
            "subject": topic if index == 0 else f"Re: {topic}",
            "text": _line(direction, f"email:{lead_id}:{index}"),
            "sent_at": sent_at,
        }
        for index, direction, sent_at in entries
    ]


def ai_score(text: str) -> dict:
    """The sandbox model's verdict on a user message: a score of 1..4 fixed by its hash."""
    score = int(_digest(text), 16) % 4 + 1
    return {"score": score, "reason": _REASONS[score]}
