"""The partner side's implementation of the booking core's port (bookings/ports.py)."""

from __future__ import annotations

from uuid import UUID

from django.db.models import Exists, Q

from bookings.models import Actor, Booking
from config.logging import log_context
from partners import messages
from partners.models import LIVE_RESERVATION_STATUSES, Partner, PartnerAttempt, PartnerReservation
from partners.services.observations import take_up_strays
from partners.services.submission import submission_run


class DramatiqPartnerPort:
    def queue_submission(self, booking_id: UUID, partner_code: str) -> None:
        messages.send_step(
            messages.SUBMIT_BOOKING, booking_id, queue_name=Partner(code=partner_code).queue_name
        )

    def submit_now(self, booking_id: UUID) -> None:
        with log_context(booking_id=str(booking_id)):
            messages.send_follow_up(booking_id, submission_run(booking_id))

    def queue_cancellation(self, booking_id: UUID, partner_code: str) -> None:
        messages.send_step(
            messages.CANCEL_BOOKING, booking_id, queue_name=Partner(code=partner_code).queue_name
        )

    def may_hold(self, booking_id: UUID) -> bool:
        """One statement; each EXISTS is answered from an index that starts with the booking
        (`attempt_fencing`, `reservation_booking_status`)."""
        fence = PartnerAttempt.objects.fencing().filter(booking_id=booking_id)
        held = PartnerReservation.objects.filter(booking_id=booking_id, compensated_at__isnull=True).filter(
            Q(status__in=LIVE_RESERVATION_STATUSES) | Q(compensation_requested_at__isnull=False)
        )
        return Booking.objects.filter(pk=booking_id).filter(Exists(fence) | Exists(held)).exists()

    def booking_moved(self, booking: Booking, *, actor: Actor | str, actor_label: str) -> None:
        """Whoever moved it (the one door, the worker's hand-over, support, the sweeper): a booking
        no longer going ahead takes its strays' cases up (no query while it is going ahead)."""
        take_up_strays(booking, actor=actor, actor_label=actor_label)
