"""The one door for the provider's truth (the payments' invariant 1): a call's answer, a lookup
and a webhook all enter here, on a locked booking and payment, and only in one direction.

The payment's status moves only forward along its state machine (an older or repeated word of
the provider changes nothing: a reordered or duplicated webhook is recorded and ignored), and
the money it counts only grows (captured, refunded: the provider's totals), but for one word: a
refund the provider made and then failed (its card refused it, `refund_truth_apply`) is no longer
counted as refunded. That word is about one refund, named, and moves its operation forward once
(succeeded → failed), so a repeated or late one changes nothing; and since a total of the
provider's carries no time and may predate a failure, every total is read less the failed
refunds still owed (`failed_refunds_owed`), so that an older one never counts them again.

What the booking does next follows from the payment here and nowhere else: the partner is asked only once the
money is held (`accept_payment`), a declined payment ends the booking before the partner hears
of it (`refuse_payment`), and what the customer is told about their money changes with it.
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django_fsm import can_proceed

from bookings import customer_view, ports
from bookings.models import Actor, Booking
from bookings.payment_facts import PaymentFacts
from bookings.pricing import CENT
from bookings.services import apply_transition
from bookings.states import BookingState
from bookings.timeline import record_event
from payments import decisions
from payments.connector import IntentTruth, RefundTruth
from payments.models import (
    BEFORE_AUTHORIZATION,
    CallOutcome,
    OperationKind,
    OperationState,
    Payment,
    PaymentOperation,
    PaymentStatus,
)

logger = logging.getLogger(__name__)

P = PaymentStatus
_FACT_OF_STATUS = {
    P.PENDING: "authorizing",
    P.AUTHORIZING: "authorizing",
    P.UNKNOWN: "authorizing",
    P.AUTHORIZED: "held",
    P.CAPTURED: "charged",
    P.VOIDED: "released",
    P.LAPSED: "lapsed",  # it ended at the provider: nobody released it
    P.DECLINED: "declined",
    P.ABANDONED: "not_charged",
}


def lock_payment(booking: Booking) -> Payment | None:
    """The booking's payment with a row lock, taken after the booking's (always in that order)."""
    return Payment.objects.select_for_update(of=("self",), no_key=True).filter(booking_id=booking.pk).first()


def payment_facts(payment: Payment, *, open_operation: PaymentOperation | None = None) -> PaymentFacts:
    """The payment as the booking's customer view is told it; `open_operation` is the payment's
    open operation, if any (one at most, the caller has it: no query here)."""
    state = _FACT_OF_STATUS[payment.status]
    if payment.status == P.DECLINED and payment.decline_code == decisions.NOT_AUTHORIZED:
        state = "needs_action"  # its bank may well have asked for something: not "not asked"
    elif payment.status == P.DECLINED and _request_refused(payment):
        state = "refused"
    elif payment.status == P.AUTHORIZED and charge_in_doubt(open_operation):
        state = "charge_unknown"
    elif payment.status == P.AUTHORIZED and payment.release_refused:
        state = "release_refused"  # nothing owed, and the provider would not let the hold go
    elif payment.status == P.AUTHORIZED and payment.in_review:
        state = "held_in_review"  # told to the customer as well as support (`payment.in_review`)
    return PaymentFacts(
        state=state,
        currency=payment.currency,
        amount=payment.amount,
        charged=payment.captured_amount,
        refunded=payment.refunded_amount,
        refund_failed=payment.owed_back,  # made and refused by the card, or refused for good
        refunded_outside=payment.refunded_outside,
        lapses_at=payment.authorization_expires_at if state == "release_refused" else None,
        charging=_charging(payment, open_operation) if state == "charge_unknown" else None,
    )


def _charging(payment: Payment, capture: PaymentOperation | None) -> Decimal:
    """What the capture in doubt asked to take: its amount (a cancel's fee takes part of the
    hold, and the provider lets the rest go with it), or, none given, the whole hold."""
    if capture is None or capture.amount is None:
        return payment.amount
    return min(capture.amount, payment.amount)


def charge_in_doubt(open_operation: PaymentOperation | None) -> bool:
    """Whether the money may have been taken without our knowing: a capture is open and may
    have reached the provider, its first call out now (not tried yet: a slow provider answers in
    seconds, and a cancel may come meanwhile) or a try that timed out or lost its answer. Told as
    neither held nor charged (a cancel then cannot say "released"), until an answer under its
    key or the provider's word settles it. A capture whose every try provably reached nothing
    (refused connections) is not in doubt: the money is still only held."""
    return (
        open_operation is not None
        and open_operation.kind == OperationKind.CAPTURE
        and open_operation.state == OperationState.OPEN
        and (open_operation.tries == 0 or open_operation.calls_in_doubt > 0)
    )


def open_operation_of(payment: Payment) -> PaymentOperation | None:
    """The payment's operation whose outcome is not known, if any (one query, on the index of
    the one-open fence)."""
    return payment.operations.open().first()


def _request_refused(payment: Payment) -> bool:
    """Whether the payment method could not be used rather than the card's bank declining: the
    provider refused our request (a 400: a payment method it does not know; the connector
    classified the authorization's answer so, `CallOutcome.REFUSED`). One query, only for a
    declined payment."""
    return payment.operations.filter(
        kind=OperationKind.AUTHORIZE, state=OperationState.DECLINED, last_outcome=CallOutcome.REFUSED
    ).exists()


def truth_apply(
    *,
    booking: Booking,
    payment: Payment,
    truth: IntentTruth,
    source: str,
    actor: Actor | str,
    actor_label: str = "",
    unsaved: set[str] | None = None,
) -> bool:
    """Apply what the provider says of the payment's intent; True if anything changed.
    Call inside `atomic()` on the booking and payment from `lock_booking` and `lock_payment`.
    With `unsaved`, the payment's changed fields are added to it and left for the caller to save
    (with its own changes of the row, in one UPDATE) before its transaction ends."""
    if payment.provider_intent_id and truth.intent_id != payment.provider_intent_id:
        # One payment, one intent: never a second hold (its key fences it). An intent naming
        # our payment that is not the one we hold is support's to look at.
        record_event(
            booking,
            "payment.intent.unexpected",
            actor=actor,
            actor_label=actor_label,
            summary=f"The provider names intent {truth.intent_id} for this payment; ours is "
            f"{payment.provider_intent_id}",
            data={"source": source, "intent": truth.intent_id},
        )
        logger.warning("unexpected intent for a payment", extra={"intent": truth.intent_id})
        return False
    before = (payment.status, payment.captured_amount, payment.refunded_amount, payment.in_review)
    fields: set[str] = set()
    if not payment.provider_intent_id:
        payment.provider_intent_id = truth.intent_id
        fields.add("provider_intent_id")
    target = _status_told(truth)
    ignored = _stale(payment, truth, target)
    if target is not None and target != payment.status and not ignored:
        getattr(payment, decisions.TRANSITION_TO[target])()
        fields |= {"status", "status_changed_at"}
        if payment.release_refused and payment.status != P.AUTHORIZED:
            payment.release_refused = False  # no longer held: nothing is left to release
            fields.add("release_refused")
    if truth.status and not ignored and payment.provider_status != truth.status:
        payment.provider_status = truth.status  # the provider's own word, beside ours
        fields.add("provider_status")
    fields |= _grow(payment, "captured_amount", truth.captured)
    fields |= _grow(payment, "refunded_amount", _refunded_told(payment, truth))
    fields |= _details(payment, truth)
    if unsaved is not None:
        unsaved |= fields
    elif fields:
        payment.save(update_fields=[*fields, "updated_at"])
    changed = before != (payment.status, payment.captured_amount, payment.refunded_amount, payment.in_review)
    _record(booking, payment, truth, before, source=source, ignored=ignored, actor=actor, label=actor_label)
    return changed


def _stale(payment: Payment, truth: IntentTruth, target: str | None) -> str:
    """Why the provider's word is older than what the payment holds ('' when it is not): a status
    our state machine has gone past, or a word naming no status of ours (an intent still asking
    for a method, a confirmation or an action, or processing: the time before any hold) once the
    payment is past that time. Its own word, kept beside ours, moves forward only with it."""
    if target is not None and target != payment.status:
        if not can_proceed(getattr(payment, decisions.TRANSITION_TO[target])):
            return f"stale: {target} after {payment.status}"
    elif target is None and truth.status and payment.status not in BEFORE_AUTHORIZATION:
        return f"stale: {truth.status} after {payment.status}"
    return ""


def _status_told(truth: IntentTruth) -> str | None:
    """Our payment status that the provider's word stands for (None: the word names no status)."""
    if not truth.status:
        return None
    return decisions.status_of_intent(
        intent_status=truth.status, cancellation_reason=truth.cancellation_reason, declined=truth.declined
    )


def _refunded_told(payment: Payment, truth: IntentTruth) -> Decimal | None:
    """The provider's total refunded, read as if every failed refund still owed were in it: a
    total may be older than the failure (a reordered `charge.refunded`), and must not count a
    refund again that we know failed. A newer total is then read short, which never lowers ours
    (refunds made under our keys are counted by their operations). What support paid back another
    way was owed by failed refunds too, and failed at the provider all the same: read less. Part
    of it may have paid back a refund the provider refused, which no total counted: the total is
    then read short by that part too, which likewise never lowers ours; only a refund made at the
    provider outside our keys (its dashboard) would go uncounted by it, and the day's settlement
    (`reconcile_payments`) lists such a refund as one we do not know."""
    if truth.refunded is None:
        return None
    return truth.refunded - payment.failed_refunds_owed - payment.refunded_outside


def _grow(payment: Payment, field: str, observed: Decimal | None) -> set[str]:
    """Money the provider counts only grows: an older total never lowers ours."""
    if observed is None or observed <= getattr(payment, field):
        return set()
    setattr(payment, field, observed)
    return {field}


def brings_news(payment: Payment, truth: IntentTruth) -> bool:
    """Whether `truth_apply` would change anything of the payment: False for a word our row
    already holds (the webhook that echoes our own operation's answer) or has gone past (an
    older one). Pure, on a row read without its lock: the status only moves forward and the money
    only grows, so a word that changes nothing of a committed row changes nothing of a later one
    either. An intent other than ours is news (the one door records it)."""
    if not payment.provider_intent_id or truth.intent_id != payment.provider_intent_id:
        return True
    target = _status_told(truth)
    if not _stale(payment, truth, target):
        if target is not None and target != payment.status:
            return True
        if truth.status and payment.provider_status != truth.status:
            return True
    grows = any(
        observed is not None and observed > held
        for observed, held in (
            (truth.captured, payment.captured_amount),
            (_refunded_told(payment, truth), payment.refunded_amount),
        )
    )
    return grows or bool(_detail_changes(payment, truth))


# --- a refund's own word -----------------------------------------------------------------------------
# The operations a refund's failure moves: the refund was made, or may have been (its answer is
# not known yet). A refund already failed is the same word again; one we closed as never made,
# refused or abandoned was not counted, and is support's to look at.
_FAILS = (OperationState.SUCCEEDED, OperationState.OPEN)


def refund_operation(payment: Payment, refund: RefundTruth) -> PaymentOperation | None:
    """Our refund operation that made `refund`: by the provider's id of it, or by the key its
    metadata names (an operation whose answer was lost knows no id yet)."""
    match = Q(provider_object_id=refund.refund_id)
    if refund.operation:
        match |= Q(idempotency_key=refund.operation)
    return payment.operations.filter(match, kind=OperationKind.REFUND).first()


def refund_failure_known(payment: Payment, refund: RefundTruth) -> bool:
    """Whether what the provider says of one refund is nothing new: a refund made (its
    operation's answer counts it), or a failure already recorded. One query, for a failure only."""
    if not refund.failed:
        return True
    operation = refund_operation(payment, refund)
    return operation is not None and operation.state == OperationState.FAILED


def refund_truth_apply(
    *,
    booking: Booking,
    payment: Payment,
    refund: RefundTruth,
    source: str,
    actor: Actor | str,
    actor_label: str = "",
    operation: PaymentOperation | None = None,
    unsaved: set[str] | None = None,
) -> bool:
    """Apply what the provider says of one refund of the payment; True if anything changed. Only
    a failure changes anything: the refund's operation moves on to `failed` (once), the refund is
    no longer counted as refunded, and what it was to give back is owed to the customer
    (`failed_refunds_owed`: support's, never asked again by automation). Call as `truth_apply`,
    on the locked booking and payment; `operation`: the refund's, when the caller holds it."""
    data = {
        "source": source,
        "refund": refund.refund_id,
        "status": refund.status,
        "failure_reason": refund.failure_reason,
        "amount": str(refund.amount),
    }
    found = operation or refund_operation(payment, refund)
    ours = found is not None and refund.intent_id == payment.provider_intent_id
    if not refund.failed or (ours and found.state == OperationState.FAILED):
        record_event(
            booking,
            "payment.observation.duplicate",
            actor=actor,
            actor_label=actor_label,
            summary=f"Nothing new from the provider ({source}): refund {refund.refund_id} is {refund.status}",
            data={**data, "operation": found.idempotency_key if found else None},
        )
        return False
    if not ours or found.state not in _FAILS:
        why = (
            "no operation of ours made it: not counted by us"
            if not ours
            else f"its operation {found.idempotency_key} was closed {found.state}: never counted"
        )
        record_event(
            booking,
            "payment.refund.unexpected",
            actor=actor,
            actor_label=actor_label,
            summary=f"Refund {refund.refund_id} of {refund.amount} {payment.currency} failed ({source}), "
            f"and {why}: support, look",
            data={**data, "operation": found.idempotency_key if found else None},
        )
        return False
    assert found is not None
    # Made, and not counted yet (its answer was lost): a refund left to support it answers
    # (`refused_refunds_owed`) is owed now as this failure, not as well.
    answers_refused = found.state == OperationState.OPEN and payment.refused_refunds_owed > 0
    now = timezone.now()
    found.state, found.failed_at = OperationState.FAILED, now
    found.failure_reason = (refund.failure_reason or refund.status)[:64]
    found.provider_object_id = found.provider_object_id or refund.refund_id
    found.closed_at = found.closed_at or now
    found.save(update_fields=["state", "failed_at", "failure_reason", "provider_object_id", "closed_at"])
    amount = found.amount if found.amount is not None else refund.amount
    # Ours counts this refund either by its operation (succeeded: the others' sum is what stays)
    # or by a total of the provider's that had it; without it, what remains is the larger of the
    # two. Never below what the other succeeded refunds made.
    made = payment.operations.refunds_made()
    payment.refunded_amount = min(max(made, payment.refunded_amount - amount), payment.captured_amount)
    payment.refunded_amount = max(payment.refunded_amount, Decimal("0.00")).quantize(CENT)
    fields = {"refunded_amount", "failed_refunds_owed"}
    if answers_refused:
        payment.refused_refunds_owed -= min(amount, payment.refused_refunds_owed)
        fields.add("refused_refunds_owed")
    held_back = payment.captured_amount - payment.refunded_amount - payment.refunded_outside
    owed_at_most = held_back - payment.refused_refunds_owed
    payment.failed_refunds_owed = min(payment.failed_refunds_owed + amount, owed_at_most).quantize(CENT)
    if unsaved is not None:
        unsaved |= fields
    else:
        payment.save(update_fields=[*fields, "updated_at"])
    money = payment.currency
    record_event(
        booking,
        "payment.refund.failed",
        actor=actor,
        actor_label=actor_label,
        summary=f"Refund of {amount} {money} failed after it was made ({found.failure_reason}, {source}): "
        f"not given back; {payment.refunded_amount} {money} refunded in all, "
        f"{payment.failed_refunds_owed} {money} owed to the customer: support's",
        data={
            **data,
            "operation": found.idempotency_key,
            "refunded": str(payment.refunded_amount),
            "owed": str(payment.failed_refunds_owed),
        },
    )
    logger.warning(
        "a refund failed after it was made", extra={"operation": found.idempotency_key, "source": source}
    )
    return True


def _details(payment: Payment, truth: IntentTruth) -> set[str]:
    changes = _detail_changes(payment, truth)
    for field, value in changes.items():
        setattr(payment, field, value)
    return set(changes)


def _detail_changes(payment: Payment, truth: IntentTruth) -> dict[str, object]:
    """The payment's details the truth changes (at the payment's current status), by field."""
    found: dict[str, object] = {}
    changes = {
        "decline_code": truth.decline_code if payment.status == P.DECLINED else "",
        "decline_message": truth.decline_message if payment.status == P.DECLINED else "",
        "card_brand": truth.card_brand,
        "card_last4": truth.card_last4,
        # Only a live hold lapses.
        "authorization_expires_at": truth.authorization_expires_at
        if payment.status == P.AUTHORIZED
        else None,
    }
    for field, value in changes.items():
        if value and getattr(payment, field) != value:
            found[field] = value
    if payment.status != P.AUTHORIZED and payment.authorization_expires_at is not None:
        found["authorization_expires_at"] = None
    if truth.in_review and not payment.in_review:
        found["in_review"] = True
    return found


def _record(
    booking: Booking,
    payment: Payment,
    truth: IntentTruth,
    before: tuple,
    *,
    source: str,
    ignored: str,
    actor: Actor | str,
    label: str,
) -> None:
    status, captured, refunded, in_review = before
    data = {
        "source": source,
        "intent": truth.intent_id,
        "provider_status": truth.status,
        "captured": str(truth.captured) if truth.captured is not None else None,
        "refunded": str(truth.refunded) if truth.refunded is not None else None,
    }
    money = payment.currency
    rows = []
    if payment.status != status:
        rows.append((f"payment.{payment.status}", f"Payment {status} → {payment.status} ({source})"))
    if payment.captured_amount != captured and payment.status == status:
        rows.append(("payment.captured", f"Captured {payment.captured_amount} {money} ({source})"))
    if payment.refunded_amount != refunded:
        rows.append(("payment.refunded", f"Refunded {payment.refunded_amount} {money} in all ({source})"))
    if payment.in_review and not in_review:
        rows.append(("payment.in_review", "The provider placed the authorization in review: support, look"))
    if not rows:
        kind = "payment.observation.stale" if ignored else "payment.observation.duplicate"
        rows.append((kind, f"Nothing new from the provider ({source}){': ' + ignored if ignored else ''}"))
    for kind, summary in rows:
        record_event(
            booking,
            kind,
            actor=actor,
            actor_label=label,
            summary=summary,
            from_state=status if kind == f"payment.{payment.status}" else "",
            data=data,
        )


# --- what follows for the booking ------------------------------------------------------------
def booking_follow(
    booking: Booking,
    payment: Payment,
    *,
    open_operation: PaymentOperation | None,
    actor: Actor | str,
    actor_label: str = "",
) -> None:
    """Move the booking as its payment now says, and tell the customer what happened to their
    money (one numbered change when the booking moves too). `open_operation`: the payment's open
    operation as the caller holds it under the payment's lock (`open_operation_of`), or None."""
    facts = payment_facts(payment, open_operation=open_operation)
    if booking.status == BookingState.AWAITING_PAYMENT and payment.status == P.AUTHORIZED:
        booking.next_check_at = timezone.now() + settings.BOOKING_SUBMIT_GRACE
        apply_transition(
            booking,
            "accept_payment",
            actor=actor,
            actor_label=actor_label,
            summary=f"{payment.amount} {payment.currency} held: sending the booking to the partner",
            payment=facts,
            extra_fields=("next_check_at",),
        )
        ports.submit_on_commit(booking.pk, booking.partner.code)
    elif booking.status == BookingState.AWAITING_PAYMENT and payment.status == P.DECLINED:
        apply_transition(
            booking,
            "refuse_payment",
            actor=actor,
            actor_label=actor_label,
            summary=f"Payment declined ({payment.decline_code or 'declined'}): not sent to the partner",
            data={"reason": "payment_declined", "decline_code": payment.decline_code},
            payment=facts,
        )
    else:
        customer_view.refresh(booking, actor=actor, actor_label=actor_label, payment=facts)
