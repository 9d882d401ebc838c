"""The process's one Redis client for our own keys (the sweeper's claims and lock, the partner
guard's breakers and concurrency caps); the broker and the cache are configured in settings.

And the pause of after-commit hints: what a process sends to Redis once a transaction has
committed (a queued message, a published view) is made good without it (the sweeper queues due
work, followers re-read), so a Redis that does not answer must not hold the request that sent it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cache
from typing import TypeVar

import redis
from django.conf import settings

from config.embedded_redis import with_socket_timeouts

T = TypeVar("T")


@cache
def redis_client() -> redis.Redis:
    """With socket timeouts, so that a blocked Redis never holds a worker thread for ever."""
    return redis.Redis.from_url(
        with_socket_timeouts(settings.REDIS_URL, min(5.0, settings.REDIS_SOCKET_TIMEOUT_S))
    )


class HintsPaused(redis.ConnectionError):
    """Redis did not answer a hint moments ago: this one is not sent (its fallback makes it good)."""


class _HintPause:
    """Per process: after Redis failed to answer a hint, the next REDIS_HINT_PAUSE_S of hints
    skip it at once instead of each waiting out the socket timeout again."""

    until = 0.0  # time.monotonic(); one float, written whole


def send_hint(write: Callable[[], T]) -> T:
    """Run `write`, an after-commit write whose loss is made good elsewhere; raises HintsPaused
    (a redis.ConnectionError) instead while Redis has just failed to answer one."""
    if time.monotonic() < _HintPause.until:
        raise HintsPaused("Redis did not answer moments ago")
    try:
        return write()
    except (redis.ConnectionError, redis.TimeoutError):
        _HintPause.until = time.monotonic() + settings.REDIS_HINT_PAUSE_S
        raise
