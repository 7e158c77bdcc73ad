"""Request bodies: read only once the caller is known, never past a size limit, parsed safely.

FastAPI reads and parses a route's JSON body before it runs the route's dependencies, so a
bearer check done as a dependency comes after the whole body is in memory. `guarded_router`
gives a router whose routes check their caller first (awaited: a client key is looked up in the
database), then read the body up to its limit (refusing as soon as the limit is passed, by
`Content-Length` or as it arrives), then hand it to FastAPI already read and parsed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from app.api.errors import ApiError

# Every JSON body is capped here unless its route needs more (BODY_LIMITS).
MAX_JSON_BODY = 1024 * 1024
BODY_LIMITS = {
    # Up to 1,000 leads, each with a name, an address and three ids.
    "/api/leads": 4 * 1024 * 1024,
    # Up to 50 steps of up to 5,000 characters each.
    "/api/followups": 2 * 1024 * 1024,
}

Check = Callable[[Request], Awaitable[None]]
Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def body_limit(path: str) -> int:
    return BODY_LIMITS.get(path, MAX_JSON_BODY)


def too_large(limit: int) -> ApiError:
    return ApiError(
        413, "payload_too_large", f"The body is over {limit // 1024 // 1024} MiB.", limit=limit
    )


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes whether declared or only seen arriving."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    return bytes(body)


def parse_json(body: bytes) -> Any:
    """The parsed body; ValueError when it is not JSON, 422 when it nests too deeply to parse."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ApiError(422, "invalid_json", "The body is nested too deeply.") from None


def guarded_router(check: Check, **kwargs: Any) -> APIRouter:
    """An APIRouter whose routes run `check` (raising ApiError to refuse) before reading a body."""

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handle = super().get_route_handler()
            reads_body = self.body_field is not None
            limit = body_limit(self.path)

            async def guarded(request: Request) -> Response:
                await check(request)
                if reads_body:
                    body = await read_capped(request, limit)
                    # Starlette's Request keeps what it has read here; FastAPI reads it back.
                    request._body = body
                    # Not JSON: FastAPI answers it as the contract's 422.
                    with contextlib.suppress(ValueError):
                        request._json = parse_json(body)
                return await handle(request)

            return guarded

    return APIRouter(route_class=GuardedRoute, **kwargs)
