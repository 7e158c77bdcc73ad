"""The retry policy (backoff, RetryLater) and the handler registry, without a database."""

from __future__ import annotations

import pytest

from app.queue.registry import DuplicateHandler, Handler, Registry, UnknownJobType
from app.queue.retry import CAP_S, Discard, RetryLater, backoff_s

SAMPLES = 500
# The contract's jitter band: a retry lands within ±20 % of its nominal delay.
JITTER = 0.2


async def _noop(ctx) -> None:
    return None


@pytest.mark.parametrize(
    ("attempt", "nominal"),
    [
        (1, 1.0),
        (2, 2.0),
        (3, 4.0),
        (4, 8.0),
        (5, 16.0),
        (8, 128.0),
        (9, 256.0),
        (10, CAP_S),
        (30, CAP_S),
        (1000, CAP_S),  # a huge attempt number must neither overflow nor grow past the cap
    ],
)
def test_backoff_doubles_from_one_second_with_jitter_up_to_a_cap(attempt, nominal):
    expected = min(nominal, CAP_S)
    delays = [backoff_s(attempt) for _ in range(SAMPLES)]
    assert all(expected * (1 - JITTER) <= d <= expected * (1 + JITTER) for d in delays), (
        min(delays),
        max(delays),
    )
    # Jitter is real: retries of many jobs must not line up on the same instant.
    assert len(set(delays)) > SAMPLES // 2
    assert min(delays) < expected * 0.95 and max(delays) > expected * 1.05


def test_backoff_cap_is_sane():
    # Past Retry-After's 60 s, but a failing job must still get its attempts within the hour.
    assert 60 <= CAP_S <= 3600


def test_backoff_never_negative_or_zero():
    for attempt in range(0, 50):
        assert backoff_s(attempt) > 0


@pytest.mark.parametrize(
    ("after", "expected"), [(-5, 0.0), (-0.001, 0.0), (0, 0.0), (3, 3.0), (None, None)]
)
def test_retry_later_clamps_negative_delays(after, expected):
    error = RetryLater("rate limited", after=after)
    assert error.after == expected
    assert str(error) == "rate limited"


def test_retry_later_and_discard_are_plain_exceptions():
    assert issubclass(RetryLater, Exception)
    assert issubclass(Discard, Exception)
    assert RetryLater("x").after is None


def test_registry_refuses_a_second_handler_for_a_type():
    jobs = Registry()
    jobs.register(Handler("demo", _noop, "forever"))
    with pytest.raises(DuplicateHandler):
        jobs.register(Handler("demo", _noop, "active"))
    # The first registration stands.
    assert jobs.get("demo").dedupe == "forever"

    with pytest.raises(DuplicateHandler):
        jobs.handler("demo", dedupe="forever")(_noop)


def test_registry_decorator_registers_and_returns_the_function():
    jobs = Registry()
    decorated = jobs.handler("demo", dedupe="active", max_attempts=3, timeout_s=5)(_noop)
    assert decorated is _noop
    handler = jobs.get("demo")
    assert (handler.type, handler.fn, handler.dedupe) == ("demo", _noop, "active")
    assert (handler.max_attempts, handler.timeout_s) == (3, 5)
    assert "demo" in jobs
    assert jobs.types() == ["demo"]


def test_registry_default_max_attempts_is_five():
    jobs = Registry()
    jobs.handler("demo", dedupe="forever")(_noop)
    assert jobs.get("demo").max_attempts == 5


@pytest.mark.parametrize("max_attempts", [0, -1])
def test_registry_rejects_max_attempts_below_one(max_attempts):
    jobs = Registry()
    with pytest.raises(ValueError, match="max_attempts"):
        jobs.register(Handler("demo", _noop, "forever", max_attempts=max_attempts))
    with pytest.raises(ValueError, match="max_attempts"):
        jobs.handler("demo", dedupe="forever", max_attempts=max_attempts)(_noop)
    assert "demo" not in jobs


def test_registry_get_of_unknown_type_raises():
    jobs = Registry()
    with pytest.raises(UnknownJobType):
        jobs.get("nope")
    # Callers that treat it as a missing key keep working.
    assert issubclass(UnknownJobType, KeyError)
    assert "nope" not in jobs


CONTRACT_TYPES = {
    "conversation_sync": "active",
    "sync_all": "active",
    "email_inbound": "forever",
    "lead_scoring": "forever",
    "followups_tick": "forever",
    "reactivations_tick": "forever",
    "followup_send": "forever",
    "reactivation_send": "forever",
    # Step 10: a Twilio text and a Resend email.received, each kept once forever.
    "sms_inbound": "forever",
    "resend_inbound": "forever",
}


def test_global_registry_has_the_contract_job_types():
    import app.runtime  # noqa: F401  (registers the handlers and the queue's upkeep)
    from app.queue.registry import registry

    registered = set(registry.types())
    # prune_jobs is the queue's own upkeep, not a contract type.
    assert registered == set(CONTRACT_TYPES) | {"prune_jobs"}
    for type in registered - {"prune_jobs"}:
        scope = CONTRACT_TYPES[type]
        handler = registry.get(type)
        assert handler.dedupe == scope, type
        assert handler.max_attempts >= 1, type
        assert callable(handler.fn), type


def test_every_contract_handler_maps_provider_errors():
    import app.handlers  # noqa: F401  (registers the handlers)
    from app.queue.registry import registry

    for type in CONTRACT_TYPES:
        # job_handler registers the provider-error wrapper, never the bare function.
        assert hasattr(registry.get(type).fn, "__wrapped__"), type


async def _raise_from_provider(error: Exception) -> Exception:
    from app.handlers.deps import job_handler

    registry = Registry()

    @job_handler("probe", dedupe="forever", registry=registry)
    async def probe(ctx) -> None:
        raise error

    with pytest.raises((RetryLater, Discard)) as caught:
        await registry.get("probe").fn(None)
    return caught.value


async def test_a_429_from_a_provider_waits_its_retry_after():
    from app.providers import RateLimited

    raised = await _raise_from_provider(RateLimited("sms", retry_after=7.0))
    assert isinstance(raised, RetryLater) and raised.after == 7.0


async def test_a_permanent_4xx_from_a_provider_is_not_retried():
    from app.providers import Permanent

    raised = await _raise_from_provider(Permanent("email", "HTTP 403"))
    assert isinstance(raised, Discard)


async def test_a_transient_provider_error_is_retried_with_backoff():
    from app.providers import Transient

    raised = await _raise_from_provider(Transient("ai", "HTTP 503"))
    assert isinstance(raised, RetryLater) and raised.after is None
