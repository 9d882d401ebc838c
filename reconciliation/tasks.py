"""Reconciliation actors: the per-booking step of a sweep, in chunks."""

from __future__ import annotations

import logging
from uuid import UUID

import dramatiq
import dramatiq.errors
import redis
from django.conf import settings

from config.logging import AtMostEvery, log_context, one_line
from reconciliation.services.sweeper import SWEEP_BOOKINGS, SWEEP_QUEUE, booking_due_run

logger = logging.getLogger(__name__)

# Our Redis not answering (down, restarting): what failed is queueing the step's work, which the
# outage fails for every step of every chunk alike.
REDIS_UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, dramatiq.errors.BrokerConnectionError)
# One traceback per process a minute shows where; the other lines only which booking and why.
_redis_tracebacks = AtMostEvery(60.0)


class SweepStepsFailed(Exception):
    """Some steps of a chunk failed; retrying the chunk is safe (each step re-checks under lock)."""


@dramatiq.actor(
    actor_name=SWEEP_BOOKINGS,
    queue_name=SWEEP_QUEUE,
    max_retries=settings.PARTNER_ACTOR_MAX_RETRIES,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=300_000,
)
def sweep_bookings(booking_ids: list[str]) -> None:
    failed = []
    for booking_id in booking_ids:
        with log_context(booking_id=booking_id, actor=SWEEP_BOOKINGS):
            try:
                booking_due_run(UUID(booking_id))
            except REDIS_UNAVAILABLE as exc:
                # Nothing is lost and nothing is retried: the step's transaction committed or
                # rolled back whole, and the booking is due again in the database once the check
                # this sweep pushed comes round (claims made are released or expire), so the next
                # sweep after Redis is back queues it. A retry of the chunk would need this Redis.
                logger.warning(
                    "sweep step not queued: Redis unavailable; the sweeper queues it again",
                    exc_info=exc if _redis_tracebacks.due() else None,
                    extra={"error": one_line(exc)},
                )
            except Exception:  # one booking's failure must not starve the rest of the chunk
                logger.exception("sweep step failed")
                failed.append(booking_id)
    if failed:
        raise SweepStepsFailed(f"{len(failed)} of {len(booking_ids)} steps failed: {failed[:5]}")
