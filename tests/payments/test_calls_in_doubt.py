"""Two calls under one key: a 429 proves only that its own call did nothing.

A run's call can still be in flight in another run (the actor's retry, the sweeper's run, a
webhook's follow-up) or have reached the provider from a run that died before its record. Each
test plays the interleaving by hand against the real provider: claims and records committed as
the runs commit them, the calls made as they make them, no worker in the way.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.services import booking_request_cancel
from bookings.states import BookingState
from payments.models import OperationKind, OperationState, Payment, PaymentOperation, PaymentStatus
from payments.services import runs
from payments.services.operations import operation_call, operation_open
from tests.helpers import wait_until
from tests.payments.conftest import assert_money_at_rest, kinds, money_code, payment_of, wait_for_money

S = BookingState
P = PaymentStatus
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
DELAYED_WEBHOOKS = [60, 60]  # the provider's word of the hold must not rescue what the runs decide


def _claim(booking) -> runs._Claimed:
    claimed = runs._claim(booking.pk, actor=Actor.WORKER, actor_label="test")
    assert isinstance(claimed, runs._Claimed), claimed
    return claimed


def _record(booking, claimed: runs._Claimed, result):
    return runs._record(
        booking.pk,
        claimed.operation.pk,
        result,
        first_call=claimed.first_call,
        actor=Actor.WORKER,
        actor_label="test",
    )


def _operation(claimed: runs._Claimed) -> PaymentOperation:
    return PaymentOperation.objects.get(pk=claimed.operation.pk)


def test_an_authorization_asked_again_and_refused_for_now_stays_fenced_after_a_run_died_mid_call(
    paying_idle, settings
):
    """Review: run A's authorization reached the provider (a hold) and A died before its record;
    run B asked again under the key and got a 429, which released the payment to pending; the
    customer cancelled, the next run abandoned the payment as never authorized, and the hold was
    left to lapse while the customer was told "not charged"."""
    paying_idle.provider.set_faults(webhook_delay_s=DELAYED_WEBHOOKS)
    booking = paying_idle.book()
    dead = _claim(booking)  # run A: its claim committed...
    assert operation_call(dead.operation, dead.call).outcome == "ok"  # ...its call made the hold
    paying_idle.provider.set_faults(rate_limit_rate=1)

    runs.payment_run(booking.pk)  # run B: asks again under the key, 429

    assert payment_of(booking).status == P.UNKNOWN  # fenced, not released
    assert _operation(dead).state == OperationState.OPEN
    booking_request_cancel(booking_id=booking.pk, actor="customer")
    runs.payment_run(booking.pk)  # still 429: nothing concluded, nothing abandoned
    assert payment_of(booking).status == P.UNKNOWN

    paying_idle.provider.set_faults(rate_limit_rate=0)
    runs.payment_run(booking.pk)  # the key's answer: the hold
    assert payment_of(booking).status == P.AUTHORIZED
    paying_idle.start_worker()  # the cancel completes; nothing owed: the hold is released

    wait_until(lambda: payment_of(booking).status == P.VOIDED, what="the hold to be released", timeout_s=30)
    assert "payment.abandoned" not in kinds(booking)
    [intent] = paying_idle.intents(booking)
    assert intent["status"] == "canceled"
    wait_for_money(booking, "released")
    assert_money_at_rest(paying_idle, booking, owed=Decimal("0.00"), code="released")


def test_a_void_refused_for_now_is_not_closed_while_another_call_under_its_key_is_in_flight(
    paying_idle, settings
):
    """Review: run A opened a void and was answered 429 while run B's call under the same key
    had already released the hold; A closed the operation as not made, so the next run would
    decide the step again under a new key (for a refund: a second refund)."""
    paying_idle.provider.set_faults(webhook_delay_s=DELAYED_WEBHOOKS)
    booking = paying_idle.book()
    runs.payment_run(booking.pk)  # held; the booking goes on to the partner (no worker takes it)
    assert payment_of(booking).status == P.AUTHORIZED
    settings.PAYMENTS_LAPSE_MARGIN_S = 365 * 24 * 3600  # the hold is to be voided now

    first = _claim(booking)  # run A opens the void
    second = _claim(booking)  # run B, meanwhile, asks under its key
    assert (first.operation.kind, first.first_call, second.first_call) == (OperationKind.VOID, True, False)
    made = operation_call(second.operation, second.call)  # B's call releases the hold
    paying_idle.provider.set_faults(rate_limit_rate=1)
    refused = operation_call(first.operation, first.call)  # A's call: 429
    assert (made.outcome, refused.outcome) == ("ok", "transient")

    _record(booking, first, refused)
    assert _operation(first).state == OperationState.OPEN  # B's call may have made it: still fenced
    assert payment_of(booking).status == P.AUTHORIZED

    _record(booking, second, made)
    paying_idle.provider.set_faults(rate_limit_rate=0)
    runs.payment_run(booking.pk)

    assert _operation(first).state == OperationState.SUCCEEDED
    voids = PaymentOperation.objects.filter(payment__booking=booking, kind=OperationKind.VOID)
    assert voids.count() == 1
    assert payment_of(booking).status == P.VOIDED
    [intent] = paying_idle.intents(booking)
    assert intent["status"] == "canceled"


def test_a_fee_capture_is_in_doubt_while_any_call_under_its_key_may_have_made_it(paying_idle, settings):
    """CI (test_cancel_while_charging): two runs asked a cancel's fee capture under one key, both
    answered 429. Run A's record said "charge not known" (B's call was still out), B's record "held,
    not charged yet" (both provably did nothing), and a test that waited for the first word read the
    second. True each time; a try that timed out, though, keeps the charge in doubt whatever other
    tries under its key are answered, until the key's own answer."""
    paying_idle.provider.set_faults(webhook_delay_s=DELAYED_WEBHOOKS)
    booking = paying_idle.book()
    runs.payment_run(booking.pk)  # held; the booking goes on to the partner (no worker takes it)
    # confirmed, then cancelled past its free cancellation: the fee, 90.00 of the 360.00 held, is due
    Booking.objects.filter(pk=booking.pk).update(
        status=S.CANCELLED, cancellation_fee=Decimal("90.00"), confirmed_shown_at=timezone.now()
    )

    first = _claim(booking)  # run A opens the fee's capture
    second = _claim(booking)  # run B, meanwhile, asks under its key
    assert (first.operation.kind, first.operation.amount) == (OperationKind.CAPTURE, Decimal("90.00"))
    assert (first.first_call, second.first_call) == (True, False)
    paying_idle.provider.set_faults(rate_limit_rate=1)
    refused_a = operation_call(first.operation, first.call)
    refused_b = operation_call(second.operation, second.call)
    assert (refused_a.outcome, refused_b.outcome) == ("transient", "transient")

    _record(booking, first, refused_a)
    assert money_code(booking) == "charge_unknown"  # B's call may have made it
    _record(booking, second, refused_b)
    assert money_code(booking) == "held"  # neither did: not charged, which is true
    [intent] = paying_idle.intents(booking)
    assert (intent["status"], intent["amount_received"]) == ("requires_capture", 0)

    # a try under the key that times out after the provider made it: in doubt from its record on,
    # a 429 of another run's try recorded after it changes nothing of that
    third = _claim(booking)
    fourth = _claim(booking)
    paying_idle.provider.set_faults(rate_limit_rate=0, timeout_after_commit_rate=1)
    timed_out = operation_call(third.operation, third.call)
    paying_idle.provider.set_faults(rate_limit_rate=1, timeout_after_commit_rate=0)
    refused = operation_call(fourth.operation, fourth.call)
    assert (timed_out.outcome, refused.outcome) == ("ambiguous", "transient")
    _record(booking, third, timed_out)
    assert money_code(booking) == "charge_unknown"
    _record(booking, fourth, refused)
    assert money_code(booking) == "charge_unknown"
    [intent] = paying_idle.intents(booking)
    assert intent["amount_received"] == 9_000  # made: "not charged" would have been untrue

    paying_idle.provider.set_faults(rate_limit_rate=0)
    runs.payment_run(booking.pk)  # the key's answer: the fee charged, the rest released
    assert money_code(booking) == "charged"
    assert PaymentOperation.objects.filter(payment__booking=booking, kind=OperationKind.CAPTURE).count() == 1


