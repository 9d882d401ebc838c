"""The partner side's implementation of the booking core's port (bookings/ports.py)."""

from __future__ import annotations

from uuid import UUID

from partners import tasks


class DramatiqPartnerPort:
    def queue_submission(self, booking_id: UUID) -> None:
        tasks.send_for_booking(tasks.submit_booking, booking_id)

    def queue_cancellation(self, booking_id: UUID) -> None:
        tasks.send_for_booking(tasks.cancel_booking, booking_id)
