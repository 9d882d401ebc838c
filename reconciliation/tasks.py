"""Reconciliation actors: the per-booking step of a sweep, in chunks."""

from __future__ import annotations

import logging
from uuid import UUID

import dramatiq
from django.conf import settings

from config.logging import log_context
from reconciliation.services.sweeper import SWEEP_BOOKINGS, SWEEP_QUEUE, booking_due_run

logger = logging.getLogger(__name__)


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
            except Exception:  # one booking's failure must not starve the rest of the chunk
                logger.exception("sweep step failed")
                failed.append(booking_id)
    if failed:
        raise SweepStepsFailed(f"{len(failed)} of {len(booking_ids)} steps failed: {failed[:5]}")
