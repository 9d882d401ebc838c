"""Shared parts of the payment action commands: a booking's payment (refund, capture, void) or a
refund proposal (approve, reject) as the target, its preview beside the provider's live answer
as a rich table, and the action run in this process (the provider asked before the command ends)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from rich.console import Console
from rich.table import Table

from payments.services.outside import method_label
from reconciliation.management.commands._ops import ActionCommand, mismatch_marked, not_possible
from reconciliation.services import support
from reconciliation.services.support import payments as money


def payment_preview_table(shown: money.PaymentPreview) -> Table:
    booking, payment, side = shown.booking, shown.payment, shown.provider
    table = Table(title=f"{shown.title}: {booking.reference}", show_lines=False)
    table.add_column("")
    table.add_column("ours")
    table.add_column(f"provider ({'live' if side and side.live else 'last known'})")
    table.add_row("booking", f"{booking.status} (customer sees {booking.customer_status})", "")
    if payment is None:
        table.add_row("payment", "none: the booking does not pay through us", "")
        return table
    money_ = payment.currency
    table.add_row("amount", f"{payment.amount} {money_}", "")
    if side is not None:
        for pair in side.pairs:
            table.add_row(pair.name, pair.ours or "-", mismatch_marked(pair.theirs or "-", pair.mismatch))
    table.add_row("refundable", f"{shown.refundable} {money_}", "")
    table.add_row("owed now", "not decided" if shown.owed is None else f"{shown.owed} {money_}", "")
    if payment.owed_back or payment.refunded_outside:
        table.add_row("owed back (refund not made)", f"{payment.owed_back} {money_}", "")
        table.add_row("paid back another way", f"{payment.refunded_outside} {money_}", "")
    if shown.method:
        table.add_row("paid by", method_label(shown.method), "")
    if shown.show_ids:
        table.add_row("intent", payment.provider_intent_id or "(none yet)", "")
    if shown.proposal is not None:
        p = shown.proposal
        table.add_row(
            f"proposal #{p.pk}",
            f"{p.what}: {p.amount} {p.currency} by {p.proposed_by_label} ({p.state})",
            "",
        )
        table.add_row("why", p.note[:60], "")  # ours: the provider's column is the provider's only
    if side is not None and side.note:
        table.caption = side.note
    return table


def print_payment_preview(console: Console, shown: money.PaymentPreview) -> None:
    console.print(payment_preview_table(shown))
    if shown.allowed:
        for effect in shown.effects:
            console.print(f"  • {effect}")
        for warning in shown.warnings:
            console.print(f"  ! {warning}", style="yellow")
    else:
        console.print(not_possible(shown.refusal))


class PaymentActionCommand(ActionCommand):
    """`<action>_payment REF`: preview the booking's payment beside the provider's, then act."""

    confirm_question = "This moves the customer's money at the provider."
    # Asked instead when every target will only be proposed (the preview's `needs_approval`).
    propose_question = (
        "This proposes the refund for another person's approval: no money moves until they approve it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("references", nargs="+", metavar="REF", help="Booking reference(s).")
        super().add_arguments(parser)

    def permission(self) -> str:
        return money.PAYMENT_ACTIONS[self.action]["permission"]

    def targets(self, options: dict[str, Any]) -> list[Any]:
        return [support.booking_by_reference(reference) for reference in options["references"]]

    def amount(self, booking, options: dict[str, Any]):
        return None

    def asked(self, options: dict[str, Any]) -> dict[str, Any]:
        """What the action is asked beyond its target, amount and note (recording: the method)."""
        return {}

    def preview(
        self, target: Any, operator: support.Operator, options: dict[str, Any]
    ) -> money.PaymentPreview:
        return money.payment_preview(
            self.action,
            target,
            operator=operator,
            amount=self.amount(target, options),
            live=not options["no_live"],
            **self.asked(options),
        )

    def print_preview(self, console: Console, shown: money.PaymentPreview) -> None:
        print_payment_preview(console, shown)

    def question(self, allowed: list[money.PaymentPreview]) -> str:
        return self.propose_question if all(p.needs_approval for p in allowed) else self.confirm_question

    def perform(
        self,
        shown: money.PaymentPreview,
        operator: support.Operator,
        token: str,
        options: dict[str, Any],
        batch: list[str],
    ) -> money.PaymentActionResult:
        return money.payment_action_run(
            self.action,
            booking_id=shown.booking.pk,
            operator=operator,
            token=token,
            note=options["note"],
            amount=shown.amount,
            inline=True,
            batch=batch,
            **self.asked(options),
        )

    def key(self, shown: money.PaymentPreview) -> str:
        return support.target_key(shown.booking)

    def label(self, shown: money.PaymentPreview) -> str:
        return shown.booking.reference


class ProposalCommand(ActionCommand):
    """`approve_refund PROPOSAL [--reject]`: preview the proposal beside the provider, then decide."""

    action = money.APPROVE
    confirm_question = (
        "This decides another person's refund (approved: the provider refunds it now; one paid another "
        "way is recorded now and the customer told)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("proposals", nargs="+", metavar="PROPOSAL", help="Refund proposal number(s).")
        parser.add_argument(
            "--reject",
            action="store_true",
            help="Reject it (its proposer: withdraw it); nothing is refunded.",
        )
        super().add_arguments(parser)

    def handle(self, *args, **options) -> None:
        self.action = money.REJECT if options["reject"] else money.APPROVE
        super().handle(*args, **options)

    def permission(self) -> str | None:
        if self.action == money.REJECT:
            # Its proposer withdraws it with no permission, anyone else rejects it with the approve
            # one: each proposal's preview and the service ask, as the console does.
            return None
        return money.PAYMENT_ACTIONS[self.action]["permission"]

    def targets(self, options: dict[str, Any]) -> list[Any]:
        return [money.proposal_by_id(value) for value in options["proposals"]]

    def preview(
        self, target: Any, operator: support.Operator, options: dict[str, Any]
    ) -> money.PaymentPreview:
        return money.proposal_preview(self.action, target, operator=operator, live=not options["no_live"])

    def print_preview(self, console: Console, shown: money.PaymentPreview) -> None:
        print_payment_preview(console, shown)

    def perform(
        self,
        shown: money.PaymentPreview,
        operator: support.Operator,
        token: str,
        options: dict[str, Any],
        batch: list[str],
    ) -> money.PaymentActionResult:
        assert shown.proposal is not None
        return money.payment_action_run(
            self.action,
            proposal_id=shown.proposal.pk,
            operator=operator,
            token=token,
            note=options["note"],
            inline=True,
            batch=batch,
        )

    def key(self, shown: money.PaymentPreview) -> str:
        assert shown.proposal is not None
        return support.target_key(shown.proposal)

    def label(self, shown: money.PaymentPreview) -> str:
        assert shown.proposal is not None
        return f"{shown.proposal.name[0].lower()}{shown.proposal.name[1:]} ({shown.booking.reference})"
