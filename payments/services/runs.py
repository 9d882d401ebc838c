"""Making a booking's money match what it owes: one run decides the next step from the pure rules
(`payments.decisions.next_step`), opens its operation and commits it, calls the provider outside
any transaction, and records the outcome with its effect in a new short one; then the next step,
until there is nothing to do now.

Authorizing is the first such step (a booking awaiting its payment is owed a hold), capturing,
voiding and refunding the others. An operation whose outcome is unknown stays open and fences
every other: the next run asks again under the same key, which the provider answers with what
the first call did (or does it now, once). Where the provider's saved answer is itself a 5xx
after its change committed, only a read tells: the intent (found by our payment's id in its
metadata), or the refund (by its operation key). A 5xx's outcome is indeterminate (the provider
may make the change afterwards), so a read that finds nothing says "not made" only after a grace
(`_read_is_whole_truth`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.payment_facts import PaymentFacts
from bookings.pricing import CENT
from bookings.services import lock_booking
from bookings.timeline import record_event
from config.logging import log_context
from payments import connector, decisions, messages
from payments.connector import IDEMPOTENCY_ERROR, AuthorizeRequest, CallResult
from payments.models import (
    AUTHORIZATION_UNANSWERED,
    CallOutcome,
    OperationKind,
    OperationState,
    Payment,
    PaymentOperation,
    PaymentStatus,
)
from payments.services.deliveries import held_deliveries_settle
from payments.services.observations import (
    booking_follow,
    charge_in_doubt,
    lock_payment,
    open_operation_of,
    payment_facts,
    refund_truth_apply,
    truth_apply,
)
from payments.services.operations import operation_call, operation_open, operation_record

logger = logging.getLogger(__name__)

P = PaymentStatus
AWAITING_BANK_WHY = "the provider is processing it: the card's bank has not answered yet"
MAX_STEPS = 4  # steps of one run: authorize (or resolve), then a read, a capture, a read
BACKOFF_TRIES = 16


@dataclass(frozen=True)
class FollowUp:
    """When to run the payment again (after commit); None: nothing to do until something moves."""

    run_after_s: float | None = None


class Next(StrEnum):
    STEP = "step"  # decide again: there may be more to do now
    READ = "read"  # read the intent's truth, then decide again
    STOP = "stop"


@dataclass(frozen=True)
class _Claimed:
    operation: PaymentOperation
    call: Callable[[], CallResult]
    # Opened by this claim for a step automation chose (support's operations are opened by
    # support and only asked by runs): a call refused for now may end it, to be decided again.
    first_call: bool
    # The call reads the provider instead of asking under the key (`_reads`, as claimed).
    reads: bool = False


def payment_run(booking_id: UUID, *, actor: Actor | str = Actor.WORKER, actor_label: str = "") -> FollowUp:
    """Bring the booking's money in line with what it owes, as far as can be done now."""
    for _ in range(MAX_STEPS):
        claimed = _claim(booking_id, actor=actor, actor_label=actor_label)
        if isinstance(claimed, FollowUp):
            return claimed
        with log_context(booking_id=str(booking_id)):
            result = operation_call(claimed.operation, claimed.call)
        after = _record(
            booking_id,
            claimed.operation.pk,
            result,
            first_call=claimed.first_call,
            reads=claimed.reads,
            actor=actor,
            actor_label=actor_label,
        )
        if isinstance(after, FollowUp):
            return after
        if after == Next.READ and not _read(booking_id, actor=actor, actor_label=actor_label):
            # What the provider holds now is not known: deciding again on the totals as we count
            # them could ask for what the provider already did (a refund beside one made outside
            # our keys). Run again later, when a read or its webhook may have told it.
            return FollowUp(run_after_s=retry_delay_s(1))
    return FollowUp(run_after_s=settings.PAYMENTS_RETRY_BASE_S)  # more to do: soon, in a run of its own


def payment_run_and_follow_up(booking_id: UUID) -> None:
    """A run (the actor's, or a next step run inline), its follow-up queued."""
    with log_context(booking_id=str(booking_id)):
        follow_up = payment_run(booking_id)
    if follow_up.run_after_s is not None:
        messages.send_run(booking_id, delay_s=follow_up.run_after_s)


