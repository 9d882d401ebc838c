"""A refund the provider refused every time it was asked (`runs._leave_to_support`) is owed to the
customer and told so, as one the card refused after it was made: "could not be made ... we still
owe you", never "we are refunding" while nothing is. The rule and its facts, without a provider
(the end to end test is `test_refund_refused.py`)."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from bookings.cancelling import money_words
from bookings.customer_money import money_of, money_shown, refund_due
from bookings.models import Actor, Booking, BookingEvent, Notification, NotificationKind
from bookings.services import lock_booking
from bookings.states import BookingState, CustomerMoney
from payments.connector import RefundTruth
from payments.decisions import BookingFacts, Held, at_rest
from payments.models import OperationKind, OperationState, OutsideMethod, Payment, PaymentOperation
from payments.models import PaymentStatus as P
from payments.services.observations import lock_payment, payment_facts, refund_truth_apply
from payments.services.outside import refund_outside_record
from payments.services.runs import payment_run
from tests.payments.test_refund_failed import TOLD  # the words of a refund that could not be made
from tests.reconciliation.paying import PRICE, paying_booking

S = BookingState
ZERO = Decimal("0.00")


def refused_twice(settings) -> Payment:
    """A confirmed booking charged in full and cancelled for free, whose refund the provider has
    refused PAYMENTS_REFUSED_MAX_TRIES times in a row; the customer was told it is on its way."""
    settings.PAYMENTS_REFUSED_MAX_TRIES = 2
    payment = paying_booking(
        status=S.CANCELLED,
        booking_fields={"confirmed_shown_at": timezone.now(), "submission_count": 1},
        next_check_at=timezone.now(),
    )
    for seq in (1, 2):
        PaymentOperation.objects.create(
            payment=payment,
            kind=OperationKind.REFUND,
            seq=seq,
            idempotency_key=f"{payment.pk}:refund:{seq}",
            amount=PRICE,
            state=OperationState.REFUSED,
            tries=1,
        )
    booking = payment.booking
    booking.customer_money = money_of(payment_facts(payment)).as_json()  # charged 360.00
    booking.save(update_fields=["customer_money"])
    assert "are refunding the 360.00 EUR" in money_words(booking, money_shown(booking))
    return payment


def test_a_refund_left_to_support_is_owed_and_told_so_once(db, settings, django_capture_on_commit_callbacks):
    payment = refused_twice(settings)

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):  # a second run finds it support's: nothing more said
            payment_run(payment.booking_id)

    payment.refresh_from_db()
    assert (payment.refused_refunds_owed, payment.failed_refunds_owed, payment.next_check_at) == (
        PRICE,
        ZERO,
        None,
    )
    booking = Booking.objects.get(pk=payment.booking_id)
    money = money_shown(booking)
    assert (money.code, money.refund_failed) == (CustomerMoney.REFUND_FAILED, PRICE)
    assert money_words(booking, money) == TOLD  # nothing "are refunding"
    assert refund_due(booking, money) == ZERO
    [mailed] = Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY)
    assert mailed.money["code"] == "refund_failed"
    assert BookingEvent.objects.filter(booking=booking, kind="payment.left_to_support").count() == 1
    assert not PaymentOperation.objects.filter(payment=payment, state=OperationState.OPEN).exists()


def test_what_refunds_could_not_make_is_told_owed_failed_and_refused_alike():
    payment = Payment(
        status=P.CAPTURED,
        amount=PRICE,
        currency="EUR",
        captured_amount=PRICE,
        refunded_amount=ZERO,
        failed_refunds_owed=Decimal("100.00"),
        refused_refunds_owed=Decimal("260.00"),
    )

    facts = payment_facts(payment)  # no query: the row says it

    assert facts.refund_failed == PRICE
    assert money_of(facts).text == TOLD


def test_a_refused_refund_owed_is_at_rest_and_follows_what_the_booking_owes(
    db, settings, django_capture_on_commit_callbacks
):
    payment = refused_twice(settings)
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)
    payment.refresh_from_db()
    assert payment.refused_refunds_owed == PRICE
    facts = BookingFacts(
        state=S.CANCELLED, confirmed=True, attention_reason="", price=PRICE, cancellation_fee=ZERO
    )
    assert at_rest(booking=facts, payment=Held(status=P.CAPTURED, amount=PRICE, captured=PRICE, refunded=ZERO,
                                               refused_refunds_owed=PRICE))  # fmt: skip

    # The booking comes to owe its price after all (support settles it confirmed): nothing is
    # owed back, and the customer is told what was charged, not that we owe them.
    Booking.objects.filter(pk=payment.booking_id).update(status=S.CONFIRMED, cancellation_fee=None)
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)

    payment.refresh_from_db()
    assert payment.refused_refunds_owed == ZERO
    money = money_shown(Booking.objects.get(pk=payment.booking_id))
    assert (money.code, money.text) == (CustomerMoney.CHARGED, "We charged 360.00 EUR to your card.")


def test_support_s_refund_of_a_refused_one_that_the_card_then_refuses_is_owed_once(
    db, settings, django_capture_on_commit_callbacks
):
    payment = refused_twice(settings)
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)
    # Support refunds it again; its answer is lost, and the provider then says the card refused it.
    support_refund = PaymentOperation.objects.create(
        payment=payment,
        kind=OperationKind.REFUND,
        seq=3,
        idempotency_key=f"{payment.pk}:refund:3",
        amount=PRICE,
        state=OperationState.OPEN,
        tries=1,
    )
    failed = RefundTruth(
        refund_id="re_support", intent_id=payment.provider_intent_id, currency="EUR", amount=PRICE,
        status="failed", operation=support_refund.idempotency_key, failure_reason="expired_or_canceled_card",
    )  # fmt: skip

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        booking = lock_booking(payment.booking_id)
        refund_truth_apply(
            booking=booking, payment=lock_payment(booking), refund=failed, source="read", actor=Actor.SYSTEM,
            operation=support_refund,
        )  # fmt: skip

    payment.refresh_from_db()
    assert (payment.failed_refunds_owed, payment.refused_refunds_owed, payment.owed_back) == (
        PRICE,
        ZERO,
        PRICE,
    )


def test_a_refused_refund_paid_back_another_way_is_told_so(db, settings, django_capture_on_commit_callbacks):
    payment = refused_twice(settings)
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        booking = lock_booking(payment.booking_id)
        locked = lock_payment(booking)
        refund_outside_record(
            booking=booking,
            payment=locked,
            amount=PRICE,
            method=OutsideMethod.BANK_TRANSFER,
            actor=Actor.SUPPORT,
            actor_label="ops",
        )

    payment.refresh_from_db()
    assert (payment.refused_refunds_owed, payment.refunded_outside, payment.next_check_at) == (
        ZERO,
        PRICE,
        None,
    )
    money = money_shown(Booking.objects.get(pk=payment.booking_id))
    assert money.code == CustomerMoney.REFUNDED_OUTSIDE
    assert "we paid the 360.00 EUR back to you another way" in money.text


def test_a_refund_left_to_support_before_this_was_kept_is_told_after_the_migration(
    db, settings, django_capture_on_commit_callbacks
):
    # As the code before left it: refused twice, left to support, the customer told "refunding".
    import importlib

    from django.apps import apps

    payment = refused_twice(settings)
    Payment.objects.filter(pk=payment.pk).update(next_check_at=None)
    migration = importlib.import_module("payments.migrations.0009_refused_refunds_due_again")

    migration.refused_refunds_due_again(apps, None)
    assert Payment.objects.get(pk=payment.pk).next_check_at is not None  # due: the sweeper runs it
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)

    payment.refresh_from_db()
    assert (payment.refused_refunds_owed, payment.next_check_at) == (PRICE, None)
    booking = Booking.objects.get(pk=payment.booking_id)
    assert money_words(booking, money_shown(booking)) == TOLD
