"""Close orphan cases with a note (the console's orphan "Close with a note")."""

from __future__ import annotations

from reconciliation.management.commands._ops import OrphanActionCommand
from reconciliation.services import support


class Command(OrphanActionCommand):
    help = (
        "Close orphan cases with a note; nothing is asked of the partner. Refused while a cancel is under "
        "way, and while the partner holds the reservation live unless the operator also has "
        f"{support.CLOSE_LIVE_ORPHAN_PERMISSION}. Asks to confirm (--yes to skip). Recorded as "
        "support.orphan_closed."
    )
    action = support.ORPHAN_CLOSE
    confirm_question = "This closes the case(s); nobody will act on them again."
    required_to_act = ("note",)