# --- deciding -----------------------------------------------------------------------------------
def booking_facts(booking: Booking) -> decisions.BookingFacts:
    return decisions.BookingFacts(
        state=booking.status,
        confirmed=booking.confirmed_shown_at is not None,
        attention_reason=booking.attention_reason,
        price=booking.total_price,
        cancellation_fee=booking.cancellation_fee,
        ended_as=booking.ended_as,
    )


def held(payment: Payment) -> decisions.Held:
    return decisions.Held(
        status=payment.status,
        amount=payment.amount,
        captured=payment.captured_amount,
        refunded=payment.refunded_amount,
        authorization_expires_at=payment.authorization_expires_at,
        failed_refunds_owed=payment.failed_refunds_owed,
        refunded_outside=payment.refunded_outside,
        refused_refunds_owed=payment.refused_refunds_owed,
    )


def lapse_guard_at(payment: Payment) -> datetime | None:
    """When a hold nobody has decided on is voided, so that it never lapses at the provider."""
    if payment.authorization_expires_at is None:
        return None
    return payment.authorization_expires_at - timedelta(seconds=settings.PAYMENTS_LAPSE_MARGIN_S)


def plan_for(booking: Booking, payment: Payment, *, open_operation: bool) -> decisions.Plan:
    guard = lapse_guard_at(payment)
    return decisions.next_step(
        booking=booking_facts(booking),
        payment=held(payment),
        open_operation=open_operation,
        lapse_due=guard is not None and timezone.now() >= guard,
    )


def _claim(booking_id: UUID, *, actor: Actor | str, actor_label: str) -> _Claimed | FollowUp:
    """Decide the next step on the locked booking and payment; commit its operation (or the open
    one, asked again) before any call."""
    with transaction.atomic():
        booking = lock_booking(booking_id)
        payment = lock_payment(booking)
        if payment is None:
            return FollowUp()
        # Every operation of the payment in one read (a few rows): the open one (the fence), the
        # refusals of a step and the next key's number, all under the payment's lock.
        operations = list(payment.operations.all())
        operation = next((o for o in operations if o.state == OperationState.OPEN), None)
        plan = plan_for(booking, payment, open_operation=operation is not None)
        step = decisions.Step
        left_to_support = plan.step in (step.CAPTURE, step.VOID, step.REFUND) and _refused_for_good(
            operations, plan.step
        )
        # What automation gave up is kept as each step is decided; an operation in flight (support's
        # refund or void, asked again) decides nothing: its answer does (`_record`), and telling the
        # customer "we are refunding" meanwhile would be one more mail, two if it is refused again.
        if plan.step != step.RESOLVE:
            refund_given_up = plan.amount if left_to_support and plan.step == step.REFUND else None
            release_given_up = (
                left_to_support and plan.step == step.VOID and decisions.owed(booking_facts(booking)) == 0
            )
            for field, value in (
                ("refused_refunds_owed", refund_given_up or Decimal("0.00")),
                ("release_refused", release_given_up),
            ):
                _keep_given_up(booking, payment, field, value, actor=actor, actor_label=actor_label)
        if plan.step == step.NOTHING:
            schedule(payment, booking)
            return FollowUp()
        if plan.step == step.ABANDON:
            payment.abandon()
            payment.save(update_fields=["status", "status_changed_at", "updated_at"])
            if operation is not None:  # tried, and provably never ran
                operation.state, operation.closed_at = OperationState.ABANDONED, timezone.now()
                operation.save(update_fields=["state", "closed_at"])
            record_event(booking, "payment.abandoned", actor=actor, actor_label=actor_label, summary=plan.why)
            booking_follow(booking, payment, open_operation=None, actor=actor, actor_label=actor_label)
            held_deliveries_settle(payment)
            schedule(payment, booking)
            return FollowUp()
        if left_to_support:
            _leave_to_support(booking, payment, plan, actor=actor, actor_label=actor_label)
            return FollowUp()
        first_call = plan.step != step.RESOLVE
        if plan.step == step.AUTHORIZE:
            operation = operation_open(
                payment, kind=OperationKind.AUTHORIZE, amount=payment.amount, known=operations, claimed=True
            )
        elif plan.step in (step.CAPTURE, step.VOID, step.REFUND):
            operation = operation_open(
                payment, kind=plan.step.value, amount=plan.amount, known=operations, claimed=True
            )
        else:  # asked again under its key: one more call that may change something, counted first
            assert operation is not None
            PaymentOperation.objects.filter(pk=operation.pk).update(calls_in_doubt=F("calls_in_doubt") + 1)
        fields: list[str] = []
        if operation.kind == OperationKind.AUTHORIZE and payment.status == P.PENDING:
            payment.start_authorization()
            fields += ["status", "status_changed_at"]
        # Due again if this run dies mid-call: the next one asks under the same key (one UPDATE
        # with the move above).
        if _due_at(
            payment,
            booking,
            retry_in_s=settings.PAYMENTS_CONNECT_TIMEOUT_S + settings.PAYMENTS_READ_TIMEOUT_S,
        ):
            fields.append("next_check_at")
        if fields:
            payment.save(update_fields=[*fields, "updated_at"])
        reads = _reads(operation)  # on the calls in doubt before this one
        return _Claimed(
            operation, _call_for(operation, payment, booking, reads=reads), first_call=first_call, reads=reads
        )


