"""Test helpers: a uvicorn server in a thread, URL tweaks, data builders, signed webhooks."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn
from standardwebhooks.webhooks import Webhook


class ServerThread:
    """uvicorn serving an ASGI app on 127.0.0.1 (a free port) from a thread of its own."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        for _ in range(1000):
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError("the server failed to start")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("the server did not start within 10 s")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def swap_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def gather_limited(limit: int, coros: list) -> list:
    """Run coroutines with at most `limit` in flight."""
    gate = asyncio.Semaphore(limit)

    async def one(coro):
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


def signed(
    secret: str, body: bytes, *, msg_id: str, at: datetime | None = None, prefix: str = "webhook"
) -> dict[str, str]:
    """Standard Webhooks headers for this body, as a sender would make them."""
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": signature,
        "content-type": "application/json",
    }


async def seed(service, client_id: str = "acme", leads: int = 3, **lead_fields: Any) -> list[str]:
    """A client and `leads` leads with an SMS and an email identity each; returns lead ids."""
    response = await service.api.post("/api/clients", json={"id": client_id, "name": "Acme"})
    assert response.status_code == 200, response.text
    ids = [f"{client_id}-lead-{i}" for i in range(leads)]
    if not ids:
        return ids
    body = {
        "client_id": client_id,
        "leads": [
            {
                "id": lid,
                "name": f"Lead {i}",
                "sms_contact_id": f"c-{lid}",
                "email_lead_id": f"e-{lid}",
                **lead_fields,
            }
            for i, lid in enumerate(ids)
        ],
    }
    response = await service.api.post("/api/leads", json=body)
    assert response.status_code == 200, response.text
    return ids


def assert_error(response: Any, status: int, code: str | None = None) -> dict:
    """The status and the contract's error body, {"error": str, "detail": str}, with no trace."""
    assert response.status_code == status, (str(response.request.url), response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    assert "Traceback" not in response.text
    if code is not None:
        assert body["error"] == code, body
    return body


async def wait_until_serving(service: Any, process: Any, why_exited: Any = None) -> None:
    """Poll a service process's /healthz until it answers; fail if the process exits first."""
    import httpx

    deadline = time.monotonic() + 30
    while True:
        try:
            if (await service.anon.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, why_exited() if why_exited else "the service process exited"
        assert time.monotonic() < deadline, "the service process did not start"
        await asyncio.sleep(0.05)


async def eventually(predicate, within_s: float, step_s: float = 0.05, what: str = "condition"):
    """Poll an async predicate until it holds; fail naming `what` after `within_s`."""
    deadline = time.monotonic() + within_s
    while not (value := await predicate()):
        assert time.monotonic() < deadline, f"{what}: not within {within_s} s"
        await asyncio.sleep(step_s)
    return value
