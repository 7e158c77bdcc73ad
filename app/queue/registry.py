"""Handlers by job type, each with its attempts, timeout and dedupe scope."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from app.queue.job import JobContext

DedupeScope = Literal["active", "forever"]

# A job's priority: lower runs first, within its client's turn. Work a person or a provider
# event started runs at PRIORITY_DEFAULT; bulk work (a fan-out) is enqueued at PRIORITY_BULK.
PRIORITY_DEFAULT = 0
PRIORITY_BULK = 5
PRIORITY_MAX = 9
HandlerFn = Callable[[JobContext], Awaitable[None]]


class DuplicateHandler(ValueError):
    """A job type may have one handler only."""


class UnknownJobType(KeyError):
    """No handler is registered for this job type."""


@dataclass(frozen=True)
class Handler:
    type: str
    fn: HandlerFn
    # "active": one job per key while pending or running; "forever": one job per key, ever.
    dedupe: DedupeScope
    max_attempts: int = 5
    # None means JOB_TIMEOUT_S; a smaller value tightens it, a larger one is capped by it.
    timeout_s: float | None = None
    # The priority its jobs get unless the enqueue names another.
    priority: int = PRIORITY_DEFAULT


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, handler: Handler) -> None:
        if handler.type in self._handlers:
            raise DuplicateHandler(f"a handler for {handler.type!r} is already registered")
        if handler.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 <= handler.priority <= PRIORITY_MAX:
            raise ValueError(f"priority must be between 0 and {PRIORITY_MAX}")
        self._handlers[handler.type] = handler

    def handler(
        self,
        type: str,
        *,
        dedupe: DedupeScope,
        max_attempts: int = 5,
        timeout_s: float | None = None,
        priority: int = PRIORITY_DEFAULT,
    ) -> Callable[[HandlerFn], HandlerFn]:
        """Decorator: register `fn` as the handler of `type`."""

        def decorate(fn: HandlerFn) -> HandlerFn:
            self.register(Handler(type, fn, dedupe, max_attempts, timeout_s, priority))
            return fn

        return decorate

    def get(self, type: str) -> Handler:
        try:
            return self._handlers[type]
        except KeyError:
            raise UnknownJobType(type) from None

    def __contains__(self, type: object) -> bool:
        return type in self._handlers

    def types(self) -> list[str]:
        return sorted(self._handlers)


registry = Registry()
handler = registry.handler
