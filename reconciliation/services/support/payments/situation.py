"""A booking's payment as a support action finds it, the payment actions' names and permissions,
and the refusals: may the action run now, and if not, why, in words for support. The preview and
the action's locked re-check ask the same questions."""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from django.conf import settings
from django.utils import timezone

from bookings.models import Booking, BookingEvent
from bookings.pricing import AMOUNT_WRITTEN, CENT, written_as_amount
from bookings.states import BookingState
from config.errors import NotFound, ValidationFailed
from config.ids import row_id
from payments import decisions
from payments.models import (
    OperationKind,
    OperationState,
    OutsideMethod,
    Payment,
    PaymentOperation,
    PaymentStatus,
)
from payments.money import RefusedAmount, to_minor
from payments.services.runs import booking_facts
from reconciliation.models import ProposalState, RefundProposal
from reconciliation.services.support.once import ActionResult
from reconciliation.services.support.permissions import Operator

P = PaymentStatus
REFUND, CAPTURE, VOID = "refund_payment", "capture_payment", "void_payment"
# Money a refund the card refused still owes, paid back another way (a bank transfer) and recorded.
OUTSIDE = "record_outside_refund"
APPROVE, REJECT = "approve_refund", "reject_refund"
PAYMENT_ACTIONS: dict[str, dict[str, str]] = {
    REFUND: {
        "title": "Refund",
        # What the action does when the two-person rule only lets it propose (`needs_approval`).
        "proposed_title": "Propose a refund",
        "permission": "reconciliation.refund_payment",
        "kind": "support.refund_requested",
    },
    CAPTURE: {
        "title": "Retry the capture",
        "permission": "reconciliation.capture_payment",
        "kind": "support.capture_requested",
    },
    VOID: {
        "title": "Void the hold",
        "permission": "reconciliation.void_payment",
        "kind": "support.void_requested",
    },
    # The refund permission: the refund was decided already (made, then refused by the card), and
    # whoever may make it again through the provider may say it was paid another way.
    OUTSIDE: {
        "title": "Record a refund paid another way",
        "proposed_title": "Propose a refund paid another way",
        "permission": "reconciliation.refund_payment",
        "kind": "support.refund_recorded_outside",
    },
    APPROVE: {
        "title": "Approve the refund",
        "permission": "reconciliation.approve_refund",
        "kind": "support.refund_approved",
    },
    REJECT: {
        "title": "Reject the refund",
        "permission": "reconciliation.approve_refund",
        "kind": "support.refund_rejected",
    },
}
# Rejecting their own proposal, its proposer withdraws it (no approve permission needed).
WITHDRAW_TITLE = "Withdraw the refund"
# The timeline rows that say support asked for a refund (directly, or by approving a proposal).
SUPPORT_REFUND_KINDS = (PAYMENT_ACTIONS[REFUND]["kind"], PAYMENT_ACTIONS[APPROVE]["kind"])
# A refund above the approval amount is proposed (this row), then approved (APPROVE's); so is a
# refund paid another way (the row's data says `proposal_kind` outside and the method).
PROPOSED_KIND = "support.refund_proposed"
# Who may see the provider's ids (the intent, its refunds) and its live answer's details.
PROVIDER_TRUTH_PERMISSION = "payments.view_provider_truth"


@dataclass(frozen=True)
class PaymentActionResult(ActionResult):
    """An action's result, with the operation it asked the provider for (its key and where it
    stands) or the proposal it made or decided."""

    operation_key: str = ""
    operation_state: str = ""
    proposal_id: int | None = None
    method: str = ""  # how a refund paid another way was paid (recorded or proposed)

    @property
    def proposed(self) -> bool:
        """The action was only proposed (above the approval amount): its message says so, what
        was proposed first ("Refund proposed (#5): …"), not the action asked."""
        return self.performed and self.action in (REFUND, OUTSIDE) and self.proposal_id is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            **super().as_dict(),
            "operation": self.operation_key or None,
            "operation_state": self.operation_state or None,
            "proposal": self.proposal_id,
            "method": self.method or None,
        }

    def with_operation(self, operation: PaymentOperation | None, message: str) -> PaymentActionResult:
        if operation is None:
            return replace(self, message=message)
        return replace(self, operation_state=operation.state, message=message)


