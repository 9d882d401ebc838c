"""Record a refund the card refused as paid to the customer another way (the console's payment
"Record a refund paid another way"); above the approval amount, propose it (approve_refund)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from payments.models import OutsideMethod
from reconciliation.management.commands._payment_ops import PaymentActionCommand
from reconciliation.services.support import payments as money


class Command(PaymentActionCommand):
    help = (
        "Record --amount of what refunds the card refused still owe a booking's customer as paid to them "
        "another way (the card takes nothing back), with --method saying how (bank_transfer, cash, voucher: "
        "a voucher or credit, other) and a --note with its trace (required: the transfer's reference). "
        "Nothing is asked of the provider: what is owed back goes down, the payment's refunded_outside up, "
        "the customer is told, and support.refund_recorded_outside is on the timeline. When what support "
        "gave back of the payment (refunds and money paid another way), with this, comes to more than "
        "the approval amount of the payment's currency (any amount of a currency with none), it is only "
        "proposed (support.refund_proposed) and recorded once "
        "another person approves it (approve_refund). Shows our payment beside the provider's first and "
        "asks to confirm (--yes to skip)."
    )
    action = money.OUTSIDE
    required_to_act = ("amount", "method", "note")
    confirm_question = "This records money as given back to the customer: it is no longer owed to them."
    propose_question = (
        "This proposes the recording for another person's approval: nothing is recorded, and the customer "
        "told nothing, until they approve it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--amount", help="How much was paid another way, in the payment's currency (e.g. 360.00)."
        )
        parser.add_argument(
            "--method",
            choices=OutsideMethod.values,
            help="How it was paid (required to act): bank_transfer, cash, voucher (a voucher or credit), "
            "other (the note says how).",
        )

    def amount(self, booking, options: dict[str, Any]):
        if not options.get("amount"):
            return None
        return money.parse_amount(options["amount"], booking.currency)

    def asked(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"method": options.get("method") or ""}
