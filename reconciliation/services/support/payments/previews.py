"""What a payment action will do, shown before it runs: our payment beside the provider's live
answer, whether the action may run now and why not, and its effects step by step (a refund, or a
refund paid another way, above the approval amount: that it is only proposed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bookings.models import Booking
from config.errors import ValidationFailed
from payments.models import Payment
from payments.services.outside import method_label
from reconciliation.models import RefundProposal
from reconciliation.services.support.once import new_token
from reconciliation.services.support.payments.provider_side import ProviderSide, provider_side
from reconciliation.services.support.payments.situation import (
    APPROVE,
    CAPTURE,
    OUTSIDE,
    PAYMENT_ACTIONS,
    PROVIDER_TRUTH_PERMISSION,
    REFUND,
    REJECT,
    VOID,
    WITHDRAW_TITLE,
    PaymentSituation,
    approval_above,
    approval_rule,
    one_os_account,
    proposal_refusal,
    refusal,
    same_person,
)
from reconciliation.services.support.permissions import Operator


@dataclass
class PaymentPreview:
    action: str
    title: str
    booking: Booking
    payment: Payment | None
    allowed: bool
    refusal: str
    effects: list[str]
    provider: ProviderSide | None
    token: str
    show_ids: bool
    amount: Decimal | None = None
    refundable: Decimal | None = None
    owed: Decimal | None = None
    needs_approval: bool = False
    proposal: RefundProposal | None = None
    warnings: list[str] = field(default_factory=list)
    method: str = ""  # how a refund paid another way was paid (chosen, or the proposal's)

    def as_dict(self) -> dict[str, Any]:
        payment = self.payment
        above = approval_above(payment.currency if payment is not None else self.booking.currency)
        return {
            "action": self.action,
            "title": self.title,
            "booking": self.booking.reference,
            "allowed": self.allowed,
            "refusal": self.refusal,
            "effects": self.effects,
            "warnings": self.warnings,
            "amount": None if self.amount is None else str(self.amount),
            "method": self.method or None,
            "needs_approval": self.needs_approval,
            # None: no amount is set for the payment's currency, every refund in it is proposed.
            "approval_above": None if above is None else str(above),
            "proposal": None if self.proposal is None else _proposal_dict(self.proposal),
            "ours": None
            if payment is None
            else {
                "status": payment.status,
                "amount": str(payment.amount),
                "currency": payment.currency,
                "captured": str(payment.captured_amount),
                "refunded": str(payment.refunded_amount),
                "refunded_outside": str(payment.refunded_outside),
                "owed_back": str(payment.owed_back),
                "refundable": None if self.refundable is None else str(self.refundable),
                "owed": None if self.owed is None else str(self.owed),
                "booking_status": self.booking.status,
                "intent": payment.provider_intent_id if self.show_ids else None,
            },
            "provider": None if self.provider is None else self.provider.as_dict(with_ids=self.show_ids),
            "token": self.token,
        }


def _proposal_dict(proposal: RefundProposal) -> dict[str, Any]:
    return {
        "id": proposal.pk,
        "kind": proposal.kind,
        "method": proposal.method or None,
        "amount": str(proposal.amount),
        "currency": proposal.currency,
        "state": proposal.state,
        "note": proposal.note,
        "proposed_by": proposal.proposed_by_label,
        "proposed_at": proposal.proposed_at.isoformat(),
        "decided_by": proposal.decided_by_label or None,
    }


def _effects(
    action: str, s: PaymentSituation, amount: Decimal | None, method: str = ""
) -> tuple[list[str], list[str]]:
    """(steps, warnings) of the action as it would run now."""
    payment = s.payment
    assert payment is not None
    money = payment.currency
    key = "under a new key <payment>:<kind>:<n>, committed before the call"
    if action == CAPTURE:
        rest = payment.amount - s.capture_amount
        return (
            [
                f"Capture {s.capture_amount} {money} of the {payment.amount} {money} hold {key}; "
                + (f"the rest, {rest} {money}, is released." if rest > 0 else "the whole hold is taken."),
                f"The booking owes {s.owed} {money} as {s.owes_as}.",
                "The provider's answer enters through the one door; an unknown outcome is asked again "
                "under the same key.",
            ],
            [],
        )
    if action == VOID:
        warnings = []
        if s.booking.confirmed_shown_at is not None or s.owed is None:
            warnings.append(
                "Once released the hold cannot be captured: should the booking be confirmed later, "
                "it is not paid."
            )
        return (
            [
                f"Cancel the intent at the provider: the {payment.amount} {money} hold is released, "
                f"nothing is taken ({key}).",
                "The customer is told their money was released.",
            ],
            warnings,
        )
    if action == OUTSIDE:
        steps = _approval_step(s, amount, outside=True)
        return steps + _outside_effects(s, amount, method, proposed=bool(steps)), []
    # refund
    shown = f"{amount} {money}" if amount is not None else f"up to {s.refundable} {money}"
    steps = _approval_step(s, amount)
    warnings = []
    steps += [
        f"Refund {shown} of the {payment.captured_amount} {money} captured "
        f"({payment.refunded_amount} {money} refunded so far) {key}.",
        "The provider's answer enters through the one door; a refund whose answer was lost is found by its "
        "key, never made twice.",
    ]
    if amount is not None:
        warnings += short_of_owed(s, amount)
    return steps, warnings


def _approval_step(s: PaymentSituation, amount: Decimal | None, *, outside: bool = False) -> list[str]:
    """The first step of giving `amount` back above the approval amount: that it is only proposed."""
    if amount is None or not s.needs_approval(amount):
        return []
    together = (
        f" What support gives back of a payment counts together, through the provider or another way: "
        f"{s.approval_words(amount, outside=outside)}."
        if s.support_refunded or s.support_outside or s.support_proposed
        else ""
    )
    then = "it is recorded, and the customer told" if outside else "it runs"
    rule = approval_rule(s.currency)
    return [
        f"{rule[0].upper()}{rule[1:]}: only proposed. Another person with the approve permission "
        f"approves it (then {then}) or rejects it; both are on the timeline.{together}"
    ]


def short_of_owed(s: PaymentSituation, amount: Decimal) -> list[str]:
    """The warning a refund of `amount` earns when the customer would then have paid less than
    the booking owes by its state and policy, read from the rows as they are now: one rule for
    proposing a refund and for approving one (rows may have moved since it was proposed)."""
    owed = s.owed
    if owed is None:
        return []
    after = s.refundable - amount
    if after >= owed:
        return []
    money = s.currency
    return [
        f"After it the customer will have paid {after} {money}, less than the {owed} {money} "
        f"the booking owes as {s.owes_as} by its policy: automation never charges the "
        "difference."
    ]


def _outside_effects(
    s: PaymentSituation, amount: Decimal | None, method: str = "", *, proposed: bool = False
) -> list[str]:
    payment = s.payment
    assert payment is not None
    money = payment.currency
    owed = s.owed_back
    how = f"by {method_label(method).lower()}" if method else "by the method you choose"
    steps = [
        f"Record {amount if amount is not None else f'up to {owed}'} {money} of the {owed} {money} owed "
        f"back (refunds the card refused) as paid to the customer another way, {how}, with the note "
        "saying how (a bank transfer's reference): nothing is asked of the provider, and nothing moves "
        "there."
    ]
    if amount is None:
        return steps
    left, outside = owed - amount, payment.refunded_outside + amount
    told = (
        "that we paid it back another way, and no longer that we still owe them"
        if left == 0
        else f"what was paid back another way, and that we still owe them {left} {money}"
    )
    return [
        *steps,
        f"Owed back {owed} → {left} {money}; paid back another way {payment.refunded_outside} → "
        f"{outside} {money}; refunded by the provider stays {payment.refunded_amount} {money}, as the "
        "provider says.",
        f"The customer is told {'once it is approved' if proposed else 'at once'} (their page, the API, "
        f"one mail): {told}.",
    ]


def payment_preview(
    action: str,
    booking: Booking,
    *,
    operator: Operator,
    amount: Decimal | None = None,
    live: bool = True,
    token: str | None = None,
    all_by_default: bool = False,
    method: str = "",
) -> PaymentPreview:
    """What `action` (refund, capture, void) will do to the booking's payment, beside the
    provider's live answer. `all_by_default`: a refund without an amount is previewed as one of
    its default (`refund_by_default`: what a refund the card refused still owes, else everything
    refundable; the console's confirm form offers that amount, so it must be what the preview
    showed), not as "up to" it. `method`: how a refund paid another way was paid, when chosen."""
    if action not in (REFUND, CAPTURE, VOID, OUTSIDE):
        raise ValidationFailed(
            f"Unknown payment action {action!r}; known: {REFUND}, {CAPTURE}, {VOID}, {OUTSIDE}."
        )
    booking = Booking.objects.select_related("partner").get(pk=booking.pk)
    payment = Payment.objects.filter(booking=booking).first()
    s = PaymentSituation(booking, payment)
    if action == REFUND and amount is None and all_by_default and s.refund_by_default > 0:
        amount = s.refund_by_default
    if action == OUTSIDE and amount is None and all_by_default and s.owed_back > 0:
        amount = s.owed_back
    why_not = refusal(action, s, amount=amount)
    effects, warnings = (
        _effects(action, s, amount, method) if payment is not None and not why_not else ([], [])
    )
    # The rule the action applies decides what it is called: the console's confirm button and
    # the command's preview say "Propose a refund" when it will only be proposed.
    proposed = action in (REFUND, OUTSIDE) and amount is not None and s.needs_approval(amount)
    return PaymentPreview(
        action=action,
        title=PAYMENT_ACTIONS[action]["proposed_title" if proposed else "title"],
        booking=booking,
        payment=payment,
        allowed=not why_not,
        refusal=why_not,
        effects=effects,
        warnings=warnings,
        provider=provider_side(payment, live=live) if payment is not None else None,
        token=token or new_token(),
        show_ids=operator.can(PROVIDER_TRUTH_PERMISSION),
        amount=amount,
        refundable=s.refundable if payment is not None else None,
        owed=s.owed,
        needs_approval=proposed,
        proposal=s.pending_proposal,
        method=method if action == OUTSIDE else "",
    )


def proposal_preview(
    action: str,
    proposal: RefundProposal,
    *,
    operator: Operator,
    live: bool = True,
    token: str | None = None,
) -> PaymentPreview:
    """What approving (or rejecting) a refund proposal will do, beside the provider's live answer.
    Rejecting their own proposal, its proposer withdraws it: the preview says so."""
    if action not in (APPROVE, REJECT):
        raise ValidationFailed(f"Unknown proposal action {action!r}; known: {APPROVE}, {REJECT}.")
    proposal = RefundProposal.objects.select_related("booking", "booking__partner", "payment").get(
        pk=proposal.pk
    )
    booking, payment = proposal.booking, proposal.payment
    s = PaymentSituation(booking, payment)
    money = proposal.currency
    own = same_person(proposal, operator)
    title = WITHDRAW_TITLE if action == REJECT and own else PAYMENT_ACTIONS[action]["title"]
    if proposal.outside:
        title += " paid another way"
    name = proposal.name
    if action == APPROVE:
        why_not = proposal_refusal(proposal, s)
        if not why_not and own:
            why_not = (
                f"{proposal.proposed_by_label} proposed it: a second person must approve it."
                f"{one_os_account(proposal, operator)}"
            )
        effects = [
            f"Approve {name[0].lower()}{name[1:]} by {proposal.proposed_by_label}: {proposal.note[:200]}"
        ]
        if proposal.outside:
            # Read from the rows as they are now: what is owed back may have moved since.
            effects += _outside_effects(s, proposal.amount, proposal.method) if not why_not else []
            warnings = []
        else:
            effects.append(
                f"Refund {proposal.amount} {money} of the {payment.captured_amount} {money} captured "
                f"({payment.refunded_amount} {money} refunded so far) under a new key, committed before "
                "the call."
            )
            # The approver is the second pair of eyes: they see what the proposer was warned of,
            # as things stand now.
            warnings = short_of_owed(s, proposal.amount)
    else:
        # Its proposer withdraws it; anyone else rejects it, with the permission to decide it (the
        # refusal the service gives, `support_refund_reject`).
        permission = PAYMENT_ACTIONS[REJECT]["permission"]
        if not own and not operator.can(permission):
            why_not = f"{operator.label} lacks the permission {permission}."
        else:
            why_not = "" if proposal.pending else proposal_refusal(proposal, s)
        nothing = (
            "nothing is recorded, and the customer is told nothing"
            if proposal.outside
            else "nothing is refunded"
        )
        verb = "Withdraw" if own else "Reject"
        effects = [f"{verb} {name[0].lower()}{name[1:]}: {nothing}; the proposal ends."]
        warnings = []
    return PaymentPreview(
        action=action,
        title=title,
        booking=booking,
        payment=payment,
        allowed=not why_not,
        refusal=why_not,
        effects=effects if not why_not else [],
        warnings=warnings if not why_not else [],
        provider=provider_side(payment, live=live),
        token=token or new_token(),
        show_ids=operator.can(PROVIDER_TRUTH_PERMISSION),
        amount=proposal.amount,
        refundable=s.refundable,
        owed=s.owed,
        proposal=proposal,
        method=proposal.method,
    )
