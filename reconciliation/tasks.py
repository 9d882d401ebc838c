"""Reconciliation actors: the per-booking step of a sweep, in chunks."""

from __future__ import annotations

import logging
from uuid import UUID

import dramatiq
from django.conf import settings

from config.logging import log_context

logger = logging.getLogger(__name__)


class SweepStepsFailed(Exception):
    """Some steps of a chunk failed; retrying the chunk is safe (each step re-checks under lock)."""


@dramatiq.actor(
    queue_name="reconciliation",
    max_retries=settings.PARTNER_ACTOR_MAX_RETRIES,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=300_000,
)
def sweep_bookings(booking_ids: list[str]) -> None:
    from reconciliation.services.sweeper import booking_due_run

    failed = []
    for booking_id in booking_ids:
        with log_context(booking_id=booking_id, actor="sweep_bookings"):
            try:
                booking_due_run(UUID(booking_id))
            except Exception:  # one booking's failure must not starve the rest of the chunk
                logger.exception("sweep step failed")
                failed.append(booking_id)
    if failed:
        raise SweepStepsFailed(f"{len(failed)} of {len(booking_ids)} steps failed: {failed[:5]}")


def queue_sweep_messages(batch: list[tuple]) -> None:
    """Due bookings in chunks of RECONCILE_MESSAGE_CHUNK, on the reconciliation queue.

    Not on the partner's queue: the step is database work only (it queues any partner call on
    the partner's queue itself), so an expiry is never stuck behind a slow partner's backlog.
    Chunks, because one Redis round trip per due booking made queueing the slowest part of a
    sweep over 100,000 open bookings.
    """
    ids = [str(booking_id) for booking_id, *_ in batch]
    size = settings.RECONCILE_MESSAGE_CHUNK
    for start in range(0, len(ids), size):
        sweep_bookings.send(ids[start : start + size])
