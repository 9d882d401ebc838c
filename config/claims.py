"""Claims held until a worker takes a message up: work whose message waits is not queued again.

A claim is a Redis key, under the broker's namespace (it stands for a queued message, so it goes
with the queues: a Redis that lost its queues lost its claims too), holding a token that the
message carries in its options; `ReleaseClaims`, first in the broker's middleware, deletes it,
if it still holds that token, when a worker takes the message up. The sweeper
(`reconciliation/services/sweeper.py`) queues a due booking's step on its partner's queue, a
payment's run, a payment webhook and a mail only if it can take the work's claim, so however far
a queue falls behind, sweeps add no second copy of work that has not started. The TTL
(`RECONCILE_STEP_CLAIM_TTL_S`) only bounds a message lost where the broker does not give it back.

Here in `config`, beside the broker's middleware list, so that every app's senders can take the
same claims, the core's among them (docs/design.md, "Apps and who owns what"); the sweeper's
window claims stay in `reconciliation.claims`.
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

Claim = dict[str, list[str]]

# Delete the claim only if it is still the one this message carries.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def claim_until_taken_up(name: str, ttl_s: float) -> Claim | None:
    """Claim `name` until the message it is given to is taken up by a worker (`ttl_s` at most):
    the options to send that message with, or None while an earlier claim stands."""
    key, token = claim_key(name), uuid.uuid4().hex
    if not redis_client().set(key, token, nx=True, px=ms(ttl_s)):
        return None
    return {CLAIM_OPTION: [key, token]}


def release(options: dict) -> bool:
    """End the claim a message carries, if it still stands; True if it did."""
    key, token = options[CLAIM_OPTION]
    return script(_RELEASE)(keys=[key], args=[token]) == 1


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


def claim_key(name: str) -> str:
    return f"{settings.DRAMATIQ_BROKER['OPTIONS']['namespace']}:reconciliation:queued:{name}"


def ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@cache
def script(source: str) -> Script:
    """Runs as EVALSHA, loading the script again if Redis lost it."""
    return redis_client().register_script(source)
