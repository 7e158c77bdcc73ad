"""Values as Postgres can keep them: text and instants from callers and providers.

Postgres' text (and jsonb) cannot hold NUL, and UTF-8 cannot carry a lone surrogate, which JSON
can still spell (`"\ud800"`). Text from callers and providers is kept with each such character
replaced by U+FFFD, never refused: refusing a webhook or failing a sync over one character
would lose everything else it carried. An instant is kept in UTC; one that UTC cannot hold is an
invalid value at the boundary, not a job that fails forever.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: str) -> str:
    """The text with every character Postgres cannot store replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, value)


def clip_utf8(value: str, max_bytes: int, marker: str) -> tuple[str, bool]:
    """The text cut to at most `max_bytes` of UTF-8, ending with `marker` when it was cut."""
    # A character is at most 4 bytes: short text needs no encoding to know it fits.
    if len(value) * 4 <= max_bytes:
        return value, False
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= max_bytes:
        return value, False
    keep = max_bytes - len(marker.encode())
    return raw[:keep].decode("utf-8", "ignore") + marker, True


# A str field whose value is stored as given, less what Postgres cannot store.
StorableStr = Annotated[str, AfterValidator(storable)]


def as_utc(value: datetime) -> datetime:
    """The instant in UTC (a time without an offset is read as UTC); ValueError when UTC
    cannot hold it (`0001-01-01T00:00:00+14:00`)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range") from None


# A datetime field, in UTC, refused when out of range.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
