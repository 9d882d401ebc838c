"""Per-partner concurrency cap and circuit breaker, shared by every worker process through Redis.

A partner that keeps failing trips its breaker: further calls are not made (they come back as
transient, "circuit open") until the reset timeout lets one trial call through. The state is
visible to support and ops through `guard_status`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pybreaker
from django.conf import settings
from dramatiq.rate_limits import ConcurrentRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from config.metrics import events as metrics
from config.redis_client import redis_client
from partners.connectors.base import CallResult
from partners.models import Outcome, Partner

_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_lock = threading.Lock()


class _PartnerFailing(Exception):
    """Carries a failed result through pybreaker so that it counts as a failure."""

    def __init__(self, result: CallResult) -> None:
        super().__init__(result.error or result.outcome)
        self.result = result


@cache
def _limiter_backend() -> RedisBackend:
    return RedisBackend(client=redis_client())


class SharedBreaker(pybreaker.CircuitBreaker):
    """pybreaker's breaker (state in Redis), minus one trait: `CircuitBreaker.call` holds the
    breaker's lock for the whole guarded call, which would let only one thread per process talk
    to a partner at a time (a hung call would block every other). Here the lock covers only the
    state checks before and the bookkeeping after; the call itself runs unlocked. The states and
    their rules (open until the reset timeout, then one half-open trial) are pybreaker's own.
    """

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            state = self.state  # re-read from Redis: another process may have opened it
            if isinstance(state, pybreaker.CircuitOpenState):
                opened_at = self._state_storage.opened_at
                if opened_at and datetime.now(UTC) < opened_at + timedelta(seconds=self.reset_timeout):
                    raise pybreaker.CircuitBreakerError("Timeout not elapsed yet, circuit breaker still open")
                self.half_open()
                state = self.state
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            with self._lock:
                state._handle_error(exc)  # re-raises exc, or CircuitBreakerError when it trips
            raise
        with self._lock:
            state._handle_success()
        return result


def _namespace(partner: Partner) -> str:
    return f"{settings.PARTNER_GUARD_NAMESPACE}:{partner.code}"


def breaker_for(partner: Partner) -> pybreaker.CircuitBreaker:
    with _lock:
        breaker = _breakers.get(partner.code)
        if breaker is None:
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, redis_client(), namespace=f"{_namespace(partner)}:breaker"
            )
            breaker = SharedBreaker(
                fail_max=settings.PARTNER_BREAKER_FAIL_MAX,
                reset_timeout=settings.PARTNER_BREAKER_RESET_S,
                state_storage=storage,
                name=partner.code,
            )
            _breakers[partner.code] = breaker
        return breaker


def breaker_state_key(partner: Partner) -> str:
    """Where pybreaker keeps the partner's circuit state in Redis (`breaker_for`'s storage), for a
    reader that must not create a breaker to learn it (config.metrics)."""
    return f"{_namespace(partner)}:breaker:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:state"


def limiter_for(partner: Partner) -> ConcurrentRateLimiter:
    ttl_ms = int(max(60.0, (partner.connect_timeout_s + partner.read_timeout_s) * 3) * 1000)
    return ConcurrentRateLimiter(
        _limiter_backend(),
        f"{_namespace(partner)}:concurrency",
        limit=partner.max_concurrency,
        ttl=ttl_ms,
    )


def _counts_as_failure(result: CallResult) -> bool:
    # The partner misbehaving (timeouts, 5xx, dropped connections) trips the breaker; its own
    # throttling (429) and answers about our request (4xx, rejections) do not.
    return result.outcome in (Outcome.AMBIGUOUS, Outcome.TRANSIENT) and result.http_status != 429


def not_sent(reason: str, *, retry_after_s: float) -> CallResult:
    return CallResult(outcome=Outcome.TRANSIENT, error=reason, error_code=reason, retry_after_s=retry_after_s)


def guarded_call(partner: Partner, call: Callable[[], CallResult], *, operation: str = "call") -> CallResult:
    """Make `call` within the partner's concurrency cap and circuit breaker.

    When the cap is reached or the circuit is open, no call is made and the result is transient.
    Either way it is counted (config.metrics), under `operation`.
    """
    sent = False

    def sending() -> CallResult:
        nonlocal sent
        sent = True
        return call()

    result = _guarded_call(partner, sending)
    metrics.partner_call(partner=partner.code, operation=operation, result=result, sent=sent)
    return result


def _guarded_call(partner: Partner, call: Callable[[], CallResult]) -> CallResult:
    if not partner.enabled:
        return not_sent("partner_disabled", retry_after_s=settings.PARTNER_BREAKER_RESET_S)

    def checked() -> CallResult:
        result = call()
        if _counts_as_failure(result):
            raise _PartnerFailing(result)
        return result

    with limiter_for(partner).acquire(raise_on_failure=False) as acquired:
        if not acquired:
            return not_sent("concurrency_limit", retry_after_s=1.0)
        try:
            return breaker_for(partner).call(checked)
        except _PartnerFailing as failing:
            return failing.result
        except pybreaker.CircuitBreakerError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, _PartnerFailing):  # this very call tripped the breaker
                return cause.result
            return not_sent("circuit_open", retry_after_s=settings.PARTNER_BREAKER_RESET_S)


def guard_status(partner: Partner) -> dict[str, Any]:
    breaker = breaker_for(partner)
    in_flight = redis_client().get(f"{_namespace(partner)}:concurrency")
    opened_at = breaker._state_storage.opened_at
    return {
        "circuit": breaker.current_state,
        "fail_counter": breaker.fail_counter,
        "opened_at": opened_at.isoformat() if opened_at else None,
        "in_flight": int(in_flight or 0),
        "max_concurrency": partner.max_concurrency,
    }
