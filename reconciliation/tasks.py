"""Reconciliation actors: the per-booking step of a sweep."""

from __future__ import annotations

from uuid import UUID

import dramatiq
from django.conf import settings

from config.logging import log_context
from partners.models import Partner


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
    """One message per due booking, on its partner's queue, pipelined to Redis."""
    broker = sweep_booking.broker
    for booking_id, _status, partner_code, _due in batch:
        message = sweep_booking.message_with_options(args=(str(booking_id),)).copy(
            queue_name=Partner(code=partner_code).queue_name
        )
        broker.enqueue(message)
