"""Retry the submission of one or more bookings (the console's "Retry the submission")."""

from __future__ import annotations

from reconciliation.management.commands._ops import BookingActionCommand
from reconciliation.services import support


class Command(BookingActionCommand):
    help = (
        "Submit a booking again: re-queue a lost submission, or send a needs-attention booking that the "
        "partner provably holds nothing for back to requested. Refused while an earlier create's outcome "
        "is unknown (never a blind second create), and where our key already made a reservation the partner "
        "cancelled or rejected (the same key would only get it back), and for a booking that had ended "
        "before support took it up (its customer's booking has ended). Recorded as support.retry_requested."
    )
    action = support.RETRY
    confirm_question = "This sends the booking(s) to the partner again."
