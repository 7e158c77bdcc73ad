"""Helpers for provider accounts: Fernet keys, sandbox accounts of their own, account bodies."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from cryptography.fernet import Fernet

from app.sandbox import SandboxState, create_sandbox_app
from tests.support import ServerThread


def fernet_key() -> str:
    return Fernet.generate_key().decode()


def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass(frozen=True)
class SandboxAccount:
    """A sandbox of its own on loopback, admitting one key: one provider account."""

    state: SandboxState
    base_url: str
    key: str

    def body(self, channel: str, **settings: Any) -> dict[str, Any]:
        """A PUT body pointing the channel at this sandbox with its key."""
        values: dict[str, Any] = {"url": f"{self.base_url}/{channel}", "key": self.key}
        if channel == "ai":
            values["model"] = "sandbox-model"
        return {"kind": "generic", "settings": {**values, **settings}}


@contextmanager
def sandbox_account() -> Iterator[SandboxAccount]:
    """A second (third, …) sandbox beside the tests' global one, with a key of its own."""
    state = SandboxState()
    key = f"acct-{secrets.token_urlsafe(18)}"
    with ServerThread(create_sandbox_app(state, key=key)) as server:
        yield SandboxAccount(state, server.base_url, key)


async def put_account(service, client_id: str, channel: str, body: dict[str, Any]) -> dict:
    response = await service.api.put(f"/api/clients/{client_id}/providers/{channel}", json=body)
    assert response.status_code == 200, response.text
    return response.json()