def approval_above(currency: str) -> Decimal | None:
    """What support may give back of one payment in `currency` before a second person must
    approve it: the currency's own amount (PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY), or
    PAYMENTS_REFUND_APPROVAL_ABOVE in its currency (PAYMENTS_REFUND_APPROVAL_CURRENCY). None when
    neither is the currency's: no amount of it is small enough for one person, every refund needs
    a second (an amount of another currency is not one of this: config/refund_approval.py)."""
    above = settings.PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY.get(currency)
    if above is None and currency == settings.PAYMENTS_REFUND_APPROVAL_CURRENCY:
        above = settings.PAYMENTS_REFUND_APPROVAL_ABOVE
    return None if above is None else Decimal(above)


def approval_rule(currency: str) -> str:
    """When giving back money in `currency` needs a second person, in words: "above 200.00 EUR",
    or, with no amount set for it, "any amount of JPY (no approval amount is set for it)"."""
    above = approval_above(currency)
    if above is None:
        return f"any amount of {currency} (no approval amount is set for it)"
    return f"above {above} {currency}"


def parse_method(value: object) -> str:
    """How a refund paid another way was paid, as support chose it (`bank_transfer`, `cash`,
    `voucher`, `other`), refused unless one of them."""
    method = str(value or "").strip()
    if method not in OutsideMethod.values:
        choices = ", ".join(OutsideMethod.values)
        words = f"Say how it was paid: one of {choices}."
        raise ValidationFailed(
            f"{method!r} is not one of the ways support pays another way: {choices}." if method else words,
            fields={"method": [words]},
        )
    return method


def _not_an_amount(value: object) -> ValidationFailed:
    words = f"Not an amount: {AMOUNT_WRITTEN}."
    return ValidationFailed(f"{value!r} is not an amount.", fields={"amount": [words]})


def parse_amount(value: object, currency: str) -> Decimal:
    """A refund amount as support types it (`12.50`: `bookings.pricing.written_as_amount`, the
    console's form and the commands alike), refused unless an exact amount the provider can take
    in the payment's currency."""
    text = str(value)
    try:
        amount = Decimal(text)
    except (InvalidOperation, ValueError) as exc:
        raise _not_an_amount(value) from exc
    if not amount.is_finite():  # NaN, Infinity: Decimal reads them, but they are no amount
        raise ValidationFailed(f"{value!r} is not a number.", fields={"amount": ["Not a number."]})
    if amount <= 0:
        raise ValidationFailed("A refund is more than nothing.", fields={"amount": ["More than 0."]})
    try:
        to_minor(amount, currency)
    except RefusedAmount as exc:
        raise ValidationFailed(str(exc), fields={"amount": [str(exc)]}) from exc
    if amount != amount.quantize(CENT):  # 1.005 KWD: the provider's unit, but not our ledger's
        why = f"{amount} {currency} is finer than the cent our ledger keeps"
        raise ValidationFailed(why, fields={"amount": [why]})
    # After the value's own refusals, which say more ("more than nothing", "the smallest unit"):
    # what Decimal read as a fine amount may still not be one written so (1e1, +5, other scripts' digits).
    if not written_as_amount(text, currency):
        raise _not_an_amount(value)
    return amount.quantize(CENT)


