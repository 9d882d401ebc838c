"""The payment actions: refund (part or all of what was captured and not yet refunded), retry the
capture, void the hold; the two-person rule's approve and reject; and recording a refund the card
refused as paid another way, saying how (the one action that asks nothing of the provider).

Each runs in the frame of the booking actions: the permission, a clean token, the booking and its
payment locked (in that order, the payments app's), once per token (a token used for another ask
is refused: `once.claim_token`), the refusals of `situation`
checked again under the locks, and one `support.*` row on the timeline with the operator, the
note and the token, in the same transaction as what it changes. What is asked of the provider is
the payments app's own operation (`operation_open`: its key `<payment>:<kind>:<n>`, committed
before any call), run by the payments app's own run (`payment_run`, which calls it outside any
transaction, records each try and applies the answer through the one door, and asks again under
the same key while the outcome is unknown). The console queues that run for a worker; the
commands run it in their own process (`inline`). Either way the payment is due for the sweeper
from the moment the operation commits, so a run that never happens is made by the sweeper.

A refund above the approval amount of its payment's currency (`approval_above`; any amount
of a currency with none) is only proposed (`RefundProposal`, with its note
on the timeline); another person with the approve permission approves it (the refund then runs,
bounded again by what is refundable then) or rejects it; the proposer may withdraw it. So is a
refund paid another way above it (a proposal of kind outside, with its method): approved, it is
recorded then, bounded again by what is owed back then, and only then is the customer told.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking, BookingEvent
from bookings.services import lock_booking
from bookings.timeline import record_event
from config.errors import InvalidTransition, NotFound, ValidationFailed
from config.logging import log_context
from partners.messages import Hint
from payments import messages
from payments.models import OperationKind, OperationState, Payment, PaymentOperation
from payments.services.observations import lock_payment
from payments.services.operations import operation_open
from payments.services.outside import method_label, refund_outside_record
from payments.services.runs import payment_run, schedule
from reconciliation.models import ProposalKind, ProposalState, RefundProposal
from reconciliation.services.support import owed
from reconciliation.services.support.notes import NOTE_MAX_CHARS
from reconciliation.services.support.once import Ask, claim_token, clean_token, correction_data, target_key
from reconciliation.services.support.payments.situation import (
    APPROVE,
    CAPTURE,
    OUTSIDE,
    PAYMENT_ACTIONS,
    PROPOSED_KIND,
    REFUND,
    REJECT,
    VOID,
    PaymentActionResult,
    PaymentSituation,
    approval_above,
    capture_refusal,
    one_os_account,
    outside_refusal,
    parse_amount,
    parse_method,
    proposal_refusal,
    refund_refusal,
    same_person,
    void_refusal,
)
from reconciliation.services.support.permissions import Operator, SupportActionDenied

logger = logging.getLogger(__name__)


# --- the frame ------------------------------------------------------------------------------------
def _done_before(action: str, booking: Booking, token: str) -> PaymentActionResult | None:
    """The earlier result of a token already used on this booking (a double submit). Its operation
    still untried may wait for our queue: said so while the broker does not answer (`owed.told`)."""
    earlier = (
        BookingEvent.objects.filter(booking=booking, kind__startswith="support.", data__action_token=token)
        .order_by("id")
        .first()
    )
    if earlier is None:
        return None
    data = earlier.data or {}
    key = data.get("idempotency_key") or ""
    operation = PaymentOperation.objects.filter(idempotency_key=key).first() if key else None
    untried = operation is not None and operation.state == OperationState.OPEN and operation.tries == 0
    by = f"by {earlier.actor_label} at {earlier.occurred_at:%H:%M:%S} ({earlier.kind})"
    return PaymentActionResult(
        action=action,
        booking=booking,
        performed=False,
        from_state=earlier.from_state,
        to_state=earlier.to_state,
        message=f"Already done {by}; nothing more was done.",
        operation_key=key,
        operation_state=operation.state if operation else "",
        proposal_id=data.get("proposal"),
        owed=(Hint(),) if untried else (),  # not known here: the broker says
        if_not_queued=(
            f"Already requested {by}; its run at the provider is {owed.NOT_QUEUED} Nothing more was done."
            if untried
            else ""
        ),
    )


def _as_told(action: Callable[..., PaymentActionResult]) -> Callable[..., PaymentActionResult]:
    """The action's result as the operator is told it, once its transaction has committed (its
    run's hint has been sent, or has failed): the support actions' one rule (`owed.told`)."""

    @functools.wraps(action)
    def run(**kwargs: object) -> PaymentActionResult:
        result = action(**kwargs)
        return owed.told(result, result.owed)

    return run


def _lock(
    action: str,
    booking_id: UUID,
    token: str,
    *,
    operator: Operator,
    target: Callable[[Booking], str] = target_key,
    batch: Sequence[str] = (),
    **asked: object,
) -> tuple[Booking, Payment | None, PaymentActionResult | None]:
    """Lock the booking, claim the token for this ask (`target`: what the action acts on, the
    booking unless a proposal; `batch`: every target the token covers), then lock its payment
    (inside the caller's transaction)."""
    booking = lock_booking(booking_id)
    claim_token(token, Ask.of(action, target(booking), operator=operator.label, batch=batch, **asked))
    done = _done_before(action, booking, token)
    return booking, (None if done else lock_payment(booking)), done


def _asked_amount(amount: object) -> str:
    """A refund amount as its token's ask compares it: `10`, `10.0` and `10.00` are one amount."""
    try:
        value = Decimal(str(amount).strip())
    except (InvalidOperation, ValueError):
        return str(amount).strip()
    return f"{value.normalize():f}" if value.is_finite() else str(amount).strip()


def _refuse_if(why: str) -> None:
    if why:
        raise InvalidTransition(why)


def _ask(
    action: str,
    s: PaymentSituation,
    *,
    kind: str,
    amount: Decimal | None,
    operator: Operator,
    token: str,
    note: str,
    summary: str,
    inline: bool,
    **data: object,
) -> tuple[PaymentOperation, tuple[Hint, ...]]:
    """Open the operation (committed with this transaction, before any call), make the payment due
    for the sweeper, write the support row naming the operation's key, and queue its run after
    commit unless the caller runs it itself (with the hint saying whether the broker took it)."""
    booking, payment = s.booking, s.payment
    assert payment is not None
    operation = operation_open(payment, kind=kind, amount=amount)
    schedule(payment, booking, retry_in_s=0)  # due at once, should no run take it up
    record_event(
        booking,
        PAYMENT_ACTIONS[action]["kind"],
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        summary=summary,
        from_state=booking.status,
        to_state=booking.status,
        data=correction_data(
            token,
            note,
            operation=kind,
            idempotency_key=operation.idempotency_key,
            amount=None if amount is None else str(amount),
            currency=payment.currency,
            payment_status=payment.status,
            captured=str(payment.captured_amount),
            refunded=str(payment.refunded_amount),
            **data,
        ),
    )
    if inline:
        return operation, ()
    hint = owed.hint_on_commit(
        lambda: messages.send_run(booking.pk), work="payment run", booking_id=booking.pk
    )
    return operation, (hint,)


def _run_now(booking_id: UUID, operator: Operator) -> None:
    """The payments app's own run, in this process, outside any transaction."""
    follow_up = payment_run(booking_id, actor=Actor.SUPPORT, actor_label=operator.label)
    if follow_up.run_after_s is not None:
        try:
            messages.send_run(booking_id, delay_s=follow_up.run_after_s)
        except Exception:  # the broker's errors, whichever: the payment is due for the sweeper
            logger.warning("payment run follow-up not queued; the sweeper runs it", exc_info=True)


def _what(operation: PaymentOperation, currency: str) -> str:
    amount = f" of {operation.amount} {currency}" if operation.amount else ""
    return f"{operation.get_kind_display()}{amount}"


def _outcome(operation: PaymentOperation, currency: str, *, queued: bool) -> str:
    what = _what(operation, currency)
    if queued:
        return (
            f"{what} queued: a worker asks the provider (key {operation.idempotency_key}); "
            "its answer is on the timeline."
        )
    if operation.state == OperationState.SUCCEEDED:
        return f"{what}: done, the provider confirmed it."
    if operation.state == OperationState.OPEN:
        return (
            f"{what}: the provider's answer is not known yet ({operation.last_outcome or 'not asked yet'}). "
            f"Automation asks again under key {operation.idempotency_key}; nothing else is asked meanwhile."
        )
    if operation.state == OperationState.FAILED:
        return (
            f"{what}: made, then refused by the card ({operation.failure_reason}): nothing was given "
            "back, and the customer is owed it still."
        )
    detail = operation.last_error or "no detail"
    return f"{what}: {operation.get_state_display().lower()}: {detail}. Nothing changed."


def _finish(
    result: PaymentActionResult, operation: PaymentOperation, *, operator: Operator, inline: bool
) -> PaymentActionResult:
    booking = result.booking
    currency = booking.currency
    if inline:
        with log_context(booking=booking.reference):
            _run_now(booking.pk, operator)
        operation.refresh_from_db()
        booking.refresh_from_db()
    with log_context(booking=booking.reference, payment_key=operation.idempotency_key):
        logger.info(
            "support payment action",
            extra={"action": result.action, "by": operator.label, "operation_state": operation.state},
        )
    result = result.with_operation(operation, _outcome(operation, currency, queued=not inline))
    if inline:
        return result
    # Told by `_as_told` once committed: said instead when the run's hint was not taken.
    return dataclasses.replace(
        result,
        if_not_queued=(
            f"{_what(operation, currency)} requested (key {operation.idempotency_key}), {owed.NOT_QUEUED} "
            "Its answer is on the timeline."
        ),
    )


def _propose(
    s: PaymentSituation,
    value: Decimal,
    *,
    operator: Operator,
    token: str,
    note: str,
    method: str = "",
) -> PaymentActionResult:
    """Above the approval amount: only propose giving `value` back (through the provider, or with
    `method` paid another way and recorded), for another person to approve; a note saying why
    is required, the approver reads it. Nothing else changes, and the customer is told nothing
    until it is approved."""
    booking, payment = s.booking, s.payment
    assert payment is not None
    outside = bool(method)
    # Read before the proposal exists: what support gave back and proposed until now.
    why = s.approval_words(value, outside=outside)
    refunded_before, outside_before = s.support_refunded, s.support_outside
    if not note:
        raise ValidationFailed(
            f"{why[0].upper()}{why[1:]}: it needs a note saying why, the approver reads it.",
            fields={"note": [f"Required: {why}."]},
        )
    money = payment.currency
    proposal = RefundProposal.objects.create(
        booking=booking,
        payment=payment,
        kind=ProposalKind.OUTSIDE if outside else ProposalKind.REFUND,
        method=method,
        amount=value,
        currency=money,
        note=note[:NOTE_MAX_CHARS],
        proposed_by=operator.user,
        proposed_by_label=operator.label,
        proposed_by_os_user=operator.os_user,
    )
    above = approval_above(money)
    more: dict[str, object] = {}
    if outside:
        more = {
            "proposal_kind": ProposalKind.OUTSIDE,
            "method": method,
            "owed": str(payment.owed_back),
            "refunded_outside": str(payment.refunded_outside),
        }
    if outside_before:
        more["support_outside"] = str(outside_before)
    record_event(
        booking,
        PROPOSED_KIND,
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        summary=f"{proposal.what} of {value} {money} proposed by {operator.label} (#{proposal.pk}): "
        f"{why}, it needs another person's approval",
        from_state=booking.status,
        to_state=booking.status,
        data=correction_data(
            token,
            note,
            proposal=proposal.pk,
            amount=str(value),
            currency=money,
            approval_above=None if above is None else str(above),
            support_refunded=str(refunded_before),
            captured=str(payment.captured_amount),
            refunded=str(payment.refunded_amount),
            **more,
        ),
    )
    then = (
        "it is recorded, and the customer told, once another person approves it"
        if outside
        else "it runs once another person approves it"
    )
    return PaymentActionResult(
        OUTSIDE if outside else REFUND,
        booking,
        True,
        booking.status,
        booking.status,
        f"{proposal.what} proposed (#{proposal.pk}): {why}; {then}.",
        proposal_id=proposal.pk,
        method=method,
    )


# --- the actions --------------------------------------------------------------------------------
@_as_told
def support_refund(
    *,
    booking_id: UUID,
    operator: Operator,
    token: str,
    amount: object,
    note: str = "",
    inline: bool = False,
    batch: Sequence[str] = (),
) -> PaymentActionResult:
    """Refund `amount` of what was captured and not yet refunded; above the approval amount, only
    propose it (a note saying why is then required)."""
    operator.require(PAYMENT_ACTIONS[REFUND]["permission"])
    token = clean_token(token)
    note = (note or "").strip()
    with transaction.atomic():
        booking, payment, done = _lock(
            REFUND, booking_id, token, operator=operator, batch=batch, amount=_asked_amount(amount)
        )
        if done:
            return done
        s = PaymentSituation(booking, payment)
        _refuse_if(refund_refusal(s))
        value = parse_amount(amount, s.currency)
        _refuse_if(refund_refusal(s, value))
        assert payment is not None
        money = payment.currency
        if s.needs_approval(value):
            return _propose(s, value, operator=operator, token=token, note=note)
        operation, hints = _ask(
            REFUND,
            s,
            kind=OperationKind.REFUND,
            amount=value,
            operator=operator,
            token=token,
            note=note,
            summary=f"Refund of {value} {money} asked by {operator.label} "
            f"(of {s.refundable} {money} refundable)",
            inline=inline,
            support_refunded=str(s.support_refunded),
        )
        result = PaymentActionResult(
            REFUND,
            booking,
            True,
            booking.status,
            booking.status,
            "",
            operation_key=operation.idempotency_key,
            owed=hints,
        )
    return _finish(result, operation, operator=operator, inline=inline)


@_as_told
def support_record_outside(
    *,
    booking_id: UUID,
    operator: Operator,
    token: str,
    amount: object,
    method: object = "",
    note: str = "",
    batch: Sequence[str] = (),
) -> PaymentActionResult:
    """Record `amount` of what refunds the card refused still owe as paid to the customer another
    way (a bank transfer, cash, a voucher or credit: the card takes nothing back), by `method`.
    Nothing is asked of the provider; the ledger and the customer's words follow at once. The
    note saying how it was paid is required (the transfer's reference): with the method, it is
    the only trace of the money here. Above the approval amount (what support gave back of the
    payment, with this), it is only proposed: recorded once another person approves it."""
    operator.require(PAYMENT_ACTIONS[OUTSIDE]["permission"])
    token = clean_token(token)
    note = (note or "").strip()
    if not note:
        raise ValidationFailed(
            "Say how the money was paid (e.g. the bank transfer's reference): it is its only trace here.",
            fields={"note": ["Required: how it was paid, e.g. the bank transfer's reference."]},
        )
    method = parse_method(method)
    with transaction.atomic():
        booking, payment, done = _lock(
            OUTSIDE,
            booking_id,
            token,
            operator=operator,
            batch=batch,
            amount=_asked_amount(amount),
            method=method,
        )
        if done:
            return done
        s = PaymentSituation(booking, payment)
        _refuse_if(outside_refusal(s))
        value = parse_amount(amount, s.currency)
        _refuse_if(outside_refusal(s, value))
        assert payment is not None
        if s.needs_approval(value):
            return _propose(s, value, operator=operator, token=token, note=note, method=method)
        money, owed = payment.currency, payment.owed_back
        refund_outside_record(
            booking=booking,
            payment=payment,
            amount=value,
            method=method,
            actor=Actor.SUPPORT,
            actor_label=operator.label,
        )
        record_event(
            booking,
            PAYMENT_ACTIONS[OUTSIDE]["kind"],
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            summary=f"{value} {money} of the {owed} {money} owed back recorded by {operator.label} as paid "
            f"another way ({method_label(method).lower()}): {payment.owed_back} {money} owed still",
            from_state=booking.status,
            to_state=booking.status,
            data=correction_data(
                token,
                note,
                amount=str(value),
                currency=money,
                method=method,
                owed_before=str(owed),
                owed=str(payment.owed_back),
                refunded_outside=str(payment.refunded_outside),
                captured=str(payment.captured_amount),
                refunded=str(payment.refunded_amount),
            ),
        )
    with log_context(booking=booking.reference):
        logger.info("support payment action", extra={"action": OUTSIDE, "by": operator.label})
    return PaymentActionResult(
        OUTSIDE,
        booking,
        True,
        booking.status,
        booking.status,
        _recorded_words(value, method, payment),
        method=method,
    )


def _recorded_words(value: Decimal, method: str, payment: Payment) -> str:
    money, left = payment.currency, payment.owed_back
    return (
        f"Recorded {value} {money} as paid back another way ({method_label(method).lower()}); "
        + (f"{left} {money} is owed still." if left else "nothing is owed back any more.")
        + " The customer is told."
    )


@_as_told
def support_capture(
    *,
    booking_id: UUID,
    operator: Operator,
    token: str,
    note: str = "",
    inline: bool = False,
    batch: Sequence[str] = (),
) -> PaymentActionResult:
    """Capture what the booking owes of the hold (the partner confirmed it): the step automation
    takes, asked again after the provider refused it or it was left to support."""
    return _ask_provider(
        CAPTURE,
        booking_id=booking_id,
        operator=operator,
        token=token,
        note=note,
        inline=inline,
        batch=batch,
        refusal=capture_refusal,
        kind=OperationKind.CAPTURE,
        amount=lambda s: s.capture_amount,
        summary=lambda s, amount: (
            f"Capture of {amount} {s.currency} asked by {operator.label} (owed as {s.owes_as})"
        ),
    )


@_as_told
def support_void(
    *,
    booking_id: UUID,
    operator: Operator,
    token: str,
    note: str = "",
    inline: bool = False,
    batch: Sequence[str] = (),
) -> PaymentActionResult:
    """Release the hold (the intent is cancelled at the provider; nothing is taken)."""
    return _ask_provider(
        VOID,
        booking_id=booking_id,
        operator=operator,
        token=token,
        note=note,
        inline=inline,
        batch=batch,
        refusal=void_refusal,
        kind=OperationKind.VOID,
        amount=lambda _s: None,
        summary=lambda s, _amount: (
            f"Void of the {s.payment.amount} {s.payment.currency} hold asked by {operator.label}"
        ),
    )


def _ask_provider(
    action: str,
    *,
    booking_id: UUID,
    operator: Operator,
    token: str,
    note: str,
    inline: bool,
    batch: Sequence[str],
    refusal: Callable[[PaymentSituation], str],
    kind: str,
    amount: Callable[[PaymentSituation], Decimal | None],
    summary: Callable[[PaymentSituation, Decimal | None], str],
) -> PaymentActionResult:
    """An action that is one operation at the provider (capture, void): permission, once per
    token, refused under the locks unless the situation allows it, then the operation asked."""
    operator.require(PAYMENT_ACTIONS[action]["permission"])
    token = clean_token(token)
    with transaction.atomic():
        booking, payment, done = _lock(action, booking_id, token, operator=operator, batch=batch)
        if done:
            return done
        s = PaymentSituation(booking, payment)
        _refuse_if(refusal(s))
        value = amount(s)
        operation, hints = _ask(
            action,
            s,
            kind=kind,
            amount=value,
            operator=operator,
            token=token,
            note=note,
            summary=summary(s, value),
            inline=inline,
        )
        result = PaymentActionResult(
            action,
            booking,
            True,
            booking.status,
            booking.status,
            "",
            operation_key=operation.idempotency_key,
            owed=hints,
        )
    return _finish(result, operation, operator=operator, inline=inline)


def _proposal_booking(proposal_id: int) -> UUID:
    booking_id = RefundProposal.objects.filter(pk=proposal_id).values_list("booking_id", flat=True).first()
    if booking_id is None:
        raise NotFound(f"No refund proposal {proposal_id!r}.")
    return booking_id


def _proposal_key(proposal_id: int) -> Callable[[Booking], str]:
    """An approval's or rejection's target is the proposal, not its booking."""
    return lambda _booking: target_key(proposal_id)


@_as_told
def support_refund_approve(
    *,
    proposal_id: int,
    operator: Operator,
    token: str,
    note: str = "",
    inline: bool = False,
    batch: Sequence[str] = (),
) -> PaymentActionResult:
    """Approve another person's refund proposal: the refund runs, bounded by what is refundable now;
    one of a refund paid another way is recorded, bounded by what is owed back now."""
    operator.require(PAYMENT_ACTIONS[APPROVE]["permission"])
    token = clean_token(token)
    booking_id = _proposal_booking(proposal_id)
    with transaction.atomic():
        booking, payment, done = _lock(
            APPROVE, booking_id, token, operator=operator, target=_proposal_key(proposal_id), batch=batch
        )
        if done:
            return done
        proposal = RefundProposal.objects.select_for_update().get(pk=proposal_id)
        if proposal.pending and same_person(proposal, operator):
            what = "the refund paid another way" if proposal.outside else "refund"
            by = proposal.proposed_by_label
            who = (  # the same by another identity (an account, an OS user): say whose
                f"{operator.label} proposed {what} #{proposal.pk}"
                if by == operator.label
                else f"{what[0].upper()}{what[1:]} #{proposal.pk} was proposed by {by}, the same person as "
                f"{operator.label}"
            )
            raise SupportActionDenied(
                f"{who}: a second person must approve it.{one_os_account(proposal, operator)}"
            )
        s = PaymentSituation(booking, payment)
        _refuse_if(proposal_refusal(proposal, s))
        if proposal.outside:
            return _approve_outside(proposal, s, operator=operator, token=token, note=note)
        money = proposal.currency
        operation, hints = _ask(
            APPROVE,
            s,
            kind=OperationKind.REFUND,
            amount=proposal.amount,
            operator=operator,
            token=token,
            note=note,
            summary=f"Refund of {proposal.amount} {money} (#{proposal.pk}, proposed by "
            f"{proposal.proposed_by_label}) approved by {operator.label}",
            inline=inline,
            proposal=proposal.pk,
            proposed_by=proposal.proposed_by_label,
        )
        _decide(proposal, ProposalState.APPROVED, operator, note, operation=operation)
        result = PaymentActionResult(
            APPROVE,
            booking,
            True,
            booking.status,
            booking.status,
            "",
            operation_key=operation.idempotency_key,
            proposal_id=proposal.pk,
            owed=hints,
        )
    return _finish(result, operation, operator=operator, inline=inline)


def _approve_outside(
    proposal: RefundProposal, s: PaymentSituation, *, operator: Operator, token: str, note: str
) -> PaymentActionResult:
    """Record the proposal's refund paid another way (checked under the locks: still owed back),
    naming who proposed and who approved it; the customer is told now, once."""
    booking, payment = s.booking, s.payment
    assert payment is not None
    money, owed, amount, method = (
        payment.currency,
        payment.owed_back,
        proposal.amount,
        proposal.method,
    )
    refund_outside_record(
        booking=booking,
        payment=payment,
        amount=amount,
        method=method,
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        recorded_by=proposal.proposed_by_label,
        approved_by=operator.label,
        proposal=proposal.pk,
    )
    record_event(
        booking,
        PAYMENT_ACTIONS[APPROVE]["kind"],
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        summary=f"{proposal.what} of {amount} {money} (#{proposal.pk}, proposed by "
        f"{proposal.proposed_by_label}) approved by {operator.label} and recorded: "
        f"{payment.owed_back} {money} owed back still",
        from_state=booking.status,
        to_state=booking.status,
        data=correction_data(
            token,
            note,
            proposal=proposal.pk,
            proposed_by=proposal.proposed_by_label,
            proposal_kind=ProposalKind.OUTSIDE,
            method=method,
            amount=str(amount),
            currency=money,
            owed_before=str(owed),
            owed=str(payment.owed_back),
            refunded_outside=str(payment.refunded_outside),
            captured=str(payment.captured_amount),
            refunded=str(payment.refunded_amount),
        ),
    )
    _decide(proposal, ProposalState.APPROVED, operator, note)
    with log_context(booking=booking.reference):
        logger.info(
            "support payment action",
            extra={"action": APPROVE, "by": operator.label, "proposal_kind": ProposalKind.OUTSIDE},
        )
    return PaymentActionResult(
        APPROVE,
        booking,
        True,
        booking.status,
        booking.status,
        f"Proposal #{proposal.pk} by {proposal.proposed_by_label} approved. "
        + _recorded_words(amount, method, payment),
        proposal_id=proposal.pk,
        method=method,
    )


@_as_told
def support_refund_reject(
    *, proposal_id: int, operator: Operator, token: str, note: str = "", batch: Sequence[str] = ()
) -> PaymentActionResult:
    """Reject a refund proposal (or, its proposer, withdraw it): nothing is refunded."""
    token = clean_token(token)
    booking_id = _proposal_booking(proposal_id)
    with transaction.atomic():
        booking, _payment, done = _lock(
            REJECT, booking_id, token, operator=operator, target=_proposal_key(proposal_id), batch=batch
        )
        if done:
            return done
        proposal = RefundProposal.objects.select_for_update().get(pk=proposal_id)
        withdrawing = same_person(proposal, operator)
        if not withdrawing:
            operator.require(PAYMENT_ACTIONS[REJECT]["permission"])
        if not proposal.pending:
            raise InvalidTransition(
                f"{proposal.name} was already {proposal.state} by {proposal.decided_by_label}."
            )
        how = "withdrawn" if withdrawing else "rejected"
        outside = (
            {"proposal_kind": ProposalKind.OUTSIDE, "method": proposal.method} if proposal.outside else {}
        )
        record_event(
            booking,
            PAYMENT_ACTIONS[REJECT]["kind"],
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            summary=f"{proposal.what} of {proposal.amount} {proposal.currency} (#{proposal.pk}, proposed by "
            f"{proposal.proposed_by_label}) {how} by {operator.label}",
            from_state=booking.status,
            to_state=booking.status,
            data=correction_data(
                token,
                note,
                proposal=proposal.pk,
                proposed_by=proposal.proposed_by_label,
                amount=str(proposal.amount),
                currency=proposal.currency,
                withdrawn=withdrawing,
                **outside,
            ),
        )
        _decide(proposal, ProposalState.REJECTED, operator, note)
        return PaymentActionResult(
            REJECT,
            booking,
            True,
            booking.status,
            booking.status,
            f"{proposal.name} {how}: "
            + (
                "nothing was recorded, and the customer is told nothing."
                if proposal.outside
                else "nothing was refunded."
            ),
            proposal_id=proposal.pk,
            method=proposal.method,
        )


def _decide(
    proposal: RefundProposal,
    state: str,
    operator: Operator,
    note: str,
    *,
    operation: PaymentOperation | None = None,
) -> None:
    proposal.state = state
    proposal.decided_by = operator.user
    proposal.decided_by_label = operator.label
    proposal.decided_by_os_user = operator.os_user
    proposal.decided_at = timezone.now()
    proposal.decision_note = (note or "")[:NOTE_MAX_CHARS]
    proposal.operation = operation
    proposal.save(
        update_fields=[
            "state",
            "decided_by",
            "decided_by_label",
            "decided_by_os_user",
            "decided_at",
            "decision_note",
            "operation",
        ]
    )


_BOOKING_ACTIONS: dict[str, Callable[..., PaymentActionResult]] = {
    REFUND: support_refund,
    CAPTURE: support_capture,
    VOID: support_void,
    OUTSIDE: support_record_outside,
}


def payment_action_run(
    action: str,
    *,
    operator: Operator,
    token: str,
    booking_id: UUID | None = None,
    proposal_id: int | None = None,
    note: str = "",
    amount: object = None,
    method: object = "",
    inline: bool = False,
    batch: Sequence[str] = (),
) -> PaymentActionResult:
    """Run the payment action named `action` (the console's and the commands' one entry; `method`:
    how a refund paid another way was paid)."""
    if action in _BOOKING_ACTIONS:
        if booking_id is None:
            raise ValidationFailed(f"{action} acts on a booking.")
        kwargs: dict[str, object] = {
            "booking_id": booking_id,
            "operator": operator,
            "token": token,
            "note": note,
            "batch": batch,
        }
        if action in (REFUND, OUTSIDE):
            kwargs["amount"] = amount
        if action == OUTSIDE:  # nothing is asked of the provider: nothing to run inline
            return support_record_outside(**kwargs, method=method)
        return _BOOKING_ACTIONS[action](**kwargs, inline=inline)
    if action in (APPROVE, REJECT):
        if proposal_id is None:
            raise ValidationFailed(f"{action} acts on a refund proposal.")
        if action == APPROVE:
            return support_refund_approve(
                proposal_id=proposal_id, operator=operator, token=token, note=note, inline=inline, batch=batch
            )
        return support_refund_reject(
            proposal_id=proposal_id, operator=operator, token=token, note=note, batch=batch
        )
    raise ValidationFailed(f"Unknown payment action {action!r}.")
