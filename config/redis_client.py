"""The process's one Redis client for our own keys (the sweeper's claims and lock, the partner
guard's breakers and concurrency caps); the broker and the cache are configured in settings.

And `send_hint`: what a process sends to Redis once a transaction has committed (a queued
message, a published view) is made good without it (the sweeper queues due work, followers
re-read), so a Redis that does not answer must not hold the request that sent it: after one went
unanswered, the hints skip it for a while (config/redis_pause.py, shared with the cache and the
rate limits).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TypeVar

import redis
from django.conf import settings

from config.embedded_redis import with_socket_timeouts
from config.redis_pause import unless_paused

T = TypeVar("T")


@cache
def redis_client() -> redis.Redis:
    """With socket timeouts, so that a blocked Redis never holds a worker thread for ever."""
    return redis.Redis.from_url(
        with_socket_timeouts(settings.REDIS_URL, min(5.0, settings.REDIS_SOCKET_TIMEOUT_S))
    )


def send_hint(write: Callable[[], T]) -> T:
    """Run `write`, an after-commit write whose loss is made good elsewhere; raises RedisPaused
    (a redis.ConnectionError) instead while our Redis has just failed to answer this process
    (config/redis_pause.py)."""
    return unless_paused(settings.REDIS_URL, write)