class PaymentSituation:
    """A booking and its payment as an action finds them: the open operation (the fence), what
    the booking owes by its state and policy, what may still be refunded, a pending proposal."""

    def __init__(self, booking: Booking, payment: Payment | None) -> None:
        self.booking = booking
        self.payment = payment

    @cached_property
    def open_operation(self) -> PaymentOperation | None:
        return None if self.payment is None else self.payment.operations.open().first()

    @cached_property
    def pending_proposal(self) -> RefundProposal | None:
        if self.payment is None:
            return None
        return RefundProposal.objects.filter(payment=self.payment, state=ProposalState.PENDING).first()

    @cached_property
    def support_refunded(self) -> Decimal:
        """What support's own refunds of this payment took or may still take: every refund
        operation a support row names (asked directly, or run by an approval) that succeeded or
        whose outcome is not known yet. Refunds automation made (the cancellation policy, a
        partner's disruption) are not support's; a refused or declined one took nothing. Read
        under the booking's lock by the action, so two refunds cannot both miss each other."""
        if self.payment is None:
            return Decimal("0.00")
        keys = {
            (data or {}).get("idempotency_key")
            for data in BookingEvent.objects.filter(
                booking=self.booking, kind__in=SUPPORT_REFUND_KINDS
            ).values_list("data", flat=True)
        } - {None, ""}
        amounts = PaymentOperation.objects.filter(
            payment=self.payment,
            kind=OperationKind.REFUND,
            state__in=(OperationState.SUCCEEDED, OperationState.OPEN),
            idempotency_key__in=keys,
        ).values_list("amount", flat=True)
        return sum((amount or Decimal("0.00") for amount in amounts), Decimal("0.00"))

    @property
    def support_proposed(self) -> Decimal:
        """What a proposal waiting for this payment would give back."""
        pending = self.pending_proposal
        return pending.amount if pending is not None else Decimal("0.00")

    @property
    def support_outside(self) -> Decimal:
        """What support recorded as paid back another way (nobody else records it): money given
        back by support's say-so as much as a refund, so the rule counts it with them."""
        return self.payment.refunded_outside if self.payment is not None else Decimal("0.00")

    def support_total(self, amount: Decimal) -> Decimal:
        """What support would have given back of this payment with `amount` (through the provider
        or another way): the rule's measure."""
        return self.support_refunded + self.support_outside + self.support_proposed + amount

    def approval_words(self, amount: Decimal, *, outside: bool = False) -> str:
        """Why giving back `amount` (a refund, or with `outside` one paid another way) needs a
        second person, in words ('... above 200.00 EUR', '..., as no approval amount is set for
        JPY')."""
        money = self.currency
        what = f"{amount} {money} paid back another way" if outside else f"a refund of {amount} {money}"
        before = [
            f"{value} {money} {words}"
            for value, words in (
                (self.support_refunded, "support refunded before"),
                (self.support_outside, "paid back another way before"),
                (self.support_proposed, "proposed and waiting"),
            )
            if value
        ]
        if approval_above(money) is None:
            return f"{what}, as no approval amount is set for {money}"
        if not before:
            return f"{what} is {approval_rule(money)}"
        return (
            f"{what}, with {' and '.join(before)}, comes to "
            f"{self.support_total(amount)} {money}: {approval_rule(money)}"
        )

    @property
    def currency(self) -> str:
        return self.payment.currency if self.payment else self.booking.currency

    @property
    def owed(self) -> Decimal | None:
        """What the booking owes now by its state and policy; None while undecided."""
        return decisions.owed(booking_facts(self.booking))

    @property
    def owes_as(self) -> str:
        """The state whose rule decides what it owes: an ended booking's end while support has its
        stray reservation (`Booking.effective_state`), else its status."""
        return booking_facts(self.booking).owes_as

    @property
    def refundable(self) -> Decimal:
        """What was captured and has not gone back yet, by the provider or another way."""
        if self.payment is None:
            return Decimal("0.00")
        return self.payment.net_amount

    @property
    def refund_by_default(self) -> Decimal:
        """The refund a preview without an amount offers: what refunds the card refused still owe
        (the fee the policy keeps is not in it), else all that is refundable (goodwill)."""
        if self.owed_back > 0:
            return min(self.owed_back, self.refundable)
        return self.refundable

    @property
    def owed_back(self) -> Decimal:
        """What refunds that could not be made (the card refused them after they were made, or the
        provider every time it was asked) still owe the customer."""
        return self.payment.owed_back if self.payment is not None else Decimal("0.00")

    @property
    def capture_amount(self) -> Decimal | None:
        owed = self.owed
        if self.payment is None or owed is None or owed <= 0:
            return None
        return min(owed, self.payment.amount)

    @property
    def lapsed(self) -> bool:
        expires = self.payment.authorization_expires_at if self.payment else None
        return expires is not None and expires <= timezone.now()

    def needs_approval(self, amount: Decimal) -> bool:
        """The two-person rule: what support gave back of this payment (refunds made or under
        way, money recorded as paid back another way, a proposal waiting) with this amount comes
        to more than the approval amount of its currency; with none set for it, any amount."""
        above = approval_above(self.currency)
        return above is None or self.support_total(amount) > above