def money_at_cancel(
    booking: Booking, *, ending: str, actor: Actor | str, actor_label: str = ""
) -> PaymentFacts | None:
    """What the customer is told of their money with their cancel (`ports.payment_at_cancel`),
    on the locked booking, under the payment's lock; None when what they were told stays true.

    - Never asked: the run's abandon, at the cancel that makes it due, only while the payment is
      pending with no operation at all. An authorization's operation is committed with the move
      to authorizing before its call (`_claim`), so none was made and none can be in flight; a
      run that claims later finds the payment abandoned and asks nothing. Said at once, the money
      is "not charged" from the cancel on, not "asking your bank to hold" until a worker runs
      (for as long as the broker is down).
    - A capture asked and not answered (a confirmed booking's, its call out to a slow provider):
      the hold may be charged in full whatever the cancel does, so it is said as a charge not
      known yet, and the cancel's words say the fee is kept and the rest comes back, released or
      refunded, not "we charge the fee from the hold and release the rest".
    """
    payment = lock_payment(booking)
    if payment is None:
        return None
    if payment.status == P.AUTHORIZED:
        operation = open_operation_of(payment)
        return payment_facts(payment, open_operation=operation) if charge_in_doubt(operation) else None
    if payment.status != P.PENDING or payment.operations.exists():
        return None
    payment.abandon()
    _due_at(payment, booking)  # at rest: nothing is due any more
    payment.save(update_fields=["status", "status_changed_at", "next_check_at", "updated_at"])
    record_event(
        booking,
        "payment.abandoned",
        actor=actor,
        actor_label=actor_label,
        summary=f"the booking is {ending} before any authorization: the provider is never asked",
    )
    held_deliveries_settle(payment)
    return payment_facts(payment)


def _refused_for_good(operations: list[PaymentOperation], step: decisions.Step) -> bool:
    """The provider refused (or declined) this step every time it was asked lately: its latest
    operations of the kind, those not made aside, all ended so. A success in between starts the
    count again (two refunds refused long ago say nothing of the one a cancellation owes now)."""
    refused = 0
    for operation in sorted(operations, key=lambda o: o.seq, reverse=True):
        if operation.kind != step.value or operation.state == OperationState.NOT_MADE:
            continue
        if operation.state not in (OperationState.REFUSED, OperationState.DECLINED):
            break
        refused += 1
    return refused >= settings.PAYMENTS_REFUSED_MAX_TRIES


def _keep_given_up(
    booking: Booking, payment: Payment, field: str, value: object, *, actor: Actor | str, actor_label: str
) -> None:
    """Keep on the payment what automation has given up (`field`): `refused_refunds_owed`, the
    refund the provider refused every time it was asked (0.00 when the booking no longer owes it
    back, or a refund is asked again); `release_refused`, a hold the booking owes nothing of that
    the provider would not release (False when the booking owes something again, or a void is
    asked again). Told at once when it changes: "could not be made ... we still owe you" or
    "could not release ... ends by <its lapse> at the latest" while nothing more is tried, where
    "we are refunding" or "we are releasing" stayed until support acted or the hold lapsed."""
    if getattr(payment, field) == value:
        return
    setattr(payment, field, value)
    payment.save(update_fields=[field, "updated_at"])
    booking_follow(booking, payment, open_operation=None, actor=actor, actor_label=actor_label)


