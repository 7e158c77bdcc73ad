"""Text as Postgres can keep it.

Postgres' text (and jsonb) cannot hold NUL, and UTF-8 cannot carry a lone surrogate, which JSON
can still spell (`"\ud800"`). Text from callers and providers is kept with each such character
replaced by U+FFFD, never refused: refusing a webhook or failing a sync over one character
would lose everything else it carried.
"""

from __future__ import annotations

import re
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
