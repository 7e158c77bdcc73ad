"""Tracing's front: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set, and then OpenTelemetry.

This module imports no OpenTelemetry: with the endpoint unset (or the `otel` extra missing)
every function here is a check of one module global. `setup` imports app.otel, which holds
the OpenTelemetry side, and plugs it into the queue's hooks (app/queue/hooks.py):

- an enqueue stores the current trace's `traceparent` with the job it creates;
- each attempt is a span linked to it (a link, not a parent: a job may wait hours);
- provider calls (`provider_call`) are the attempt's child spans;
- a runner invocation (`drain`) is a span of its own, with its summary.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.queue.runner import DrainSummary, Runner
    from app.settings import Settings

log = logging.getLogger("handoff.tracing")

# app.otel's Tracing once `setup` turned tracing on; None while it is off.
_tracing: Any = None


def enabled() -> bool:
    return _tracing is not None


def setup(settings: Settings, *, exporter: Any = None) -> Any:
    """Turn tracing on when OTEL_EXPORTER_OTLP_ENDPOINT is set (or an exporter is given, as the
    tests give one); the TracerProvider, or None when tracing stays off. Once on, later calls
    return the same provider."""
    global _tracing
    if _tracing is not None:
        return _tracing.provider
    if exporter is None and not settings.otel_exporter_otlp_endpoint:
        return None
    # The standard switch that turns the SDK off whatever else is set.
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    try:
        from app import otel
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed "
            "(pip install 'handoff[otel]'): no traces are exported"
        )
        return None
    _tracing = otel.Tracing(settings, exporter)
    return _tracing.provider


def shutdown() -> None:
    """Export what is left and turn tracing off (the tests turn it on and off)."""
    global _tracing
    if _tracing is not None:
        _tracing.close()
        _tracing = None


def fastapi_telemetry() -> dict[str, Any] | None:
    """The app's `FastAPI(telemetry=…)`: FastAPI traces each request on handoff's provider."""
    if _tracing is None:
        return None
    return {
        "tracer_provider": _tracing.provider,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
    }


async def drain(runner: Runner, budget_s: float) -> DrainSummary:
    """`runner.drain(budget_s)`, inside a span of the invocation when tracing is on."""
    if _tracing is None:
        return await runner.drain(budget_s)
    return await _tracing.drain(runner, budget_s)


class _NoCall:
    """A provider call's span while tracing is off: does nothing."""

    def __enter__(self) -> _NoCall:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def answered(self, status: int) -> None:
        pass

    def failed(self, outcome: str) -> None:
        pass


_NO_CALL = _NoCall()


def provider_call(provider: str, method: str, url: str) -> Any:
    """A context manager around one provider call: a client span when tracing is on. Its
    `answered(status)` or `failed(outcome)` says how the call went."""
    if _tracing is None:
        return _NO_CALL
    return _tracing.provider_call(provider, method, url)
