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
# server -> budget timeouts in a row (`timeout_pauses=False`); so many start the pause after all:
# a Redis that keeps missing even a short budget is as good as silent (a rate limit's Redis of its
# own, used by nothing that waits longer, would otherwise cost every request that budget).
_budget_timeouts: dict[str, int] = {}
BUDGET_TIMEOUTS_BEFORE_PAUSE = 3


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
    (a rate limit's count), honours a pause and starts one when it cannot connect, but one such
    timeout says only that Redis was slower than that budget, not that it is gone: only
    BUDGET_TIMEOUTS_BEFORE_PAUSE of them in a row start the pause."""
    server = server_of(url)
    if time.monotonic() < _paused_until.get(server, 0.0):
        raise RedisPaused(f"Redis did not answer moments ago ({server})")
    try:
        answer = call()
    except redis.TimeoutError:
        if timeout_pauses:
            _pause(server)
        else:
            _budget_timeouts[server] = _budget_timeouts.get(server, 0) + 1
            if _budget_timeouts[server] >= BUDGET_TIMEOUTS_BEFORE_PAUSE:
                _pause(server)
        raise
    except redis.ConnectionError:
        _pause(server)
        raise
    _budget_timeouts.pop(server, None)
    return answer


def _pause(server: str) -> None:
    _paused_until[server] = time.monotonic() + settings.REDIS_HINT_PAUSE_S
    _budget_timeouts.pop(server, None)


def forget() -> None:
    """End every pause (tests: a Redis that answers again, a test that must not inherit one)."""
    _paused_until.clear()
    _budget_timeouts.clear()
