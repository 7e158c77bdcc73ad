"""The dashboard: one server-rendered page, plus the CSS and JavaScript it loads from /static.

The page itself holds no data and needs no token (the contract makes `GET /` public); the
script reads the API token from the address bar or a sign-in form and sends it as a bearer
token on every API call it makes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

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


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard(request: Request) -> HTMLResponse:
    # Behind a path prefix (root_path) the assets live under that prefix too.
    root = request.scope.get("root_path", "").rstrip("/")
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {"root": root, "version": ASSET_VERSION},
        headers=PAGE_HEADERS,
    )


def mount_static(app: FastAPI) -> None:
    """Serve app/static at /static (once, however often this is called)."""
    if any(getattr(route, "path", None) == "/static" for route in app.routes):
        return
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
