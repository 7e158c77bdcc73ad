"""The dashboard: one server-rendered page, plus the CSS and JavaScript it loads from /static.

The page itself holds no data and needs no token (the contract makes `GET /` public); the
script reads the API token or a client key from the address bar or a sign-in form and sends it
as a bearer token on every API call it makes. It calls only routes a client key may call too
(never /metrics or an API-token-only route), so with a key it shows that client alone, as the
API answers. The queue panel's chart is SVG the script draws itself, under the same policy.

What the page must know about the queue itself, the job statuses and the registered job types,
is rendered into it from here (the filters' options, the counts table's columns, and a JSON
block the script reads the statuses from), so the script keeps no copy of its own.

The script is a set of ES modules in app/static, loaded from `dashboard.js`. The page asks for
that entry and the stylesheet with `?v=<hash of app/static>`; the modules it imports are
fetched by their plain names, so those answers say `Cache-Control: no-cache` and a browser
checks them again (a cheap 304 while unchanged) instead of pairing a new entry with old ones.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import get_args
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.responses import Response
from starlette.types import Scope

from app.models.api import JobStatus
from app.queue.registry import registry

router = APIRouter(tags=["dashboard"])

APP_DIR = Path(__file__).resolve().parents[1]
STATIC_DIR = APP_DIR / "static"
templates = Jinja2Templates(directory=APP_DIR / "templates")

# The page is public and carries a token in its address on first load, so: scripts and
# styles only from this origin (no inline code for injected markup to run), no Referer
# that could carry `?token=` elsewhere, and no framing by other sites.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    # The address holds a token on first load; keep that response out of every cache.
    "Cache-Control": "no-store",
}


def _asset_version() -> str:
    """A short hash of the static files, so a deploy never pairs a new page with old assets."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.glob("*")):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


ASSET_VERSION = _asset_version()


def queue_terms() -> dict[str, list[str]]:
    """What the page needs to know about the queue: the API's job statuses, in the API's
    order, and every job type a handler is registered for (read per request, so a type
    registered after this module was imported is there too)."""
    return {"statuses": list(get_args(JobStatus)), "job_types": registry.types()}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(request: Request) -> HTMLResponse:
    # Behind a path prefix (root_path) the assets live under that prefix too.
    root = request.scope.get("root_path", "").rstrip("/")
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {"root": root, "version": ASSET_VERSION, **queue_terms()},
        headers=PAGE_HEADERS,
    )


class StaticAssets(StaticFiles):
    """app/static; a file asked for without `?v=` (a module another module imports) is to be
    checked with the server on every use, as its address does not change when it does."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "v" not in query and response.status_code in (200, 304):
            response.headers["Cache-Control"] = "no-cache"
        return response


def mount_static(app: FastAPI) -> None:
    """Serve app/static at /static (once, however often this is called)."""
    if any(getattr(route, "path", None) == "/static" for route in app.routes):
        return
    app.mount("/static", StaticAssets(directory=STATIC_DIR), name="static")
