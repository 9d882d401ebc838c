"""Cancel orphan reservations at their partner (the console's orphan "Cancel at the partner")."""

from __future__ import annotations

from reconciliation.management.commands._ops import OrphanActionCommand
from reconciliation.services import support


class Command(OrphanActionCommand):
    help = (
        "Cancel the reservation of each orphan case at its partner through the compensation actor, verified "
        "by a lookup (a cancel automation gave up on is driven again with fresh tries); the case closes "
        "itself once verified. Shows our record beside the partner's first and asks to confirm (--yes to "
        "skip). Recorded as support.orphan_cancel_requested."
    )
    action = support.ORPHAN_CANCEL
    confirm_question = "This cancels the reservation(s) at the partner."
