"""The sweeper's claims in Redis: work it queues is not queued again while its message waits.

Two kinds, under the broker's namespace (the claims stand for queued messages, so they go with
the queues: a Redis that lost its queues lost its claims too):

- a **window** (`claim_windows`): SET NX PX, the key expires on its own. For work the sweeper
  paces by time (stale webhooks, owed compensations, audits, listing walks) and for its own
  per-booking messages on the `reconciliation` queue, which are database work only: a copy
  queued after the window is how a lost message is made good, and costs a row lock.
- **held until taken up** (`claim_until_taken_up`): the key holds a token that the message
  carries in its options, and `ReleaseClaims` deletes it, if it still holds that token, when a
  worker takes the message up. For a due booking's step on its partner's queue: however far
  that queue falls behind, the sweeper queues no second copy of a step that has not started,
  so a backlog is never multiplied by the sweeps that run while it drains. The TTL only bounds
  a message lost where the broker does not give it back (see `RECONCILE_STEP_CLAIM_TTL_S`).
"""

from __future__ import annotations

import logging
import uuid
from functools import cache

import dramatiq
import redis
from django.conf import settings
from dramatiq.middleware import Middleware
from redis.commands.core import Script

from config.redis_client import redis_client

logger = logging.getLogger(__name__)

# The message option that carries a held claim: [key, token].
CLAIM_OPTION = "reconcile_claim"

# SET NX PX for every key, in one call: 1 where the key is newly claimed.
_CLAIM_WINDOWS = """
local claimed = {}
for i, key in ipairs(KEYS) do
  claimed[i] = redis.call('SET', key, '1', 'NX', 'PX', ARGV[1]) and 1 or 0
end
return claimed
"""

# The same, in order, until ARGV[2] keys are newly claimed: the rest are left untouched.
_CLAIM_FIRST_WINDOWS = """
local claimed = {}
local taken = 0
for i, key in ipairs(KEYS) do
  claimed[i] = 0
  if taken < tonumber(ARGV[2]) and redis.call('SET', key, '1', 'NX', 'PX', ARGV[1]) then
    claimed[i] = 1
    taken = taken + 1
  end
end
return claimed
"""

# Delete the claim only if it is still the one this message carries.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def claim_windows(names: list[str], ttl_s: float, *, limit: int | None = None) -> list[bool]:
    """Claim each name for `ttl_s` (one Lua call); True where newly claimed. With `limit`, the
    names are claimed in order until that many are newly claimed, and the rest left alone."""
    if not names:
        return []
    keys = [_key(name) for name in names]
    if limit is None:
        claimed = _script(_CLAIM_WINDOWS)(keys=keys, args=[_ms(ttl_s)])
    else:
        claimed = _script(_CLAIM_FIRST_WINDOWS)(keys=keys, args=[_ms(ttl_s), limit])
    return [flag == 1 for flag in claimed]


def claim_until_taken_up(name: str, ttl_s: float) -> dict[str, list[str]] | None:
    """Claim `name` until the message it is given to is taken up by a worker (`ttl_s` at most):
    the options to send that message with, or None while an earlier claim stands."""
    key, token = _key(name), uuid.uuid4().hex
    if not redis_client().set(key, token, nx=True, px=_ms(ttl_s)):
        return None
    return {CLAIM_OPTION: [key, token]}


def release(options: dict) -> bool:
    """End the claim a message carries, if it still stands; True if it did."""
    key, token = options[CLAIM_OPTION]
    return _script(_RELEASE)(keys=[key], args=[token]) == 1


class ReleaseClaims(Middleware):
    """Ends a message's claim when a worker takes it up: from then on the work's own row says
    when it is due again. First in the broker's middleware, so that nothing skips it."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        if CLAIM_OPTION not in message.options:
            return
        try:
            release(message.options)
        except redis.RedisError:  # the claim then lasts its TTL; the work itself goes ahead
            key = message.options[CLAIM_OPTION][0]
            logger.warning("claim not released", exc_info=True, extra={"claim": key})


def _key(name: str) -> str:
    return f"{settings.DRAMATIQ_BROKER['OPTIONS']['namespace']}:reconciliation:queued:{name}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@cache
def _script(source: str) -> Script:
    """Runs as EVALSHA, loading the script again if Redis lost it."""
    return redis_client().register_script(source)
