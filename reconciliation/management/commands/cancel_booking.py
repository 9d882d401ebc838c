"""Cancel one or more bookings on the customer's behalf (the console's "Cancel on the customer's
behalf").

Each cancel carries the fee its preview showed, as the console's does: the run's own preview (the
one printed and confirmed; with --yes, the one this run previewed and printed just before), or
--expected-fee, the fee an earlier --dry-run showed and the customer was told. A cancel that
would now take more (the partner confirmed, the cut-off passed) is refused by the customer's own
cancellation service (`cancellation_fee_changed`), and the run goes on with the others.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.core.management.base import CommandParser

from bookings.pricing import CENT, written_as_amount
from config.commands import option_error
from reconciliation.management.commands._ops import BookingActionCommand
from reconciliation.services import support

# The largest fee the customer's own cancel takes as the one they were shown (the API's and the
# cancel page's `expected_fee`: 12 digits, two of them the cents).
FEE_BELOW = Decimal(10) ** 10


def fee_option(raw: str) -> Decimal:
    """--expected-fee as typed (`0.00`, `90`), refused before any target unless an amount written
    as support writes every amount (`written_as_amount`: digits 0-9, a point before the cents; not
    `1e1`, `1_0` or other scripts' digits) with at most two decimals (the cent our ledger keeps, in
    any booking's currency), 0 or more and below FEE_BELOW."""
    # "": no currency's own decimals, the ledger's two
    if not written_as_amount(raw, "") or Decimal(raw) >= FEE_BELOW:
        raise option_error(
            f"--expected-fee must be an amount of 0 or more and below {FEE_BELOW}, written with digits "
            f"0-9 and at most two decimals after a point (e.g. 0.00 or 90.00), not {raw!r}."
        )
    return Decimal(raw).quantize(CENT)


class Command(BookingActionCommand):
    help = (
        "Cancel a booking through the customer's own cancellation service: cancel_requested at once (the "
        "customer sees 'cancelling'), then a worker cancels every live reservation at the partner, verifies "
        "it, and the booking is cancelled. Shows our state beside the partner's first, with what cancelling "
        "does to the money, and asks to confirm (--yes to skip). A cancel that would now take a higher fee "
        "than the preview showed (or --expected-fee) is refused: cancellation_fee_changed. Refused for a "
        "booking that had ended before support took it up (nothing of the customer's is left to cancel: "
        "compensate cancels what the partner holds). Recorded as "
        "support.cancel_requested."
    )
    action = support.CANCEL
    confirm_question = "This cancels the booking(s) at the partner on the customer's behalf."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--expected-fee",
            metavar="AMOUNT",
            help=(
                "The most each cancel may take, in its booking's currency: the fee the customer was told "
                "(an earlier --dry-run's money.fee). Default: the fee this run's preview shows."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options.get("expected_fee") is not None:
            options["expected_fee"] = fee_option(options["expected_fee"])
        super().handle(*args, **options)

    def perform(
        self,
        shown: support.Preview,
        operator: support.Operator,
        token: str,
        options: dict[str, Any],
        batch: list[str],
    ):
        previewed = shown.money.fee if shown.money is not None else None
        return support.support_action_run(
            self.action,
            booking_id=shown.booking.pk,
            operator=operator,
            token=token,
            note=options["note"],
            batch=batch,
            expected_fee=options["expected_fee"] if options.get("expected_fee") is not None else previewed,
        )
