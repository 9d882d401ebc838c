"""Refund part or all of a booking's captured payment (the console's payment "Refund")."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from reconciliation.management.commands._payment_ops import PaymentActionCommand
from reconciliation.services.support import payments as money


class Command(PaymentActionCommand):
    help = (
        "Refund --amount of what a booking's payment captured and has not refunded yet, asked of the "
        "provider under the payments app's own key, recorded as support.refund_requested; above the "
        "approval amount of the payment's currency (PAYMENTS_REFUND_APPROVAL_ABOVE in "
        "PAYMENTS_REFUND_APPROVAL_CURRENCY, or PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY; any amount "
        "of a currency with none) it is only proposed (support.refund_proposed, a --note is required) "
        "and runs once another person approves it (approve_refund). Shows our payment beside the provider's "
        "first and asks to confirm (--yes to skip)."
    )
    action = money.REFUND
    required_to_act = ("amount",)

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--amount", help="How much to refund, in the payment's currency (e.g. 25.00).")

    def amount(self, booking, options: dict[str, Any]):
        if not options.get("amount"):
            return None
        return money.parse_amount(options["amount"], booking.currency)
