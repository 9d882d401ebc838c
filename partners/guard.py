"""Per-partner concurrency cap and circuit breaker, shared by every worker process through Redis.

A partner that keeps failing trips its breaker: further calls are not made (they come back as
transient, "circuit open") until the reset timeout lets one trial call through. The state is
visible to support and ops through `guard_status`.

The cap is a set of leases, one per call in flight (`slot`): a call takes a lease before it is
made and gives it back after, and a lease that is never given back (its process killed mid-call)
runs out by itself (`lease_s`), whatever traffic the partner has meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pybreaker
import redis
from django.conf import settings
from redis.commands.core import Script

from config.metrics import events as metrics
from config.redis_client import redis_client
from partners.connectors.base import CallResult
from partners.connectors.http import longest_call_s
from partners.models import Outcome, Partner

logger = logging.getLogger("partners.guard")

_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_lock = threading.Lock()


class GuardUnavailable(redis.RedisError):
    """Redis did not answer when a call would take its slot: the call was not made."""


# A call its guard did not let through for want of Redis (`GuardUnavailable`).
GUARD_UNAVAILABLE = "guard_unavailable"


class _PartnerFailing(Exception):
    """Carries a failed result through pybreaker so that it counts as a failure."""

    def __init__(self, result: CallResult) -> None:
        super().__init__(result.error or result.outcome)
        self.result = result


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


# The partner's calls in flight: a sorted set of leases, each a holder's token scored with the
# moment its lease runs out (milliseconds, Redis's clock). In one script, so that counting and
# taking cannot interleave between processes: drop the leases that ran out, count the rest, and
# take one when fewer than the limit are held (an empty token only counts). The key lives as
# long as its longest lease. Redis's own clock (TIME) is the one clock every process shares.
_SLOTS_LUA = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local held = redis.call('ZCARD', KEYS[1]) + math.max(0, tonumber(redis.call('GET', KEYS[2]) or '0'))
if ARGV[2] == '' or held >= tonumber(ARGV[1]) then
    return {0, held}
end
redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[3]), ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[1], math.ceil(tonumber(last[2])))
return {1, held + 1}
"""

# The guard's own Redis round trips around a call (the breaker's reads before it and writes
# after, each within the client's socket timeout of at most 5 s), with room to spare.
LEASE_MARGIN_S = 30.0


def lease_s(partner: Partner) -> float:
    """How long a call's slot is held at most: the longest a call to the partner can last
    (`longest_call_s`: every connect attempt timing out, then the read timeouts of the headers
    and of the body) plus `LEASE_MARGIN_S`. Never shorter than a live call, or one call too many
    would go through; no longer, since a slot whose holder was killed comes back only then."""
    return longest_call_s(partner) + LEASE_MARGIN_S


def _slots_key(partner: Partner) -> str:
    return f"{_namespace(partner)}:slots"


def _old_counter_key(partner: Partner) -> str:
    """The release before counted calls in flight in one counter (Dramatiq's concurrent limiter).
    During a rolling restart its workers still do: counted with the leases, the two together keep
    the cap instead of each allowing it. Nothing writes it once they are gone, and it expires
    within its minute; this, and the key, can go in the release after."""
    return f"{_namespace(partner)}:concurrency"


@cache
def _slots_script() -> Script:
    """Registered once per process; redis-py runs it by its digest and loads it again where
    Redis does not know it (a restarted or another server). Run with the client of the moment."""
    return redis_client().register_script(_SLOTS_LUA)


def _slots(partner: Partner, token: str, lease_ms: int) -> tuple[bool, int]:
    taken, held = _slots_script()(
        keys=[_slots_key(partner), _old_counter_key(partner)],
        args=[partner.max_concurrency, token, lease_ms],
        client=redis_client(),
    )
    return bool(taken), int(held)


def take_slot(partner: Partner) -> str | None:
    """A lease on one of the partner's `max_concurrency` slots (its token), or None when all are
    held. Raises `GuardUnavailable` when Redis does not answer: then no call may be made."""
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
    try:
        taken, _ = _slots(partner, token, max(1, round(lease_s(partner) * 1000)))
    except redis.RedisError as exc:
        raise GuardUnavailable(f"{type(exc).__name__}: {exc}") from exc
    return token if taken else None


def give_back(partner: Partner, token: str) -> None:
    """End a lease. The call is over by then and its answer must be kept: a Redis that does not
    answer is logged, and the lease runs out by itself."""
    try:
        redis_client().zrem(_slots_key(partner), token)
    except redis.RedisError as exc:
        logger.warning(
            "partner slot not given back, its lease runs out by itself",
            extra={"partner": partner.code, "error": f"{type(exc).__name__}: {exc}"},
        )


def in_flight(partner: Partner) -> int:
    """The partner's slots held now (leases not run out)."""
    return _slots(partner, "", 0)[1]


@contextmanager
def slot(partner: Partner) -> Iterator[bool]:
    """Hold one of the partner's slots for the block (True), or none when all are held (False)."""
    token = take_slot(partner)
    try:
        yield token is not None
    finally:
        if token is not None:
            give_back(partner, token)


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

    with slot(partner) as acquired:
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
    opened_at = breaker._state_storage.opened_at
    return {
        "circuit": breaker.current_state,
        "fail_counter": breaker.fail_counter,
        "opened_at": opened_at.isoformat() if opened_at else None,
        "in_flight": in_flight(partner),
        "max_concurrency": partner.max_concurrency,
    }
