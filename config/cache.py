"""The shared cache (Redis) for figures that can always be computed again.

While Redis is down a read misses and a write is dropped, so that a page that shows such a
figure computes it instead of failing. After one went unanswered, reads and writes skip Redis
for a while (config/redis_pause.py): a silent Redis would otherwise hold every page that shows
such a figure for a read's and a write's socket timeouts. Operations whose answer a caller
depends on (`add`, `incr`, `delete`) still raise: a missed claim must not pass for a new one.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import redis
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache

from config.redis_pause import unless_paused

logger = logging.getLogger(__name__)


class FailSoftRedisCache(RedisCache):
    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        try:
            return unless_paused(self._servers[0], partial(super().get, key, default, version))
        except redis.RedisError as exc:
            logger.warning("cache unavailable: read missed", extra={"key": key, "error": str(exc)})
            return default

    def set(self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        try:
            unless_paused(self._servers[0], partial(super().set, key, value, timeout, version))
        except redis.RedisError as exc:
            logger.warning("cache unavailable: write dropped", extra={"key": key, "error": str(exc)})
