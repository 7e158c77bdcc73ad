"""Fixtures serving the sandbox in-process over ASGI, or on loopback from a server thread."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from app.sandbox import SandboxState, create_sandbox_app
from tests.support import ServerThread

KEY = "k"


@pytest.fixture
def state() -> SandboxState:
    return SandboxState()


@pytest.fixture
async def http(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    """A client wired straight into the sandbox app, base URL http://sandbox."""
    transport = httpx.ASGITransport(app=create_sandbox_app(state, key=KEY))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as client:
        yield client


@pytest.fixture
def loopback(state: SandboxState) -> Iterator[str]:
    """The sandbox's base URL on 127.0.0.1, served by uvicorn from a thread."""
    with ServerThread(create_sandbox_app(state, key=KEY)) as server:
        yield server.base_url
