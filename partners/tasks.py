"""Dramatiq actors: thin, idempotent, by id. Each reloads, calls one service, queues follow-ups.

Messages reach these actors by name through `partners.messages`, on the partner's own queue.
Expected partner failures are not exceptions here: the services record them and return a
`FollowUp` with an explicit, jittered delay. Dramatiq's own retries cover only the unexpected
(database or broker hiccups), bounded; when they run out, `RetriesExhausted` hands the booking
to reconciliation.
"""

from __future__ import annotations

from uuid import UUID

import dramatiq
from django.conf import settings
from dramatiq.common import q_name
from dramatiq.middleware import CurrentMessage

from bookings import ports
from config.logging import log_context
from partners import messages
from partners.models import PartnerReservation
from partners.services.compensation import booking_cancel_run, reservation_compensate
from partners.services.listing import change_listing_walk
from partners.services.submission import submission_run
from partners.services.sync import booking_sync
from partners.services.webhooks import inbound_event_process

# Longer than the worst call budget: a time limit cannot interrupt blocking I/O (docs/design.md),
# every socket has its own timeout and this is only the last resort.
ACTOR_OPTIONS = {
    "max_retries": settings.PARTNER_ACTOR_MAX_RETRIES,
    "min_backoff": 1_000,
    "max_backoff": 60_000,
    "time_limit": settings.PARTNER_ACTOR_TIME_LIMIT_MS,
    "queue_name": "partners",
}


@dramatiq.actor(actor_name=messages.SUBMIT_BOOKING, **ACTOR_OPTIONS)
def submit_booking(booking_id: str) -> None:
    with log_context(booking_id=booking_id, actor=messages.SUBMIT_BOOKING), ports.next_steps_inline():
        messages.send_follow_up(booking_id, submission_run(UUID(booking_id)))


@dramatiq.actor(actor_name=messages.SYNC_BOOKING, **ACTOR_OPTIONS)
def sync_booking(booking_id: str) -> None:
    with log_context(booking_id=booking_id, actor=messages.SYNC_BOOKING), ports.next_steps_inline():
        # The read a read asks for (the second read of a reservation the partner no longer knows,
        # a failed read's retry) stays on this read's queue: an audit's must not wait behind the
        # partner's submissions either.
        messages.send_follow_up(
            booking_id, booking_sync(UUID(booking_id)), sync_queue=_queue_of_this_message()
        )


def _queue_of_this_message() -> str | None:
    message = CurrentMessage.get_current_message()
    return q_name(message.queue_name) if message is not None else None


@dramatiq.actor(actor_name=messages.CANCEL_BOOKING, **ACTOR_OPTIONS)
def cancel_booking(booking_id: str) -> None:
    with log_context(booking_id=booking_id, actor=messages.CANCEL_BOOKING), ports.next_steps_inline():
        messages.send_follow_up(booking_id, booking_cancel_run(UUID(booking_id)))


@dramatiq.actor(actor_name=messages.COMPENSATE_RESERVATION, **ACTOR_OPTIONS)
def compensate_reservation(reservation_id: int) -> None:
    with log_context(reservation_id=reservation_id, actor=messages.COMPENSATE_RESERVATION):
        follow_up = reservation_compensate(int(reservation_id))
        if follow_up.compensate_after_s is not None:
            partner = PartnerReservation.objects.select_related("partner").get(pk=reservation_id).partner
            messages.send_for_partner(
                messages.COMPENSATE_RESERVATION,
                partner,
                reservation_id,
                delay_s=follow_up.compensate_after_s,
            )


@dramatiq.actor(
    actor_name=messages.PROCESS_INBOUND_EVENT, **{**ACTOR_OPTIONS, "queue_name": messages.WEBHOOKS_QUEUE}
)
def process_inbound_event(event_id: int) -> None:
    with (
        log_context(inbound_event_id=event_id, actor=messages.PROCESS_INBOUND_EVENT),
        ports.next_steps_inline(),
    ):
        inbound_event_process(int(event_id))


@dramatiq.actor(actor_name=messages.WALK_CHANGE_LISTING, **ACTOR_OPTIONS)
def walk_change_listing(partner_id: int) -> None:
    with log_context(partner_id=partner_id, actor=messages.WALK_CHANGE_LISTING):
        change_listing_walk(int(partner_id))
