"""The process's one Redis client for our own keys (the sweeper's claims and lock, the partner
guard's breakers and concurrency caps); the broker and the cache are configured in settings."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings

from config.embedded_redis import with_socket_timeouts


@cache
def redis_client() -> redis.Redis:
    """With socket timeouts, so that a blocked Redis never holds a worker thread for ever."""
    return redis.Redis.from_url(with_socket_timeouts(settings.REDIS_URL, 5))
