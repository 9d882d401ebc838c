"""Handing a booking to reconciliation when its worker gave up: it is never dropped."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.timeline import record_event


def hand_to_reconciliation(booking_id: str, *, actor_name: str, error: str) -> None:
    """Mark the booking due now, so that the next sweep syncs it, and say so on its timeline."""
    with transaction.atomic():
        booking = Booking.objects.select_for_update(no_key=True).filter(pk=booking_id).first()
        if booking is None:
            return
        booking.next_check_at = timezone.now()
        booking.save(update_fields=["next_check_at", "updated_at"])
        record_event(
            booking,
            "worker.retries_exhausted",
            actor=Actor.WORKER,
            actor_label=actor_name,
            summary=f"{actor_name} gave up after its retries; the sweeper takes over",
            data={"error": error[:1000]},
        )
