"""A real HTTP server on loopback answering from a table of canned responses, recording every
request: the vendor fixtures of the adapter tests go through real sockets and httpx."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.support import ServerThread

Answer = tuple[int, Any, dict[str, str]]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class FixtureServer:
    base_url: str = ""
    # (method, path) -> a function of the request's query giving (status, body, headers).
    routes: dict[tuple[str, str], Callable[[dict[str, str]], Answer]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def on(self, method: str, path: str, answer: Callable[[dict[str, str]], Answer]) -> None:
        self.routes[(method, path)] = answer

    def answer(self, method: str, path: str, status: int, body: Any, **headers: str) -> None:
        self.on(method, path, lambda query: (status, body, headers))

    def requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if (s.method, s.path) == (method, path)]


def make_app(server: FixtureServer) -> Starlette:
    async def handle(request: Request) -> Response:
        raw = await request.body()
        server.seen.append(
            Seen(
                request.method,
                request.url.path,
                dict(request.query_params),
                dict(request.headers),
                json.loads(raw) if raw else None,
            )
        )
        route = server.routes.get((request.method, request.url.path))
        if route is None:
            return Response(status_code=599)
        status, body, headers = route(dict(request.query_params))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return Response(content, status, headers=headers, media_type="application/json")

    return Starlette(
        routes=[Route("/{path:path}", handle, methods=["GET", "POST", "PUT", "DELETE"])]
    )


@pytest.fixture
def fixture_server() -> Iterator[FixtureServer]:
    server = FixtureServer()
    with ServerThread(make_app(server)) as thread:
        server.base_url = thread.base_url
        yield server