def _leave_to_support(
    booking: Booking, payment: Payment, plan: decisions.Plan, *, actor: Actor | str, actor_label: str
) -> None:
    """The provider refused this step every time it was asked: asking again changes nothing.
    Said once on the timeline; the payment waits for support (nothing due until it moves)."""
    if payment.next_check_at is None:
        return
    record_event(
        booking,
        "payment.left_to_support",
        actor=actor,
        actor_label=actor_label,
        summary=f"The provider refused to {plan.step} {settings.PAYMENTS_REFUSED_MAX_TRIES} times: "
        f"left to support ({plan.why})",
        data={"step": plan.step.value, "amount": str(plan.amount) if plan.amount is not None else None},
    )
    payment.next_check_at = None
    payment.save(update_fields=["next_check_at", "updated_at"])


def _past_key_window(operation: PaymentOperation) -> bool:
    """Open longer than the provider keeps its key: asked again, the call would be made anew (a
    second hold, a second refund), and nothing of the first can still be in flight."""
    return timezone.now() - operation.opened_at >= timedelta(seconds=settings.PAYMENTS_KEY_WINDOW_S)


def _read_is_whole_truth(operation: PaymentOperation) -> bool:
    """Whether a complete read that finds nothing made under the operation proves nothing was.

    Past the key window, nothing under its key can still be in flight. A replayed answer
    (`key_spent`) says the key's one request has finished, not what it did: a 5xx's outcome is
    indeterminate, and the provider reconciles such a request afterwards, so what it made may
    appear later, with its webhook (Stripe, "Advanced error handling"). Concluding "not made" at
    once asked again under a new key: a second refund, or a second hold, once the first appeared.
    So an empty read proves it only PAYMENTS_SERVER_ERROR_GRACE_S after the operation opened (its
    first call); sooner, the operation stays open, the payment fenced, and it is read again."""
    return _past_key_window(operation) or (operation.key_spent and _past_server_error_grace(operation))


def _past_server_error_grace(operation: PaymentOperation) -> bool:
    return timezone.now() - operation.opened_at >= timedelta(seconds=settings.PAYMENTS_SERVER_ERROR_GRACE_S)


def _read_again_until(operation: PaymentOperation) -> datetime:
    """When a read that keeps finding nothing made under the operation concludes it was not."""
    window = settings.PAYMENTS_KEY_WINDOW_S
    grace = min(settings.PAYMENTS_SERVER_ERROR_GRACE_S, window) if operation.key_spent else window
    return operation.opened_at + timedelta(seconds=grace)


def _reads(operation: PaymentOperation) -> bool:
    """Whether the operation's next try reads the provider instead of asking under its key: its
    answer was lost, or it is past the key window with a call under it that may have done
    something (with none, asking again makes at most the one thing it is for)."""
    return operation.answer_lost or (operation.calls_in_doubt > 0 and _past_key_window(operation))


def _call_for(
    operation: PaymentOperation, payment: Payment, booking: Booking, *, reads: bool
) -> Callable[[], CallResult]:
    """The operation's call, the same on every try (same key, same parameters), or its read once
    asking again tells nothing (`_reads`)."""
    key, intent, currency = operation.idempotency_key, payment.provider_intent_id, payment.currency
    if operation.kind == OperationKind.AUTHORIZE:
        if reads:
            return lambda: connector.find_authorization(
                str(payment.pk), currency=currency, since=operation.opened_at
            )
        request = AuthorizeRequest(
            payment_id=str(payment.pk),
            booking_reference=booking.reference,
            amount=payment.amount,
            currency=currency,
            payment_method=payment.payment_method,
        )
        return lambda: connector.authorize(request, key=key)
    if reads and operation.kind == OperationKind.REFUND:
        return lambda: connector.find_refund(intent, amount=operation.amount, currency=currency, key=key)
    if reads:
        return lambda: connector.retrieve(intent, currency=currency)
    if operation.kind == OperationKind.CAPTURE:
        return lambda: connector.capture(intent, amount=operation.amount, currency=currency, key=key)
    if operation.kind == OperationKind.VOID:
        return lambda: connector.void(intent, currency=currency, key=key)
    return lambda: connector.refund(intent, amount=operation.amount, currency=currency, key=key)


