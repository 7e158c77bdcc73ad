"""Named SQL for the queue, loaded once from queries.sql (`-- name --` blocks, $n parameters)."""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"^-- (\w+) --$", re.MULTILINE)


def _load() -> dict[str, str]:
    source = (Path(__file__).parent / "queries.sql").read_text()
    parts = _BLOCK.split(source)[1:]
    return {name: body.strip() for name, body in zip(parts[::2], parts[1::2], strict=True)}


QUERIES = _load()
