"""The partner side's implementation of the booking core's port (bookings/ports.py)."""

from __future__ import annotations

from uuid import UUID

from bookings.models import Actor, Booking
from config.logging import log_context
from partners import messages
from partners.models import Partner
from partners.services import observations
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
        return observations.may_hold(booking_id)

    def booking_moved(self, booking: Booking, *, actor: Actor | str, actor_label: str) -> None:
        """Whoever moved it (the one door, the worker's hand-over, support, the sweeper): a booking
        no longer going ahead takes its strays' cases up (no query while it is going ahead)."""
        observations.take_up_strays(booking, actor=actor, actor_label=actor_label)
