"""Reconciliation actors: the per-booking step of a sweep."""

from __future__ import annotations

from uuid import UUID

import dramatiq
from django.conf import settings

from config.logging import log_context


@dramatiq.actor(
    queue_name="reconciliation",
    max_retries=settings.PARTNER_ACTOR_MAX_RETRIES,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=60_000,
)
def sweep_booking(booking_id: str) -> None:
    from reconciliation.services.sweeper import booking_due_run

    with log_context(booking_id=booking_id, actor="sweep_booking"):
        booking_due_run(UUID(booking_id))


def queue_sweep_messages(batch: list[tuple]) -> None:
    """One message per due booking on the reconciliation queue.

    Not on the partner's queue: the step is database work only (it queues any partner call on
    the partner's queue itself), so an expiry is never stuck behind a slow partner's backlog.
    """
    for booking_id, *_ in batch:
        sweep_booking.send(str(booking_id))
