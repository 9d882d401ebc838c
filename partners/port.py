"""The partner side's implementation of the booking core's port (bookings/ports.py)."""

from __future__ import annotations

from uuid import UUID

from partners import tasks
from partners.models import Partner


class DramatiqPartnerPort:
    def queue_submission(self, booking_id: UUID, partner_code: str) -> None:
        tasks.send_for_partner(tasks.submit_booking, Partner(code=partner_code), str(booking_id))

    def queue_cancellation(self, booking_id: UUID, partner_code: str) -> None:
        tasks.send_for_partner(tasks.cancel_booking, Partner(code=partner_code), str(booking_id))
