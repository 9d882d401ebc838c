"""Link an orphan reservation to a booking (the console's orphan "Link to a booking")."""

from __future__ import annotations

from django.core.management.base import CommandParser

from reconciliation.management.commands._ops import OrphanActionCommand
from reconciliation.services import support


class Command(OrphanActionCommand):
    help = (
        "Make an orphan case's reservation the reservation of a booking of the same partner (by default the "
        "one its client reference names; --booking names another, with a --note saying why); the one door "
        "then reconciles the booking (it may confirm it, or cancel a second live reservation as a duplicate, "
        "as the preview says). Asks to confirm (--yes to skip). Recorded as support.orphan_linked, in the "
        "case's history and on the booking's timeline."
    )
    action = support.ORPHAN_LINK
    confirm_question = "This gives the booking the reservation, and the one door reconciles the booking."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--booking", metavar="REF", help="The booking to link it to (default: its client reference's)."
        )
