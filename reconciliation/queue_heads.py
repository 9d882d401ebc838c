"""Lost, or still waiting in its queue: the one rule by which the sweeper tells the two apart.

The sweeper queues a copy of work whose row says it is due: whoever wrote the row queued its
message after the commit, and gave it a grace to be taken up (BOOKING_SUBMIT_GRACE,
PAYMENTS_RUN_GRACE_S, NOTIFICATION_REQUEUE_AFTER_S, RECONCILE_INBOUND_STALE_S). Past the grace
alone a message is not lost, though: under a backlog it waits in a queue deeper than the grace,
and a copy beside it only doubled the queue and cost a worker a row lock to find nothing to do
(a backlog: 1,033 payment runs queued for 514 payments due). So the sweeper also asks the queue.

Dramatiq's Redis broker keeps each queue as a list of message ids in the order they joined it
(`<ns>:<queue>`, taken from the front) and the messages in a hash (`<ns>:<queue>.msgs`), each
with the time it was made (`message_timestamp`) and, one that waited on the delay queue, the
time it was due there (`eta`): the later of the two is when the message at the front joined the
queue, and every message that joined before it has been taken. Work whose row was written (its
message queued just after) before that instant has no message left waiting, unless its message
is itself among the first ones (it joined a moment after the row was written): it is owed a
copy. Work written since may still have its message waiting behind the front: no copy.

The rule, for work last queued at `queued_at` (the row's own time: `QueueHeads.owed`): owed a
copy once `queued_at` is before its grace and before the front joined the queue, and no message
of its own is among the first `FRONT` of the queue. An empty queue, or one that cannot be read,
leaves the grace alone. Nothing here trusts Redis to hold what it claims: nothing is written,
and each queue is read once per sweep (`QueueHeads` keeps what it read). A Redis that lost its
queues (the embedded one keeps no data across a restart) has them empty, or holding only
messages that joined after every piece of work it lost was written: each is owed a copy once
its grace has passed, as before. The costs are bounded: a row written with no message (a hold to
decide on before it lapses; a booking accepted while the broker did not answer, behind an older
backlog) waits until its queue has drained to its time, as a message would have; a message that
joined long after its row was written (a retry delayed on the delay queue) and sits deeper than
the front gets one copy from the sweeper, claimed until a worker takes it up
(`reconciliation.claims`), as before.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import cache
from typing import NamedTuple

import dramatiq
import redis
from django.conf import settings
from dramatiq.errors import DecodeError
from redis.commands.core import Script

from config.redis_client import redis_client

logger = logging.getLogger(__name__)

# Messages read at the front of a queue: more than join it within the moment between a row's
# commit and its message's queueing, at any rate we run (a chaos run's peak: tens a second).
FRONT = 100

# The encoded messages at the front of a queue, oldest first (KEYS: the list, the hash).
_FRONT = """
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then
  return {}
end
return redis.call('HMGET', KEYS[2], unpack(ids))
"""


class Front(NamedTuple):
    joined_at: datetime  # when the message at the front joined the queue
    items: frozenset[tuple[str, str]]  # (actor, first argument) of the first FRONT messages


class QueueHeads:
    """For one sweep (or one chunk of its per-booking steps): each queue's front, read once."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self._fronts: dict[str, Front | None] = {}

    def cutoff(self, queue_name: str, before: datetime) -> datetime:
        """Work of this queue last queued before this instant may be owed a copy (see `owed`):
        `before` (now less its grace) or, if earlier, when the front message joined the queue."""
        front = self._front(queue_name)
        return before if front is None else min(before, front.joined_at)

    def at_front(self, queue_name: str, actor_name: str, item_id: object) -> bool:
        """Whether a message of `actor_name` for `item_id` is among the first of the queue."""
        front = self._front(queue_name)
        return front is not None and (actor_name, str(item_id)) in front.items

    def owed(
        self, queue_name: str, actor_name: str, item_id: object, queued_at: datetime, before: datetime
    ) -> bool:
        """The rule: work last queued at `queued_at`, due once that is before `before`, is owed a
        copy unless its message may still wait on the queue."""
        return queued_at <= self.cutoff(queue_name, before) and not self.at_front(
            queue_name, actor_name, item_id
        )

    def _front(self, queue_name: str) -> Front | None:
        if queue_name not in self._fronts:
            self._fronts[queue_name] = read_front(queue_name)
        return self._fronts[queue_name]


def read_front(queue_name: str) -> Front | None:
    """The queue's front: None if the queue is empty or its front cannot be read (the caller
    then keeps to its grace)."""
    namespace = settings.DRAMATIQ_BROKER["OPTIONS"]["namespace"]
    key = f"{namespace}:{queue_name}"
    try:
        encoded = _script(_FRONT)(keys=[key, f"{key}.msgs"], args=[FRONT])
        if not encoded or encoded[0] is None:
            return None
        messages = [dramatiq.Message.decode(data) for data in encoded if data is not None]
        first = messages[0]
        joined_ms = max(int(first.message_timestamp), int(first.options.get("eta") or 0))
    except (redis.RedisError, DecodeError, TypeError, ValueError) as exc:
        # Not a warning: the grace decides, as before, and a Redis that does not answer is told
        # by the sends that follow (a traceback per queue per chunk would only repeat it).
        logger.debug("queue front not read", extra={"queue": queue_name, "error": repr(exc)})
        return None
    items = frozenset((m.actor_name, str(m.args[0])) for m in messages if m.args)
    return Front(joined_at=datetime.fromtimestamp(joined_ms / 1000, tz=UTC), items=items)


@cache
def _script(source: str) -> Script:
    """Runs as EVALSHA, loading the script again if Redis lost it."""
    return redis_client().register_script(source)