# --- recording ----------------------------------------------------------------------------------
def _record(
    booking_id: UUID,
    operation_id: int,
    result: CallResult,
    *,
    first_call: bool,
    reads: bool = False,
    actor: Actor | str,
    actor_label: str,
) -> Next | FollowUp:
    """Record a try and its effect in one transaction; what the run does next."""
    authorize = False
    with transaction.atomic():
        booking = lock_booking(booking_id)
        operation = _lock_with_payment(operation_id)
        payment = operation.payment
        authorize = operation.kind == OperationKind.AUTHORIZE
        after = decisions.after_call(result.outcome, authorize=authorize)
        if reads and result.outcome == CallOutcome.REFUSED:
            after = decisions.AfterCall.UNKNOWN  # a read refused proves nothing of the lost call
        found_nothing = after == decisions.AfterCall.APPLY and result.truth is None and result.object_id == ""
        never_made = found_nothing and reads and _read_is_whole_truth(operation)
        # What a read of a capture's or void's intent showed, when the step never happened (or "").
        shown_not_made = (
            _read_shows_not_made(operation, result) if reads and after == decisions.AfterCall.APPLY else ""
        )
        refund_never_made = never_made and not authorize
        if never_made and authorize:
            # A complete read of the provider found no intent made for the payment: the lost
            # answer's call made nothing, and only now may another key ask again.
            after = decisions.AfterCall.REFUSED
        elif found_nothing:
            after = decisions.AfterCall.UNKNOWN  # a read that found nothing yet: ask again later
        # Said on the read's row and kept as the operation's last word for support: in doubt, and
        # until when (`_read_is_whole_truth`).
        not_found_yet = (
            "nothing made found yet: what its call did may still appear at the provider; read again"
            f" until {_read_again_until(operation):%Y-%m-%d %H:%M} UTC"
            if found_nothing and reads and not never_made
            else ""
        )
        awaiting_bank = (
            authorize
            and after == decisions.AfterCall.APPLY
            and result.truth is not None
            and result.truth.status == decisions.AWAITING_BANK
        )
        if awaiting_bank:
            # Answered before the card's bank: the hold may yet be made, or declined. Not known,
            # so nothing is concluded (a decline here left a hold made later to lapse, the
            # customer told nothing was taken): the operation stays open, the payment `unknown`.
            after = decisions.AfterCall.UNKNOWN
        closes = {
            decisions.AfterCall.APPLY: OperationState.SUCCEEDED,
            decisions.AfterCall.DECLINE: OperationState.DECLINED,
            decisions.AfterCall.REFUSED: OperationState.REFUSED,
        }.get(after)
        if after == decisions.AfterCall.RETRY:  # this call did nothing: no longer in doubt
            operation.calls_in_doubt = max(operation.calls_in_doubt - 1, 0)
        # Nothing was made under the key only if no other call under it may have been: one in
        # flight in another run (a retry, the sweeper's, a webhook's follow-up) or one whose run
        # died before its record. Its answer, not this 429, then says what happened.
        nothing_made = after == decisions.AfterCall.RETRY and operation.calls_in_doubt == 0
        still_open = operation.state == OperationState.OPEN
        if not still_open:
            closes = None  # another call's answer closed it meanwhile: that record stands
        not_made = ((nothing_made and first_call and not authorize) or refund_never_made) and still_open
        if not_made:
            # No call under its key did anything (each was a 429, or a day on a complete read
            # found nothing made): nothing to fence. What to ask is
            # decided again from what the booking owes by then (a free cancel meanwhile makes it
            # a void, where asking again under this key would capture). An authorization keeps
            # its key: its own rule abandons it if the booking moves on.
            closes = OperationState.NOT_MADE
        if shown_not_made and still_open:
            # A capture or void whose answer was lost, read, and not taken (the intent still held,
            # or released or charged otherwise): not made, never "succeeded" on the timeline nor
            # in the count of refusals (`_refused_for_good`). What is owed then is decided at once
            # under a new key, as before: an intent is captured or cancelled once, so a call still
            # running under the old key could only be refused.
            closes = OperationState.NOT_MADE
        replayed_5xx = result.replayed and (result.http_status or 0) >= 500
        if result.outcome == CallOutcome.AMBIGUOUS and (
            replayed_5xx or result.error_code == IDEMPOTENCY_ERROR
        ):
            # Asking again under the key tells nothing more: the next try reads instead.
            operation.answer_lost = True
            operation.key_spent = operation.key_spent or result.replayed
            operation.save(update_fields=["answer_lost", "key_spent"])
        elif awaiting_bank and not operation.answer_lost:
            # The key's request has finished, and asked again it replays this same answer: only a
            # read of the intent tells what the bank said.
            operation.answer_lost = operation.key_spent = True
            operation.save(update_fields=["answer_lost", "key_spent"])
        why = shown_not_made if closes == OperationState.NOT_MADE else not_found_yet
        if awaiting_bank:
            why = AWAITING_BANK_WHY  # said on its row, kept as its last word for support
        operation_record(
            operation,
            result,
            booking=booking,
            closes=closes,
            actor=actor,
            actor_label=actor_label,
            read=reads,
            why=why,
        )
        # The payment's changed fields, saved in one UPDATE at the end (the row is locked).
        unsaved: set[str] = set()
        if result.truth is not None:
            truth_apply(
                booking=booking,
                payment=payment,
                truth=result.truth,
                source="response" if after != decisions.AfterCall.DECLINE else "decline",
                actor=actor,
                actor_label=actor_label,
                unsaved=unsaved,
            )
        refund = result.refund if operation.kind == OperationKind.REFUND else None
        if after == decisions.AfterCall.APPLY and refund is not None and refund.failed:
            # Read after the card refused it (its answer was lost, or the key's window passed):
            # made, and failed since. Never counted; owed to the customer.
            refund_truth_apply(
                booking=booking,
                payment=payment,
                refund=refund,
                source="response" if not reads else "lookup",
                actor=actor,
                actor_label=actor_label,
                operation=operation,
                unsaved=unsaved,
            )
        elif after == decisions.AfterCall.APPLY and operation.kind == OperationKind.REFUND:
            # The refund is made: counted now, so that no later step refunds it again before a
            # read of the totals (refunds only grow; the provider's totals can only raise this).
            counted = _refunded_with(operation, payment, counts_it=closes == OperationState.SUCCEEDED)
            if counted > payment.refunded_amount:
                payment.refunded_amount = counted
                unsaved.add("refunded_amount")
            given = Decimal("0.00")
            if closes == OperationState.SUCCEEDED and _gives_back_a_failure(operation, payment):
                given = min(operation.amount or Decimal("0.00"), payment.failed_refunds_owed)
                payment.failed_refunds_owed -= given
                unsaved.add("failed_refunds_owed")
            if closes == OperationState.SUCCEEDED and payment.refused_refunds_owed > 0:
                # Support's: automation asks nothing while a refused refund is owed, and no refund
                # was open when it was left to support (the refusals were the latest operations).
                rest = min((operation.amount or Decimal("0.00")) - given, payment.refused_refunds_owed)
                payment.refused_refunds_owed -= max(rest, Decimal("0.00"))
                unsaved.add("refused_refunds_owed")
        before = payment.status
        moved = ("status", "status_changed_at")
        if never_made and authorize and payment.status in AUTHORIZATION_UNANSWERED:
            payment.release_authorization()
            unsaved.update(moved)
        if authorize and after == decisions.AfterCall.APPLY and payment.status in AUTHORIZATION_UNANSWERED:
            # Answered, but neither held nor declined (an intent awaiting an action we never ask
            # for): not authorized, so the partner is not asked.
            payment.mark_declined()
            payment.decline_code = decisions.NOT_AUTHORIZED
            payment.decline_message = f"The provider answered {payment.provider_status or 'no status'}"
            unsaved.update((*moved, "decline_code", "decline_message"))
        if after == decisions.AfterCall.DECLINE and payment.status in (P.AUTHORIZING, P.UNKNOWN, P.PENDING):
            # Refused without an intent to show for it (an invalid payment method): declined all the same.
            payment.mark_declined()
            payment.decline_code = result.error_code[:64]
            payment.decline_message = result.error[:500]
            unsaved.update((*moved, "decline_code", "decline_message"))
        if (
            after in (decisions.AfterCall.RETRY, decisions.AfterCall.UNKNOWN)
            and payment.status == P.AUTHORIZING
        ):
            if nothing_made:
                payment.release_authorization()
            else:  # another call under the key may have made the hold: fenced until it is known
                payment.mark_outcome_unknown()
            unsaved.update(moved)
        if payment.status != before:
            _record_move(booking, payment, before, operation, actor=actor, actor_label=actor_label)
        # The operation just recorded is the payment's one open operation, if it is still open.
        booking_follow(booking, payment, open_operation=operation, actor=actor, actor_label=actor_label)
        held_deliveries_settle(payment)  # the echoes of this call that came while it was open
        if after in (decisions.AfterCall.RETRY, decisions.AfterCall.UNKNOWN):
            delay = retry_delay_s(_not_made_in_a_row(operation) if not_made else operation.tries)
            _save(payment, unsaved, due=_due_at(payment, booking, retry_in_s=delay))
            return FollowUp(run_after_s=delay)
        # As it stands now, should this run end here.
        _save(payment, unsaved, due=_due_at(payment, booking))
        if after == decisions.AfterCall.REFUSED or (
            after == decisions.AfterCall.APPLY and operation.kind == OperationKind.REFUND
        ):
            return Next.READ  # what the provider holds now (a refund's answer is the refund alone)
        # The operation is closed: decide the next step here, on the rows just written under their
        # locks, rather than in another transaction that would read and lock them again to find
        # the same answer. Whatever moves the booking or the payment after this commit queues a
        # run of its own (`ports.money_follows`, a webhook's news) and marks the payment due.
        if plan_for(booking, payment, open_operation=False).step == decisions.Step.NOTHING:
            return FollowUp()
        return Next.STEP


