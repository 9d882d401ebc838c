"""A Redis that stops answering (SIGSTOP: connections hang instead of being refused, as when its
host is cut off) costs a request process one socket timeout, not one per request: after it, the
process's requests skip that Redis for REDIS_HINT_PAUSE_S (config/redis_pause.py), the shared
cache's figures, the rate limits' counts and the after-commit hints alike, then try it again.

Before, each booking status poll waited out the cache's read and write (1 s each in the web
process) and each API request the rate limit's 0.25 s, every time.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.core.cache import cache
from django.test import Client

from bookings.selectors import confirmation_times_cache_key
from bookings.states import BookingState
from config import redis_pause
from config.embedded_redis import EmbeddedRedis, with_socket_timeouts
from config.redis_client import send_hint
from config.redis_pause import BUDGET_TIMEOUTS_BEFORE_PAUSE
from config.throttling import Rate, _Limits
from tests.factories import BookingFactory, UserFactory
from tests.own_servers import own_redis

WEB_TIMEOUT_S = 1.0  # the request processes' Redis wait (config/wsgi.py)
PAUSE_S = 2.0
FAST_S = 0.5  # generous: a skipped Redis costs nothing


@pytest.fixture
def silent_redis(tmp_path: Path, settings) -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own behind the shared cache, the rate limits and the hints, that the
    test stops with SIGSTOP."""
    server = own_redis(tmp_path / "redis-var")
    location = with_socket_timeouts(server.url, WEB_TIMEOUT_S)
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"], "LOCATION": location}}
    settings.API_THROTTLE_REDIS_URL = server.url
    settings.REDIS_URL = server.url
    settings.REDIS_HINT_PAUSE_S = PAUSE_S
    try:
        yield server
    finally:
        os.kill(server.process.pid, signal.SIGCONT)  # a stopped server cannot be stopped
        server.stop()
        redis_pause.forget()


def _timed(call) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def test_a_silent_redis_costs_the_status_poll_one_wait_then_it_is_skipped_until_it_answers_again(
    db, silent_redis
):
    customer = UserFactory()
    booking = BookingFactory(customer=customer, status=BookingState.REQUESTED)
    web = Client()
    web.force_login(customer)
    key = confirmation_times_cache_key(booking.partner_id)

    def poll():
        response = web.get(f"/bookings/{booking.reference}/status/", headers={"HX-Request": "true"})
        assert response.status_code == 200
        assert response.context["timing"] is not None  # the partner's usual time: from the cache

    os.kill(silent_redis.process.pid, signal.SIGSTOP)
    first, second = _timed(poll), _timed(poll)

    # the first poll waits out one read; the next skips Redis (before: a read and a write each)
    assert first >= 0.9 * WEB_TIMEOUT_S, (first, second)
    assert second < FAST_S, (first, second)

    # once the pause is over, Redis is tried again: still silent, one wait again
    time.sleep(PAUSE_S)
    assert _timed(poll) >= 0.9 * WEB_TIMEOUT_S

    # it answers again: once the pause is over, the poll fills the cache, without a wait
    os.kill(silent_redis.process.pid, signal.SIGCONT)
    time.sleep(PAUSE_S)
    assert _timed(poll) < FAST_S
    assert cache.get(key) is not None


def test_the_cache_the_rate_limits_and_the_hints_share_the_pause(silent_redis, settings):
    limits = _Limits(redis_url=silent_redis.url, timeout_s=0.25, what="API")
    counted = [("test:pause:address", Rate.parse("100/min"))]
    sent = []
    os.kill(silent_redis.process.pid, signal.SIGSTOP)

    # the rate limit's own short budget (0.25 s) running out once or twice says Redis was slower
    # than that, not that it is gone: it starts no pause
    for _ in range(BUDGET_TIMEOUTS_BEFORE_PAUSE - 1):
        assert _timed(lambda: limits.retry_after_s(counted)) >= 0.2

    # one wait of a call on the socket timeout (a cache read, which then does without) ...
    assert _timed(lambda: cache.get("figure")) >= 0.5

    # ... and every use of that Redis in this process skips it at once, the rate limits' too
    assert _timed(lambda: limits.retry_after_s(counted)) < 0.1
    assert _timed(lambda: cache.get("figure")) < 0.1
    with pytest.raises(redis.ConnectionError):
        send_hint(lambda: sent.append("hint"))
    assert sent == []


def test_a_rate_limits_redis_of_its_own_that_keeps_missing_its_budget_is_paused(silent_redis, settings):
    """Nothing else uses a rate limit's Redis of its own to start the pause on the socket's
    timeout: so many budget timeouts in a row start it, and each request then skips that Redis
    instead of waiting out the budget. The Redis the hints and cache use is not paused."""
    limits = _Limits(redis_url=silent_redis.url, timeout_s=0.25, what="API")
    counted = [("test:pause:address", Rate.parse("100/min"))]
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # the hints' Redis: another server (never called here)
    os.kill(silent_redis.process.pid, signal.SIGSTOP)

    for _ in range(BUDGET_TIMEOUTS_BEFORE_PAUSE):
        assert _timed(lambda: limits.retry_after_s(counted)) >= 0.2

    assert _timed(lambda: limits.retry_after_s(counted)) < 0.1
    assert send_hint(lambda: "sent") == "sent"
