"""Settle one or more bookings that need attention (the console's "Mark resolved")."""

from __future__ import annotations

from django.core.management.base import CommandParser

from reconciliation.management.commands._ops import BookingActionCommand
from reconciliation.services import support


class Command(BookingActionCommand):
    help = (
        "Settle a needs-attention booking as confirmed (only when the partner confirmed the reservation we "
        "hold), failed or cancelled (only when the partner holds nothing live for it); a booking that "
        "had ended before support took it up, only back to that end (cancelled, rejected, failed or "
        "expired); with a note for the timeline. The preview shows which outcomes are possible now; "
        "asks to confirm (--yes to skip). Recorded as support.resolved."
    )
    action = support.RESOLVE
    confirm_question = "This settles the booking(s) for good, and the customer sees the outcome."
    required_to_act = ("outcome", "note")

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        # Plain strings: argparse words a refusal with each choice's repr, which for the
        # BookingState members is `BookingState.CONFIRMED`, not what --help shows or one types.
        parser.add_argument(
            "--outcome", choices=[str(s) for s in support.all_outcomes()], help="The outcome to settle on."
        )

    def preview(self, target, operator, options) -> support.Preview:
        shown = super().preview(target, operator, options)
        # The outcome asked for, when it is refused, refuses the preview: a --dry-run then exits as
        # the run would. By the run's own rule, not the outcomes the preview lists: an end the
        # booking never had (expired, rejected) is refused without being listed.
        outcome = options["outcome"]
        why_not = support.outcome_refusal(outcome, support.Situation(shown.booking)) if outcome else ""
        if shown.allowed and why_not:
            shown.allowed, shown.refusal = False, f"{options['outcome']}: {why_not}"
        return shown

    def run_action(self, booking, operator, token, options, *, batch):
        return support.support_action_run(
            self.action,
            booking_id=booking.pk,
            operator=operator,
            token=token,
            note=options["note"],
            outcome=options["outcome"],
            batch=batch,
        )