def _common(s: PaymentSituation) -> str:
    if s.payment is None:
        return "This booking does not pay through us: there is no payment to act on."
    op = s.open_operation
    if op is not None:
        return (
            f"The provider's answer to {op.get_kind_display().lower()} #{op.seq} is not known yet "
            f"(key {op.idempotency_key}): one operation at a time. Automation asks again under the "
            "same key; act once it is settled."
        )
    return ""


def amount_refusal(s: PaymentSituation, amount: Decimal) -> str:
    money = s.currency
    if amount > s.refundable:
        assert s.payment is not None
        outside = s.payment.refunded_outside
        return (
            f"At most {s.refundable} {money} can be refunded: {s.payment.captured_amount} captured, "
            f"{s.payment.refunded_amount} refunded"
            + (f", {outside} paid back another way." if outside else ".")
        )
    return ""


def refund_refusal(s: PaymentSituation, amount: Decimal | None = None) -> str:
    """Why no refund (of `amount`, when given) can be made now ('' when it can)."""
    why = _common(s)
    if why:
        return why
    if s.refundable <= 0:
        assert s.payment is not None
        return (
            f"Nothing captured is left to refund ({s.payment.captured_amount} captured, "
            f"{s.payment.refunded_amount} refunded; the payment is {s.payment.status})."
        )
    if amount is not None:
        why = amount_refusal(s, amount)
        if why:
            return why
        if s.needs_approval(amount) and s.pending_proposal is not None:
            pending = s.pending_proposal
            return (
                f"{pending.name} of {pending.amount} {pending.currency} by "
                f"{pending.proposed_by_label} waits for approval: approve or reject it first."
            )
    return ""


def outside_refusal(s: PaymentSituation, amount: Decimal | None = None) -> str:
    """Why no refund paid another way (of `amount`, when given) can be recorded now ('' when it
    can): only what refunds the card refused still owe, and never while the provider may give
    money back meanwhile (an operation in flight, a refund proposal waiting)."""
    why = _common(s)
    if why:
        return why
    money = s.currency
    if s.owed_back <= 0:
        return (
            "No refund that could not be made is owed back: there is nothing to record as paid another way "
            "(a refund through the provider is the Refund action)."
        )
    pending = s.pending_proposal
    if pending is not None:
        again = (
            "approved, it would record money paid back another way too"
            if pending.outside
            else "approved, it would give the money back through the provider too"
        )
        return (
            f"{pending.name} of {pending.amount} {pending.currency} by "
            f"{pending.proposed_by_label} waits for approval: {again}. Reject it (or approve it) first."
        )
    if amount is not None and amount > s.owed_back:
        return (
            f"At most {s.owed_back} {money} is owed back after refunds that could not be made: "
            f"{amount} {money} is more."
        )
    return ""