def _read_shows_not_made(operation: PaymentOperation, result: CallResult) -> str:
    """Why a read of the intent shows that the capture or void it was read for never happened
    (""; when it was made, or for any other operation)."""
    truth = result.truth
    if truth is None or truth.status is None or operation.kind not in decisions.MADE_AS:
        return ""
    if decisions.read_shows_made(
        operation.kind, intent_status=truth.status, cancellation_reason=truth.cancellation_reason
    ):
        return ""
    reason = (
        f" ({truth.cancellation_reason})" if truth.status == "canceled" and truth.cancellation_reason else ""
    )
    return f"the provider shows it never happened: its intent is {truth.status}{reason}"


def _refunded_with(refund: PaymentOperation, payment: Payment, *, counts_it: bool) -> Decimal:
    """The payment's refunded total with the refund just made in it (`counts_it`: this record
    closes it; otherwise the record that did has counted it): what the total was when it was
    opened, less the refunds whose failure was recorded since, plus its own amount; never less
    than our own refunds made. The total it was opened beside may hold refunds made outside our
    keys (the provider's dashboard), which a sum of our refunds alone would leave out: the refund
    then went uncounted, and a run whose read of the totals failed made it again. A total that
    already counts it (a delivery applied while its answer was out) stays as it is: the caller
    only ever raises the payment's."""
    counted = payment.operations.refunds_made()
    if counts_it and refund.refunded_before is not None:
        failed_since = PaymentOperation.objects.filter(
            payment=payment,
            kind=OperationKind.REFUND,
            state=OperationState.FAILED,
            failed_at__gte=refund.opened_at,
        ).exclude(pk=refund.pk).aggregate(total=Sum("amount"))["total"] or Decimal("0.00")
        beside = max(refund.refunded_before - failed_since, Decimal("0.00"))
        counted = max(counted, beside + (refund.amount or Decimal("0.00")))
    return min(counted, payment.captured_amount).quantize(CENT)


