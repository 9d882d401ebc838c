"""A hold the provider refused to release every time it was asked (`runs._leave_to_support`), of a
booking that owes nothing, is told as it is: "could not release ... the hold ends by <its lapse>
at the latest, and you will not be charged", never "we are releasing" while nothing is. The rule
and its facts, without a provider (the end to end test is `test_void_refused.py`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from bookings.cancelling import money_words
from bookings.customer_money import Money, money_of, money_shown
from bookings.models import Actor, Booking, BookingEvent, Notification, NotificationKind
from bookings.services import lock_booking
from bookings.states import BookingState, CustomerMoney
from payments.connector import IntentTruth
from payments.models import OperationKind, OperationState, Payment, PaymentOperation
from payments.models import PaymentStatus as P
from payments.services.observations import booking_follow, lock_payment, payment_facts, truth_apply
from payments.services.runs import payment_run
from tests.reconciliation.paying import PRICE, paying_booking

S = BookingState
LAPSES = datetime(2027, 1, 9, 14, 5, tzinfo=UTC)
TOLD = (
    "We could not release the 360.00 EUR held on your card: our payment provider refused it. The "
    "hold ends by 9 Jan 2027, 14:05 UTC at the latest, and you will not be charged."
)
LAPSED = "The hold of 360.00 EUR on your card has ended: you were not charged."


def refused_twice(settings, *, status: str = S.CANCELLED, lapses: datetime = LAPSES) -> Payment:
    """A booking held and never confirmed, cancelled for free (or as `status`), whose void the
    provider has refused PAYMENTS_REFUSED_MAX_TRIES times in a row; the customer was told the hold
    is held, and, cancelled, that we are releasing it."""
    settings.PAYMENTS_REFUSED_MAX_TRIES = 2
    payment = paying_booking(
        status=status,
        payment_status=P.AUTHORIZED,
        booking_fields={"submission_count": 1},
        authorization_expires_at=lapses,
        next_check_at=timezone.now(),
    )
    for seq in (1, 2):
        PaymentOperation.objects.create(
            payment=payment,
            kind=OperationKind.VOID,
            seq=seq,
            idempotency_key=f"{payment.pk}:void:{seq}",
            state=OperationState.REFUSED,
            tries=1,
        )
    return payment


def money_mails(booking: Booking) -> list[str]:
    return [
        n.money["code"] for n in Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY)
    ]


def test_a_release_left_to_support_is_told_once_with_when_the_hold_lapses(
    db, settings, django_capture_on_commit_callbacks
):
    payment = refused_twice(settings)
    booking = Booking.objects.get(pk=payment.booking_id)
    assert "we are releasing the 360.00 EUR" in money_words(booking, money_shown(booking))  # as before

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):  # a second run finds it support's: nothing more said
            payment_run(payment.booking_id)

    payment.refresh_from_db()
    assert (payment.status, payment.release_refused, payment.next_check_at) == (P.AUTHORIZED, True, None)
    booking = Booking.objects.get(pk=payment.booking_id)
    money = money_shown(booking)
    assert (money.code, money.lapses_at) == (CustomerMoney.RELEASE_REFUSED, LAPSES)
    assert booking.customer_money["lapses_at"] == LAPSES.isoformat()
    assert money_words(booking, money) == TOLD  # nothing "we are releasing", "we hold"
    assert money_mails(booking) == ["release_refused"]
    assert BookingEvent.objects.filter(booking=booking, kind="payment.left_to_support").count() == 1
    assert not PaymentOperation.objects.filter(payment=payment, state=OperationState.OPEN).exists()


def test_a_confirmed_booking_cancelled_for_free_says_no_fee_is_kept_beside_it(
    db, settings, django_capture_on_commit_callbacks
):
    payment = refused_twice(settings)
    Booking.objects.filter(pk=payment.booking_id).update(
        confirmed_shown_at=timezone.now(), cancellation_fee=Decimal("0.00")
    )
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)

    booking = Booking.objects.get(pk=payment.booking_id)
    assert (
        money_words(booking, money_shown(booking))
        == f"{TOLD} No cancellation fee is kept. Cancelling this booking is free."
    )


def test_the_facts_are_read_off_the_row_and_the_words_without_a_lapse_say_no_date(
    db, django_assert_num_queries
):
    payment = Payment(
        status=P.AUTHORIZED,
        amount=PRICE,
        currency="EUR",
        authorization_expires_at=LAPSES,
        release_refused=True,
    )

    with django_assert_num_queries(0):
        facts = payment_facts(payment)

    assert (facts.state, facts.lapses_at) == ("release_refused", LAPSES)
    assert money_of(facts).text == TOLD
    undated = money_of(
        payment_facts(Payment(status=P.AUTHORIZED, amount=PRICE, currency="EUR", release_refused=True))
    )
    assert undated.text == (
        "We could not release the 360.00 EUR held on your card: our payment provider refused it. The "
        "hold ends when it lapses, and you will not be charged."
    )
    assert "lapses_at" not in undated.as_json()
    # Only while held: a hold let go since is released, whatever the row still says.
    assert payment_facts(
        Payment(status=P.VOIDED, amount=PRICE, currency="EUR", release_refused=True)
    ).state == ("released")


def test_money_told_before_this_release_reads_back_the_same():
    old = {"code": "held", "currency": "EUR", "amount": "360.00", "charged": "0.00", "refunded": "0.00"}

    money = Money.from_json(old)

    assert money.lapses_at is None and money.as_json() == old
    held = Payment(
        status=P.AUTHORIZED,
        amount=PRICE,
        currency="EUR",
        release_refused=True,
        authorization_expires_at=LAPSES,
    )
    told = money_of(payment_facts(held))
    assert Money.from_json(told.as_json()) == told


def test_the_words_follow_what_the_booking_owes(db, settings, django_capture_on_commit_callbacks):
    payment = refused_twice(settings)
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)
    payment.refresh_from_db()
    assert payment.release_refused

    # Support takes the booking up again (not decided: the hold may be charged yet): nothing is
    # given up any more, and the customer is told what is true then, held.
    Booking.objects.filter(pk=payment.booking_id).update(
        status=S.NEEDS_ATTENTION, attention_reason="partner_mismatch", cancellation_fee=None
    )
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)

    payment.refresh_from_db()
    assert payment.release_refused is False
    assert money_shown(Booking.objects.get(pk=payment.booking_id)).code == CustomerMoney.HELD


def test_a_void_refused_for_good_before_the_booking_is_decided_is_not_told_so(
    db, settings, django_capture_on_commit_callbacks
):
    # The lapse guard's void of a hold the partner may still confirm: the hold may yet be charged,
    # so "you will not be charged" is not ours to say; it is still held, as the customer is told.
    settings.PAYMENTS_LAPSE_MARGIN_S = 3600
    payment = refused_twice(settings, status=S.PENDING_PARTNER, lapses=timezone.now() + timedelta(minutes=30))

    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)

    payment.refresh_from_db()
    assert (payment.release_refused, payment.next_check_at) == (False, None)  # left to support all the same
    assert money_shown(Booking.objects.get(pk=payment.booking_id)).code == CustomerMoney.HELD


def test_the_hold_lapsing_at_the_provider_tells_it_ended_in_one_mail_more(
    db, settings, django_capture_on_commit_callbacks
):
    payment = refused_twice(settings)
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)
    lapsed = IntentTruth(
        intent_id=payment.provider_intent_id,
        currency="EUR",
        status="canceled",
        cancellation_reason="automatic",
    )

    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        booking = lock_booking(payment.booking_id)
        locked = lock_payment(booking)
        truth_apply(booking=booking, payment=locked, truth=lapsed, source="webhook", actor=Actor.SYSTEM)
        booking_follow(booking, locked, open_operation=None, actor=Actor.SYSTEM)

    payment.refresh_from_db()
    assert (payment.status, payment.release_refused) == (P.LAPSED, False)
    booking = Booking.objects.get(pk=payment.booking_id)
    # it ended at the provider: nobody released it, so not "We released"
    assert money_words(booking, money_shown(booking)) == LAPSED
    assert money_mails(booking) == ["release_refused", "lapsed"]


def test_a_release_left_to_support_before_this_was_kept_is_told_after_the_migration(
    db, settings, django_capture_on_commit_callbacks
):
    # As the code before left it: refused twice, left to support, the customer told "releasing".
    import importlib

    from django.apps import apps

    payment = refused_twice(settings)
    Payment.objects.filter(pk=payment.pk).update(next_check_at=None)
    # and a lapse guard's void refused for a booking still undecided: nothing to tell its customer
    undecided = refused_twice(settings, status=S.PENDING_PARTNER)
    Payment.objects.filter(pk=undecided.pk).update(next_check_at=None)
    migration = importlib.import_module("payments.migrations.0011_refused_releases_due_again")

    migration.refused_releases_due_again(apps, None)
    assert Payment.objects.get(pk=payment.pk).next_check_at is not None  # due: the sweeper runs it
    assert Payment.objects.get(pk=undecided.pk).next_check_at is None
    with django_capture_on_commit_callbacks(execute=True):
        payment_run(payment.booking_id)

    payment.refresh_from_db()
    assert (payment.release_refused, payment.next_check_at) == (True, None)
    booking = Booking.objects.get(pk=payment.booking_id)
    assert money_words(booking, money_shown(booking)) == TOLD


def test_payment_health_counts_every_hold_left_held_not_only_those_it_lists(db):
    from reconciliation.selectors import payment_health as health_of

    for _ in range(health_of.LIST_LIMIT + 1):
        paying_booking(status=S.CANCELLED, payment_status=P.AUTHORIZED, release_refused=True)

    health = health_of.payment_health(probe=False)

    assert (len(health.releases_refused), health.releases_refused_count) == (
        health_of.LIST_LIMIT,
        health_of.LIST_LIMIT + 1,
    )
    assert any(
        problem.startswith(f"{health_of.LIST_LIMIT + 1} hold(s) the provider refused")
        for problem in health.problems
    )