def capture_refusal(s: PaymentSituation) -> str:
    why = _common(s)
    if why:
        return why
    assert s.payment is not None
    if s.payment.status != P.AUTHORIZED:
        return f"Only a held authorization can be captured: the payment is {s.payment.status}."
    if s.booking.confirmed_shown_at is None:
        return (
            "The partner never confirmed this booking: nothing is captured without a confirmed reservation."
        )
    if s.capture_amount is None:
        owed = "not decided yet" if s.owed is None else f"{s.owed} {s.currency}"
        return f"The booking owes nothing to capture as {s.owes_as} (owed: {owed})."
    if s.lapsed:
        return (
            f"The hold lapsed at the provider at {s.payment.authorization_expires_at:%Y-%m-%d %H:%M} UTC: "
            "nothing is left to capture (the next read of the intent records it)."
        )
    return ""


def void_refusal(s: PaymentSituation) -> str:
    why = _common(s)
    if why:
        return why
    assert s.payment is not None
    if s.payment.status != P.AUTHORIZED:
        return f"Only a held authorization can be voided: the payment is {s.payment.status}."
    owed = s.owed
    if owed is not None and owed > 0:
        return (
            f"The booking owes {owed} {s.currency} as {s.owes_as}: capture it, or cancel the "
            "booking (its policy decides what is kept, automation releases the rest)."
        )
    if owed is None and s.booking.status != BookingState.NEEDS_ATTENTION:
        return (
            f"The booking is still {s.booking.status}: the partner may yet confirm it. Cancel or "
            "compensate the booking first; automation releases the hold once it ends."
        )
    return ""


def refusal(action: str, s: PaymentSituation, *, amount: Decimal | None = None) -> str:
    if action == REFUND:
        return refund_refusal(s, amount)
    if action == CAPTURE:
        return capture_refusal(s)
    if action == VOID:
        return void_refusal(s)
    if action == OUTSIDE:
        return outside_refusal(s, amount)
    raise ValidationFailed(f"Unknown payment action {action!r}.")


def proposal_refusal(proposal: RefundProposal, s: PaymentSituation) -> str:
    """Why a pending proposal cannot be approved now ('' when it can): for a refund paid another
    way, unless what the card's refused refunds owe now still covers it (a refund through the
    provider since may have given some back)."""
    if proposal.state != ProposalState.PENDING:
        return (
            f"{proposal.name} was already {proposal.state} by {proposal.decided_by_label} "
            f"at {proposal.decided_at:%Y-%m-%d %H:%M:%S} UTC."
        )
    why = _common(s)
    if why:
        return why
    if proposal.outside:
        why = (
            f"Only {s.owed_back} {s.currency} is owed back now after refunds that could not be made: "
            f"{proposal.amount} {proposal.currency} paid another way is more than is owed."
            if proposal.amount > s.owed_back
            else ""
        )
    else:
        why = amount_refusal(s, proposal.amount)
    return f"{why} Reject the proposal (a smaller one may be proposed)." if why else ""


def same_person(proposal: RefundProposal, operator: Operator) -> bool:
    """Whether the operator is the one who proposed it, by any identity either acted as
    (`RefundProposal.proposed_by_same`: the account, the OS user at the shell)."""
    return proposal.proposed_by_same(operator.person)


def one_os_account(proposal: RefundProposal, operator: Operator) -> str:
    """When the operator is the proposer by the OS account both typed at (two people sharing one,
    `sudo -u app` or `docker exec`, look like one at the shell): what to do instead; else ''."""
    shared = proposal.proposer.shares_os_user(operator.person)
    if not shared:
        return ""
    return (
        f" Both were typed at the shell as OS user {shared}, one person to the rule (--as takes no "
        "credential): approve it in the console, or from your own OS account."
    )


def proposal_by_id(proposal_id: object) -> RefundProposal:
    pk = row_id(proposal_id)  # None past our ids' range: the database would overflow, not miss
    found = (
        RefundProposal.objects.select_related("booking", "booking__partner", "payment").filter(pk=pk).first()
        if pk is not None
        else None
    )
    if found is None:
        raise NotFound(f"No refund proposal {proposal_id!r}.")
    return found
