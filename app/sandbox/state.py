"""What the sandbox providers remember: calls, sends and the faults tests ask for."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal, get_args

Provider = Literal["sms", "email", "ai"]
Kind = Literal["list", "send", "score"]
FaultMode = Literal["hang", "rate_limit", "error", "garbage", "drip", "accept_then_hang", "reset"]

_ID_PREFIX = {"sms": "sms", "email": "em"}


@dataclass
class Fault:
    """A misbehaviour applied to the next `remaining` matching calls (None: until cleared)."""

    provider: Provider
    mode: FaultMode
    remaining: int | None
    retry_after: int
    hang_s: float
    kind: Kind | None
    # Matching calls to let through untouched before the fault starts applying.
    skip: int = 0

    def matches(self, provider: str, kind: str) -> bool:
        """Whether this fault applies to a call of `kind` on `provider`."""
        return self.provider == provider and self.kind in (None, kind)


class SandboxState:
    """Shared by the sandbox app and the tests that drive it from another thread."""

    def __init__(self) -> None:
        # The sandbox serves from a server thread while tests read and arm faults from theirs.
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str]] = Counter()
        # When each call arrived (time.monotonic()), by provider and kind.
        self.arrivals: list[tuple[float, str, str]] = []
        self.sent: dict[str, dict] = {}
        self.extra_sms: dict[str, list[dict]] = {}
        self.extra_email: dict[str, list[dict]] = {}
        self.faults: list[Fault] = []

    def count(self, provider: str, kind: str) -> int:
        """How many calls of `kind` reached `provider`, faulty ones included."""
        with self._lock:
            return self.calls[(provider, kind)]

    def call_times(self, provider: str, kind: str) -> list[float]:
        """When each call of `kind` reached `provider`, on time.monotonic()'s clock."""
        with self._lock:
            return [t for t, p, k in self.arrivals if (p, k) == (provider, kind)]

    def add_fault(
        self,
        provider: Provider,
        mode: FaultMode,
        *,
        times: int | None = None,
        retry_after: int = 1,
        hang_s: float = 3600,
        kind: Kind | None = None,
        skip: int = 0,
    ) -> Fault:
        """Make the next `times` matching calls (every one when None) misbehave as `mode`."""
        if provider not in get_args(Provider):
            raise ValueError(f"unknown provider {provider!r}")
        if mode not in get_args(FaultMode):
            raise ValueError(f"unknown fault mode {mode!r}")
        if kind is not None and kind not in get_args(Kind):
            raise ValueError(f"unknown call kind {kind!r}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        fault = Fault(provider, mode, times, retry_after, hang_s, kind, skip)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Let every call behave again."""
        with self._lock:
            self.faults.clear()

    def reset(self) -> None:
        """Forget calls, sends, appended history and faults."""
        with self._lock:
            self.calls.clear()
            self.arrivals.clear()
            self.sent.clear()
            self.extra_sms.clear()
            self.extra_email.clear()
            self.faults.clear()

    def begin_call(self, provider: str, kind: str) -> Fault | None:
        """Count a call and consume the first fault armed for it, if any."""
        with self._lock:
            self.calls[(provider, kind)] += 1
            self.arrivals.append((time.monotonic(), provider, kind))
            for fault in self.faults:
                if fault.matches(provider, kind):
                    if fault.skip:
                        fault.skip -= 1
                        return None
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self.faults.remove(fault)
                    return fault
            return None

    def record_send(
        self, provider: str, key: str, target: str, content: dict[str, str], sent_at: str
    ) -> str | None:
        """Store a send once per idempotency key; None when the key came with other content."""
        record = {"provider": provider, "target": target, **content}
        with self._lock:
            previous = self.sent.get(key)
            if previous is not None:
                same = {name: value for name, value in previous.items() if name != "id"} == record
                return previous["id"] if same else None
            # Derived from the key so a replayed send gets the same id even after reset().
            digest = hashlib.sha256(key.encode()).hexdigest()[:16]
            message_id = f"{_ID_PREFIX[provider]}_out_{digest}"
            self.sent[key] = {**record, "id": message_id}
            history = self.extra_sms if provider == "sms" else self.extra_email
            history.setdefault(target, []).append(
                {"id": message_id, "direction": "outbound", **content, "sent_at": sent_at}
            )
            return message_id

    def extra_history(self, provider: str, target: str) -> list[dict]:
        """A snapshot of what was sent to `target` through the sandbox."""
        history = self.extra_sms if provider == "sms" else self.extra_email
        with self._lock:
            return list(history.get(target, []))
