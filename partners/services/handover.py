"""Handing a booking to reconciliation when its worker gave up: it is never dropped, and never
queued for ever either."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from bookings.models import Actor, Booking
from bookings.services import apply_transition
from bookings.timeline import record_event
from partners import decisions

GAVE_UP = "worker.retries_exhausted"


def hand_to_reconciliation(booking_id: str, *, actor_name: str, error: str) -> None:
    """Mark the booking due now, so that the next sweep syncs it, and say so on its timeline.

    After PARTNER_ACTOR_GIVE_UPS_MAX such give-ups the failure is not one retrying cures: support
    takes the booking (`worker_gave_up`) instead of the sweeper queuing it round after round.
    """
    with transaction.atomic():
        booking = Booking.objects.select_for_update(no_key=True).filter(pk=booking_id).first()
        if booking is None:
            return
        record_event(
            booking,
            GAVE_UP,
            actor=Actor.WORKER,
            actor_label=actor_name,
            summary=f"{actor_name} gave up after its retries; the sweeper takes over",
            data={"error": error[:1000]},
        )
        gave_up = booking.events.filter(kind=GAVE_UP).count()
        step = decisions.after_repeated_failures(gave_up, max_tries=settings.PARTNER_ACTOR_GIVE_UPS_MAX)
        if step == decisions.NextStep.NEEDS_ATTENTION and can_proceed(booking.flag_for_attention):
            apply_transition(
                booking,
                "flag_for_attention",
                actor=Actor.WORKER,
                actor_label=actor_name,
                reason="worker_gave_up",
                detail=f"Its work failed through every retry {gave_up} times; the last error: {error[:800]}",
            )
            return
        booking.next_check_at = timezone.now()
        booking.save(update_fields=["next_check_at", "updated_at"])
