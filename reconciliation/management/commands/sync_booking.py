"""Force a partner sync of one or more bookings (the console's "Force a partner sync")."""

from __future__ import annotations

from django.core.management.base import CommandParser

from reconciliation.management.commands._ops import BookingActionCommand
from reconciliation.services import support


class Command(BookingActionCommand):
    help = (
        "Show our state beside the partner's, then sync each booking with its partner through the same "
        "service as automation (queued for a worker; --now runs it here). Recorded on the timeline as "
        "support.sync_requested."
    )
    action = support.SYNC
    confirm_question = "This asks the partner what it holds and applies its answer to the booking(s)."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--now", action="store_true", help="Run the sync in this process, not on a worker."
        )

    def run_action(self, booking, operator, token, options, *, batch):
        return support.support_sync(
            booking_id=booking.pk,
            operator=operator,
            token=token,
            note=options["note"],
            inline=options["now"],
            batch=batch,
        )
