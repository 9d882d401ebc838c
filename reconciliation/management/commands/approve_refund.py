"""Approve (or reject) another person's refund proposal, through the provider or paid another way:
the two-person rule."""

from __future__ import annotations

from reconciliation.management.commands._payment_ops import ProposalCommand


class Command(ProposalCommand):
    help = (
        "Approve a refund proposal made by someone else (a refund above the approval amount of its "
        "currency): the "
        "refund then runs, bounded by what is refundable now, recorded as support.refund_approved; a refund "
        "paid another way (proposed by record_outside_refund) is then recorded, bounded by what is owed back "
        "now, and the customer told. --reject "
        "rejects it (its proposer withdraws it) and nothing is refunded (support.refund_rejected). The "
        "proposer can never approve their own. Shows the proposal and our payment beside the provider's "
        "first and asks to confirm (--yes to skip)."
    )
