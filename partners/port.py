"""The partner side's implementation of the booking core's port (bookings/ports.py)."""

from __future__ import annotations

from uuid import UUID

from partners import messages
from partners.models import Partner


class DramatiqPartnerPort:
    def queue_submission(self, booking_id: UUID, partner_code: str) -> None:
        messages.send_for_partner(messages.SUBMIT_BOOKING, Partner(code=partner_code), str(booking_id))

    def queue_cancellation(self, booking_id: UUID, partner_code: str) -> None:
        messages.send_for_partner(messages.CANCEL_BOOKING, Partner(code=partner_code), str(booking_id))