def test_a_hold_the_provider_reports_for_an_abandoned_payment_is_released(paying_idle, settings):
    """The one door takes the provider's word of a hold on a payment we abandoned (it recorded it
    as stale), so the run releases what nobody owes instead of leaving it to lapse."""
    paying_idle.provider.set_faults(webhook_delay_s=[4, 4])
    booking = paying_idle.book()
    claimed = _claim(booking)
    assert operation_call(claimed.operation, claimed.call).outcome == "ok"  # the hold is made
    # As if every call under the key had been answered 429: abandoned once the booking ended.
    PaymentOperation.objects.filter(pk=claimed.operation.pk).update(calls_in_doubt=0)
    Payment.objects.filter(booking=booking).update(status=P.PENDING)
    booking_request_cancel(booking_id=booking.pk, actor="customer")
    runs.payment_run(booking.pk)
    assert payment_of(booking).status == P.ABANDONED

    paying_idle.start_worker()  # the provider's webhook of the hold is applied, then the run

    wait_until(lambda: payment_of(booking).status == P.VOIDED, what="the hold to be released", timeout_s=30)
    [intent] = paying_idle.intents(booking)
    assert intent["status"] == "canceled"
    assert_money_at_rest(paying_idle, booking, owed=Decimal("0.00"), code="released")


