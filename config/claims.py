"""Claims held until a worker takes a message up: work whose message waits is not queued again.

A claim is a Redis key, under the broker's namespace (it stands for a queued message, so it goes
with the queues: a Redis that lost its queues lost its claims too), holding a token that the
message carries in its options; `ReleaseClaims`, first in the broker's middleware, deletes it,
if it still holds that token, when a worker takes the message up. The sweeper
(`reconciliation/services/sweeper.py`) queues a piece of due work only if it can take the work's
claim (`send_claimed`), so while a message for it waits, however far its queue falls behind,
sweeps add no copy. The TTL (`RECONCILE_STEP_CLAIM_TTL_S`) only bounds a message lost where the
broker does not give it back.

The services' own messages for the same work, queued after commit (a submission, a payment
run, a mail, a webhook delivery) and as follow-ups, hold the same claim (`send_holding`): before
they did, a message that waited in a backlog past its row's grace looked lost to the sweeper,
which queued one copy beside it. They take it whether or not a claim stands (the message is
queued either way; the newest one waiting ends it). A Redis that does not take the claim would
not take the message either: the claim's error is the send's (one wait, never two, on a request
that sends after its commit; the caller's hint pause then skips Redis), and the row is recovered
at its grace, as before. A claim whose message was never queued must not stand: one Redis may
have set before its answer was lost, or taken before the send failed, is deleted (compare and
delete, so never another message's) at once if Redis answers, else by this process's next
claim that Redis takes (`_unreleased`); only a process that ends first leaves one to its TTL. A step run
in a worker's thread with no message (`bookings.ports.next_steps_inline`) holds nothing, so the
sweeper recovers it after its grace if that worker dies.

Here in `config`, beside the broker's middleware list, because every app sends such messages and
the core may import nothing above it (docs/design.md, "Apps and who owns what").
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable
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


def send_claimed(name: str, send: Callable[[Claim], None]) -> bool:
    """The sweeper's rule: `send(claim)` unless a message for `name` still waits (its claim
    stands); whether it was sent. A send that fails ends the claim it took."""
    claim = claim_until_taken_up(name, settings.RECONCILE_STEP_CLAIM_TTL_S)
    if claim is None:
        return False
    _send_or_release(claim, send)
    return True


def send_holding(name: str, send: Callable[[Claim], None]) -> None:
    """The services' rule: `send(claim)` with the claim on `name` held until this message is
    taken up, in one Redis round trip more. Raises the claim's RedisError without sending: a
    Redis that does not take the claim would not take the message (module docstring)."""
    key, token = claim_key(name), uuid.uuid4().hex
    claim = {CLAIM_OPTION: [key, token]}
    try:
        redis_client().set(key, token, px=ms(settings.RECONCILE_STEP_CLAIM_TTL_S))
    except redis.RedisError:
        _unreleased.append(claim)  # it may stand all the same: set before the answer was lost
        raise
    _send_or_release(claim, send)
    _release_unreleased()


def _send_or_release(claim: Claim, send: Callable[[Claim], None]) -> None:
    try:
        send(claim)
    except Exception:
        try:
            release(claim)
        except redis.RedisError:  # standing with no message: ended by the next claim Redis takes
            _unreleased.append(claim)
        raise


class _Unreleased:
    """This process's claims whose message was never queued and whose deletion Redis did not
    answer: deleted once Redis answers again. Bounded: an outage's attempts are paced by the
    hint pause, and past the bound the oldest are left to their TTL."""

    def __init__(self, bound: int = 1000) -> None:
        self._claims: deque[Claim] = deque(maxlen=bound)
        self._lock = threading.Lock()

    def append(self, claim: Claim) -> None:
        with self._lock:
            self._claims.append(claim)

    def take(self) -> list[Claim]:
        with self._lock:
            claims = list(self._claims)
            self._claims.clear()
        return claims


_unreleased = _Unreleased()


def _release_unreleased() -> None:
    pending = _unreleased.take()
    for index, claim in enumerate(pending):
        try:
            release(claim)
        except redis.RedisError:  # Redis went again: keep the rest for the next time
            for kept in pending[index:]:
                _unreleased.append(kept)
            return


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
