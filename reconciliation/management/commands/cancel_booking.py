"""Cancel one or more bookings on the customer's behalf (the console's "Cancel on the customer's
behalf")."""

from __future__ import annotations

from reconciliation.management.commands._ops import BookingActionCommand
from reconciliation.services import support


class Command(BookingActionCommand):
    help = (
        "Cancel a booking through the customer's own cancellation service: cancel_requested at once (the "
        "customer sees 'cancelling'), then a worker cancels every live reservation at the partner, verifies "
        "it, and the booking is cancelled. Shows our state beside the partner's first and asks to confirm "
        "(--yes to skip). Recorded as support.cancel_requested."
    )
    action = support.CANCEL
    confirm_question = "This cancels the booking(s) at the partner on the customer's behalf."
