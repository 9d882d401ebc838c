"""Compensate one or more bookings: cancel at the partner and fail (the console's "Compensate")."""

from __future__ import annotations

from reconciliation.management.commands._ops import BookingActionCommand
from reconciliation.services import support


class Command(BookingActionCommand):
    help = (
        "Fail a booking and cancel every live reservation its partner holds for it (verified by a lookup; "
        "a failed cancel goes to needs_attention). A booking that had ended before support took it up "
        "is not failed: it returns to its end once the partner holds nothing of it. Shows our state "
        "beside the partner's first and asks to confirm (--yes to skip). Recorded as support.compensated."
    )
    action = support.COMPENSATE
    confirm_question = (
        "This cancels reservations at the partner and fails the booking(s) (one that had ended "
        "before support took it up returns to its end instead)."
    )