def _gives_back_a_failure(refund: PaymentOperation, payment: Payment) -> bool:
    """Whether a refund just made gives back money a refund the card refused still owes: only
    one decided after that failure was known (support's; automation asks nothing while money is
    owed back). A refund opened before it (a cancel's, its answer late) was owed anyway."""
    if payment.failed_refunds_owed <= 0:
        return False
    return PaymentOperation.objects.filter(
        payment=payment,
        kind=OperationKind.REFUND,
        state=OperationState.FAILED,
        failed_at__lt=refund.opened_at,
    ).exists()


def _not_made_in_a_row(operation: PaymentOperation) -> int:
    """The operations of this kind not made since the payment's last of another outcome: the
    tries of one step across its keys, for the backoff (each not-made operation has one try)."""
    latest = (
        PaymentOperation.objects.filter(payment_id=operation.payment_id, kind=operation.kind)
        .order_by("-seq")
        .values_list("state", flat=True)[:BACKOFF_TRIES]  # enough to reach the longest delay
    )
    count = 0
    for state in latest:
        if state != OperationState.NOT_MADE:
            break
        count += 1
    return max(count, 1)


def _lock_with_payment(operation_id: int) -> PaymentOperation:
    """The operation with its payment, the payment's row locked as `lock_payment` locks it (after
    the booking's): one statement where a lock and a read were two. The operation is read as
    current: whoever writes a payment or its operations holds the booking's lock first, and the
    receiver, which may hold the payment's meanwhile, writes neither."""
    return (
        PaymentOperation.objects.select_related("payment")
        .select_for_update(of=("payment",), no_key=True)
        .get(pk=operation_id)
    )