# --- past the provider's key window --------------------------------------------------------------
A_DAY_AGO = timedelta(hours=25)  # the provider keeps a key's answer 24 hours


def _cancel_calls(provider) -> int:
    return sum(
        n for call, n in provider.stats()["calls"].items() if call.startswith("POST") and "cancel" in call
    )


def test_an_operation_open_past_the_key_window_is_read_never_asked_again(paying_idle, settings):
    """Review: the provider forgets a key after 24 hours; an operation left open that long (an
    outage) and asked again under its key would be made anew: a second hold, a second refund."""
    paying_idle.provider.set_faults(webhook_delay_s=DELAYED_WEBHOOKS)
    booking = paying_idle.book()
    runs.payment_run(booking.pk)
    settings.PAYMENTS_LAPSE_MARGIN_S = 365 * 24 * 3600  # the hold is to be voided now
    void = _claim(booking)
    paying_idle.provider.set_faults(timeout_after_commit_rate=1)
    _record(booking, void, operation_call(void.operation, void.call))  # made; its answer lost
    paying_idle.provider.set_faults(timeout_after_commit_rate=0)
    assert _operation(void).state == OperationState.OPEN
    PaymentOperation.objects.filter(pk=void.operation.pk).update(opened_at=timezone.now() - A_DAY_AGO)
    asked = _cancel_calls(paying_idle.provider)

    runs.payment_run(booking.pk)

    assert _cancel_calls(paying_idle.provider) == asked  # read, not asked again
    assert _operation(void).state == OperationState.SUCCEEDED
    assert payment_of(booking).status == P.VOIDED


def test_a_refund_open_past_the_key_window_that_was_never_made_is_decided_again(paying, settings):
    booking = paying.book()
    wait_for_money(booking, "charged")
    payment = payment_of(booking)
    with transaction.atomic():  # a refund opened, its run dead before any call reached the provider
        refund = operation_open(payment, kind=OperationKind.REFUND, amount=Decimal("10.00"), claimed=True)
    PaymentOperation.objects.filter(pk=refund.pk).update(opened_at=timezone.now() - A_DAY_AGO)

    runs.payment_run(booking.pk)

    refund.refresh_from_db()
    assert refund.state == OperationState.NOT_MADE  # found nothing made: decided again, nothing owed
    [intent] = paying.intents(booking)
    assert paying.provider.refunds(intent["id"]) == []
    assert_money_at_rest(paying, booking, owed=Decimal("360.00"), code="charged")
