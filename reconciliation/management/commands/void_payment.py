"""Void a booking's hold (the console's payment "Void the hold")."""

from __future__ import annotations

from reconciliation.management.commands._payment_ops import PaymentActionCommand
from reconciliation.services.support import payments as money


class Command(PaymentActionCommand):
    help = (
        "Release a booking's hold at the provider (cancel its intent; nothing is taken), recorded as "
        "support.void_requested. Refused for a booking that owes money (capture it, or cancel the booking) "
        "and for one the partner may still confirm. Shows our payment beside the provider's first and asks "
        "to confirm (--yes to skip)."
    )
    action = money.VOID