def _save(payment: Payment, fields: set[str], *, due: bool) -> None:
    """One UPDATE of the payment's changed fields, `next_check_at` with them when `due`."""
    if due:
        fields.add("next_check_at")
    if fields:
        payment.save(update_fields=[*fields, "updated_at"])


_WHY = {
    P.PENDING: "nothing was made: to be asked again",
    P.UNKNOWN: "the outcome is unknown: fenced until the provider answers under the same key",
    P.DECLINED: "refused",
}


def _record_move(
    booking: Booking,
    payment: Payment,
    before: str,
    operation: PaymentOperation,
    *,
    actor: Actor | str,
    actor_label: str,
) -> None:
    """A move of the payment that a call's outcome made (not the provider's truth: that one
    records its own rows)."""
    record_event(
        booking,
        f"payment.{payment.status}",
        actor=actor,
        actor_label=actor_label,
        summary=f"Payment {before} → {payment.status}: {_WHY.get(payment.status, '')}"
        + (f" ({payment.decline_code})" if payment.decline_code else ""),
        from_state=before,
        data={"operation": operation.kind, "idempotency_key": operation.idempotency_key},
    )


def _read(booking_id: UUID, *, actor: Actor | str, actor_label: str) -> bool:
    """Read the intent's truth from the provider and apply it (a read never changes anything
    at the provider, so it needs no operation); False if the provider did not tell it."""
    payment = Payment.objects.filter(booking_id=booking_id).only("provider_intent_id", "currency").first()
    if payment is None or not payment.provider_intent_id:
        return True  # no intent: nothing to read
    result = connector.retrieve(payment.provider_intent_id, currency=payment.currency)
    if result.truth is None:
        logger.info("payment read failed", extra={"error": result.error_code or result.error[:200]})
        return False
    with transaction.atomic():
        booking = lock_booking(booking_id)
        locked = lock_payment(booking)
        truth_apply(
            booking=booking,
            payment=locked,
            truth=result.truth,
            source="lookup",
            actor=actor,
            actor_label=actor_label,
        )
        booking_follow(
            booking, locked, open_operation=open_operation_of(locked), actor=actor, actor_label=actor_label
        )
    return True


# --- when next ------------------------------------------------------------------------------
def retry_delay_s(tries: int) -> float:
    """Doubling from PAYMENTS_RETRY_BASE_S up to PAYMENTS_RETRY_MAX_S, with jitter."""
    ceiling = min(settings.PAYMENTS_RETRY_BASE_S * 2 ** max(tries - 1, 0), settings.PAYMENTS_RETRY_MAX_S)
    return round(random.uniform(ceiling / 2, ceiling), 3)


def schedule(payment: Payment, booking: Booking, *, retry_in_s: float | None = None) -> None:
    """Set when the sweeper must look at the payment again if no run does first: after a retry
    (with a grace for its message), before a hold nobody decided on lapses, or never (at rest)."""
    if _due_at(payment, booking, retry_in_s=retry_in_s):
        payment.save(update_fields=["next_check_at", "updated_at"])


def _due_at(payment: Payment, booking: Booking, *, retry_in_s: float | None = None) -> bool:
    """`schedule` without the save: set `next_check_at` on the instance; True if it changed (the
    caller saves it, with whatever else it changes of the row)."""
    now = timezone.now()
    grace = timedelta(seconds=settings.PAYMENTS_RUN_GRACE_S)
    if retry_in_s is not None:
        when = now + timedelta(seconds=retry_in_s) + grace
    elif decisions.at_rest(booking=booking_facts(booking), payment=held(payment)):
        when = None
    elif payment.status == P.AUTHORIZED:
        guard = lapse_guard_at(payment)
        when = guard if guard is not None else now + timedelta(seconds=settings.PAYMENTS_HOLD_RECHECK_S)
    else:
        when = now + grace
    if payment.next_check_at == when:
        return False
    payment.next_check_at = when
    return True
