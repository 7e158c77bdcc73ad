"""The dashboard page (a plain placeholder for now)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>handoff</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>handoff</h1>
<p>The service is running. The API is described at <a href="/docs">/docs</a>.</p>
</body></html>
"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> str:
    return PAGE
