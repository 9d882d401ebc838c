"""Per process: a Redis that has just failed to answer is skipped for a few seconds.

What a request asks of Redis on its way is something it can do without: an after-commit hint
(the sweeper queues due work, followers re-read), a figure of the shared cache (computed again),
a rate limit's count (the limit fails open). A Redis that stops answering without refusing (its
process stopped, its host cut off) makes each such call wait out its socket timeout, and a
request makes several: a second per cache read in the web process, and every page that polls a
booking holds a thread that long, until the others queue behind them. So once a call to a Redis
server failed to connect or timed out, the process's next calls to that server fail at once
(`RedisPaused`, a `redis.ConnectionError`, which every caller already handles) for
REDIS_HINT_PAUSE_S; the first call after it tries Redis again.

Per server (its host and port, or its socket), not per client or database: the hints, the cache
and the rate limits on one Redis share its pause, and a rate limit on a Redis of its own
(API_THROTTLE_REDIS_URL) pauses only that one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import redis
from django.conf import settings

T = TypeVar("T")

# server -> time.monotonic() until which it is skipped; one float per key, written whole.
_paused_until: dict[str, float] = {}


class RedisPaused(redis.ConnectionError):
    """This Redis did not answer moments ago: the call is not made (its caller does without)."""


def server_of(url: str) -> str:
    """The Redis server a URL names: its socket, or its host and port."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"unix:{parts.path}"
    return f"{parts.hostname}:{parts.port or 6379}"


def unless_paused(url: str, call: Callable[[], T], *, timeout_pauses: bool = True) -> T:
    """Run `call`, a call to the Redis at `url` that its caller can do without; raise RedisPaused
    instead while that Redis failed to answer one in the last REDIS_HINT_PAUSE_S.

    `timeout_pauses=False`: a call on a budget of its own, far shorter than the socket timeout
    (a rate limit's count), honours a pause and starts one when it cannot connect, but its
    timing out says only that Redis was slower than that budget, not that it is gone."""
    server = server_of(url)
    if time.monotonic() < _paused_until.get(server, 0.0):
        raise RedisPaused(f"Redis did not answer moments ago ({server})")
    try:
        return call()
    except redis.TimeoutError:
        if timeout_pauses:
            _paused_until[server] = time.monotonic() + settings.REDIS_HINT_PAUSE_S
        raise
    except redis.ConnectionError:
        _paused_until[server] = time.monotonic() + settings.REDIS_HINT_PAUSE_S
        raise


def forget() -> None:
    """End every pause (tests: a Redis that answers again, a test that must not inherit one)."""
    _paused_until.clear()
