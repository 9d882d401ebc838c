"""The booking page's payment panel: our payment (authorized, captured, refunded, what the booking
owes), the provider's ids and its state beside ours (asked live when the page opens, within the
console's wait, else the last state it told us), the operations asked of it, what support paid
back another way (each recording: how, by whom), the refund proposals, and the payment actions
the operator may take, each with why it cannot run now."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bookings.models import Booking
from payments.models import OperationKind, OperationState, Payment, PaymentOperation, PaymentStatus
from payments.services.outside import OutsideRefund, outside_refunds
from payments.timeline import hide_provider_ids
from reconciliation.models import Person, ProposalState, RefundProposal
from reconciliation.services.support.payments import (
    APPROVE,
    CAPTURE,
    OUTSIDE,
    PAYMENT_ACTIONS,
    PROVIDER_TRUTH_PERMISSION,
    REFUND,
    VOID,
    PaymentSituation,
    ProviderSide,
    approval_above,
    provider_side,
)
from reconciliation.services.support.payments.situation import refusal
from reconciliation.services.support.permissions import Operator

P = PaymentStatus
# The statuses of a payment whose authorization the provider granted (held, then taken or let go).
WAS_AUTHORIZED = (P.AUTHORIZED, P.CAPTURED, P.VOIDED, P.LAPSED)


@dataclass
class PanelAction:
    name: str
    title: str
    permitted: bool
    refusal: str  # why it cannot run now ('' when it can)


@dataclass
class PaymentPanel:
    booking: Booking
    payment: Payment
    provider: ProviderSide
    show_ids: bool
    owed: Decimal | None
    refundable: Decimal
    operations: list[PaymentOperation]
    proposals: list[RefundProposal]
    actions: list[PanelAction]
    can_approve: bool
    approval_above: Decimal | None  # None: no amount is set for the currency, any needs approval
    me: Person  # the operator, for the two-person rule: read once with the proposals' people
    refund_ids: list[str] = field(default_factory=list)
    outside: list[OutsideRefund] = field(default_factory=list)  # each recording paid another way

    @property
    def authorized(self) -> Decimal | None:
        return self.payment.amount if self.payment.status in WAS_AUTHORIZED else None

    @property
    def net(self) -> Decimal:
        return self.payment.net_amount

    @property
    def open_operation(self) -> PaymentOperation | None:
        return next((o for o in self.operations if o.state == OperationState.OPEN), None)

    @property
    def pending_proposals(self) -> list[RefundProposal]:
        return [p for p in self.proposals if p.state == ProposalState.PENDING]

    @property
    def proposal_rows(self) -> list[dict[str, Any]]:
        """Each proposal with what this operator may do about it: approve (another person's,
        with the permission), reject (with the permission) or withdraw (their own)."""
        rows = []
        for proposal in self.proposals:
            own = proposal.proposed_by_same(self.me)
            pending = proposal.state == ProposalState.PENDING
            rows.append(
                {
                    "proposal": proposal,
                    "own": own,
                    "may_approve": pending and self.can_approve and not own,
                    "may_reject": pending and (self.can_approve or own),
                }
            )
        return rows

    def as_dict(self) -> dict[str, Any]:
        payment = self.payment
        ids = self.show_ids
        return {
            "status": payment.status,
            "amount": str(payment.amount),
            "currency": payment.currency,
            "authorized": None if self.authorized is None else str(self.authorized),
            "captured": str(payment.captured_amount),
            "refunded": str(payment.refunded_amount),
            "refunds_failed_owed": str(payment.failed_refunds_owed),
            "refunds_refused_owed": str(payment.refused_refunds_owed),
            "release_refused": payment.release_refused and payment.status == P.AUTHORIZED,
            "refunded_outside": str(payment.refunded_outside),
            "net": str(self.net),
            "refundable": str(self.refundable),
            "owed": None if self.owed is None else str(self.owed),
            "authorization_expires_at": (
                payment.authorization_expires_at.isoformat() if payment.authorization_expires_at else None
            ),
            "in_review": payment.in_review,
            "card": f"{payment.card_brand} {payment.card_last4}".strip(),
            "decline": payment.decline_code,
            "next_check_at": payment.next_check_at.isoformat() if payment.next_check_at else None,
            "intent": payment.provider_intent_id if ids else None,
            "refunds": self.refund_ids if ids else None,
            "provider": self.provider.as_dict(with_ids=ids),
            "operations": [
                {
                    "key": o.idempotency_key,
                    "kind": o.kind,
                    "amount": None if o.amount is None else str(o.amount),
                    "state": o.state,
                    "failure_reason": o.failure_reason,
                    "tries": o.tries,
                    "last_outcome": o.last_outcome,
                    "provider_object": o.provider_object_id if ids else None,
                }
                for o in self.operations
            ],
            "paid_outside": [o.as_dict() for o in self.outside],
            "proposals": [
                {
                    "id": p.pk,
                    "kind": p.kind,
                    "method": p.method or None,
                    "amount": str(p.amount),
                    "state": p.state,
                    "proposed_by": p.proposed_by_label,
                    "decided_by": p.decided_by_label or None,
                }
                for p in self.proposals
            ],
            "actions": [
                {"name": a.name, "permitted": a.permitted, "refusal": a.refusal} for a in self.actions
            ],
        }


def payment_panel(booking: Booking, *, operator: Operator, live: bool = True) -> PaymentPanel | None:
    """The panel of a booking that pays; None for one that does not."""
    payment = Payment.objects.filter(booking=booking).first()
    if payment is None:
        return None
    situation = PaymentSituation(booking, payment)
    operations = list(PaymentOperation.objects.filter(payment=payment).order_by("opened_at", "id"))
    show_ids = operator.can(PROVIDER_TRUTH_PERMISSION)
    if not show_ids:
        for operation in operations:  # shown, never saved: an error the provider wrote may name its ids
            operation.last_error = hide_provider_ids(operation.last_error)
    # The situation's cached open operation, from the list already read (one query fewer).
    situation.__dict__["open_operation"] = next(
        (o for o in operations if o.state == OperationState.OPEN), None
    )
    actions = [
        PanelAction(
            name=name,
            title=PAYMENT_ACTIONS[name]["title"],
            permitted=operator.can(PAYMENT_ACTIONS[name]["permission"]),
            refusal=refusal(name, situation),
        )
        # Recording money paid another way only while refunds that could not be made owe some.
        for name in (REFUND, CAPTURE, VOID, *((OUTSIDE,) if payment.owed_back > 0 else ()))
    ]
    proposals = list(RefundProposal.objects.filter(payment=payment).order_by("-proposed_at", "-id")[:20])
    # Who proposed and decided each, and who is looking: the accounts named like their OS users in
    # one query, not one a row (the rows' "own" and "withdrawn").
    named = RefundProposal.read_people(proposals, operator.os_user)
    return PaymentPanel(
        booking=booking,
        payment=payment,
        provider=provider_side(payment, live=live),
        show_ids=show_ids,
        owed=situation.owed,
        refundable=situation.refundable,
        operations=operations,
        proposals=proposals,
        actions=actions,
        can_approve=operator.can(PAYMENT_ACTIONS[APPROVE]["permission"]),
        approval_above=approval_above(situation.currency),
        me=operator.person_among(named),
        refund_ids=[
            o.provider_object_id
            for o in operations
            if o.kind == OperationKind.REFUND and o.state == OperationState.SUCCEEDED and o.provider_object_id
        ],
        outside=outside_refunds(booking=booking) if payment.refunded_outside else [],
    )
