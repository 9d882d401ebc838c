"""Dramatiq actors: thin, idempotent, by id. Each reloads, calls one service, queues follow-ups.

Messages for a partner go to that partner's queue (`partners.queues`). Expected partner
failures are not exceptions here: the services record them and return a `FollowUp` with an
explicit, jittered delay. Dramatiq's own retries cover only the unexpected (database or broker
hiccups), bounded; when they run out, `RetriesExhausted` hands the booking to reconciliation.
"""

from __future__ import annotations

import logging
from uuid import UUID

import dramatiq
from django.conf import settings

from bookings.models import Booking
from config.logging import log_context
from partners.models import Partner, PartnerReservation
from partners.services.submission import FollowUp

logger = logging.getLogger(__name__)

# Longer than the worst call budget: a time limit cannot interrupt blocking I/O (docs/design.md),
# every socket has its own timeout and this is only the last resort.
ACTOR_OPTIONS = {
    "max_retries": settings.PARTNER_ACTOR_MAX_RETRIES,
    "min_backoff": 1_000,
    "max_backoff": 60_000,
    "time_limit": settings.PARTNER_ACTOR_TIME_LIMIT_MS,
    "queue_name": "partners",
}


def _send(actor: dramatiq.Actor, queue_name: str, args: tuple, delay_s: float | None = None) -> None:
    message = actor.message_with_options(args=args).copy(queue_name=queue_name)
    actor.broker.enqueue(message, delay=int(delay_s * 1000) if delay_s else None)


def send_for_booking(actor: dramatiq.Actor, booking_id: UUID | str, *, delay_s: float | None = None) -> None:
    code = Booking.objects.filter(pk=booking_id).values_list("partner__code", flat=True).first()
    if code is None:
        logger.warning("no booking to queue work for", extra={"booking_id": str(booking_id)})
        return
    _send(actor, Partner(code=code).queue_name, (str(booking_id),), delay_s)


def send_for_partner(
    actor: dramatiq.Actor, partner: Partner, *args: object, delay_s: float | None = None
) -> None:
    _send(actor, partner.queue_name, args, delay_s)


def _dispatch(booking_id: str, follow_up: FollowUp) -> None:
    if follow_up.submit_after_s is not None:
        send_for_booking(submit_booking, booking_id, delay_s=follow_up.submit_after_s)
    if follow_up.sync_after_s is not None:
        send_for_booking(sync_booking, booking_id, delay_s=follow_up.sync_after_s)


@dramatiq.actor(**ACTOR_OPTIONS)
def submit_booking(booking_id: str) -> None:
    from partners.services.submission import submission_run

    with log_context(booking_id=booking_id, actor="submit_booking"):
        _dispatch(booking_id, submission_run(UUID(booking_id)))


@dramatiq.actor(**ACTOR_OPTIONS)
def sync_booking(booking_id: str) -> None:
    from partners.services.sync import booking_sync

    with log_context(booking_id=booking_id, actor="sync_booking"):
        _dispatch(booking_id, booking_sync(UUID(booking_id)))


@dramatiq.actor(**ACTOR_OPTIONS)
def cancel_booking(booking_id: str) -> None:
    from partners.services.compensation import booking_cancel_run

    with log_context(booking_id=booking_id, actor="cancel_booking"):
        _dispatch(booking_id, booking_cancel_run(UUID(booking_id)))


@dramatiq.actor(**ACTOR_OPTIONS)
def compensate_reservation(reservation_id: int) -> None:
    from partners.services.compensation import reservation_compensate

    with log_context(reservation_id=reservation_id, actor="compensate_reservation"):
        follow_up = reservation_compensate(int(reservation_id))
        if follow_up.compensate_after_s is not None:
            partner = PartnerReservation.objects.select_related("partner").get(pk=reservation_id).partner
            send_for_partner(
                compensate_reservation,
                partner,
                reservation_id,
                delay_s=follow_up.compensate_after_s,
            )


@dramatiq.actor(**{**ACTOR_OPTIONS, "queue_name": "webhooks"})
def process_inbound_event(event_id: int) -> None:
    from partners.services.webhooks import inbound_event_process

    with log_context(inbound_event_id=event_id, actor="process_inbound_event"):
        inbound_event_process(int(event_id))


@dramatiq.actor(**ACTOR_OPTIONS)
def walk_change_listing(partner_id: int) -> None:
    from partners.services.listing import change_listing_walk

    with log_context(partner_id=partner_id, actor="walk_change_listing"):
        change_listing_walk(int(partner_id))
