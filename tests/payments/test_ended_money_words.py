"""A booking that does not go ahead owes nothing, so whatever is held or asked for on the card is
let go at once (`payments.decisions.owed`): its page, API and mails say so beside the money's own
words, whose "you are not charged yet" alone would leave a charge to come
(`bookings.cancelling.not_going_ahead_words`). And when the bank's answer comes after the booking
ended (it expired while the bank was asked), that answer is mailed: it is the customer's last word
of their money."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import Client

from bookings import customer_view
from bookings.cancelling import money_words
from bookings.customer_money import Money, PaymentFacts, money_of
from bookings.models import Actor, Notification, NotificationKind
from bookings.notifications import compose
from bookings.services import lock_booking
from bookings.states import BookingState, CustomerMessage
from tests.factories import BookingFactory

S = BookingState
PRICE = Decimal("360.00")
HELD = "We are holding 360.00 EUR on your card; you are not charged yet."
RELEASING = "As your booking is not going ahead, we are releasing the hold: you will not be charged."


def told(state: str) -> dict:
    return money_of(PaymentFacts(state, "EUR", PRICE)).as_json()


def words(booking) -> str:
    return money_words(booking, Money.from_json(booking.customer_money))


@pytest.mark.parametrize("state", [S.REJECTED, S.FAILED, S.EXPIRED])
def test_a_hold_of_a_booking_that_did_not_go_ahead_is_said_to_be_released(db, state):
    booking = BookingFactory(status=state, customer_money=told("held"))

    assert words(booking) == f"{HELD} {RELEASING}"


@pytest.mark.parametrize("state", [S.NEEDS_ATTENTION, S.EXPIRED])
def test_a_hold_of_a_booking_confirmed_first_is_never_said_not_to_be_charged(db, state):
    # the partner took it back after confirming it: the confirmation's capture may be out, and
    # the hold charged (then refunded): "you will not be charged" may be untrue
    booking = BookingFactory(
        status=state,
        confirmed_shown_at=datetime(2030, 1, 1, tzinfo=UTC),
        customer_status="disrupted",
        customer_message=CustomerMessage.DISRUPTED_PARTNER_CANCELLED,
        customer_money=told("held"),
    )

    assert words(booking) == HELD


def test_a_hold_still_asked_for_is_said_to_be_let_go_whatever_the_bank_answers(db):
    booking = BookingFactory(status=S.EXPIRED, customer_money=told("authorizing"))

    assert words(booking) == (
        "We are asking your bank to hold 360.00 EUR; you are not charged yet. As your booking is not "
        "going ahead, any hold of 360.00 EUR is released, whatever your bank answers."
    )


@pytest.mark.parametrize("state", [S.CONFIRMED, S.PENDING_PARTNER, S.NEEDS_ATTENTION])
def test_a_hold_of_a_booking_still_going_ahead_says_only_what_is_held(db, state):
    booking = BookingFactory(status=state, customer_money=told("held"))

    assert words(booking) == HELD


def test_the_mail_of_a_rejected_booking_and_its_page_say_the_hold_is_released(
    db, django_capture_on_commit_callbacks
):
    # given a booking whose money is held and that the partner then rejects
    booking = BookingFactory(status=S.PENDING_PARTNER, customer_money=told("held"))
    type(booking).objects.filter(pk=booking.pk).update(status=S.REJECTED)  # the partner's answer
    booking = lock_booking(booking.pk)

    with django_capture_on_commit_callbacks():
        customer_view.refresh(booking, actor=Actor.WORKER)

    mail = compose(Notification.objects.get(booking=booking))
    assert mail.subject == f"Your booking {booking.reference} could not be confirmed"
    for text in (mail.body, mail.alternatives[0].content):
        assert f"{HELD} {RELEASING}" in text
    client = Client()
    client.force_login(booking.customer)
    page = client.get(f"/bookings/{booking.reference}/").content.decode()
    assert RELEASING in page
    assert (
        client.get(f"/api/v1/bookings/{booking.reference}").json()["money"]["message"]
        == f"{HELD} {RELEASING}"
    )


@pytest.mark.parametrize(
    ("now", "said"),
    [
        (
            PaymentFacts("declined", "EUR", PRICE),
            "Your bank declined the payment of 360.00 EUR: you were not charged.",
        ),
        (PaymentFacts("not_charged", "EUR", PRICE), "You were not charged."),
    ],
)
def test_the_banks_answer_after_the_booking_expired_is_mailed_once(
    db, django_capture_on_commit_callbacks, now, said
):
    # given a booking that expired while its bank was asked for the hold (told so by mail)
    booking = BookingFactory(
        status=S.EXPIRED,
        customer_message=CustomerMessage.PAYMENT_NOT_CONFIRMED_IN_TIME,
        customer_money=told("authorizing"),
    )

    # when the answer comes
    with django_capture_on_commit_callbacks():
        customer_view.refresh(lock_booking(booking.pk), actor=Actor.WORKER, payment=now)
        customer_view.refresh(lock_booking(booking.pk), actor=Actor.WORKER, payment=now)  # again: no news

    # then it is mailed, once
    notifications = Notification.objects.filter(booking=booking)
    assert list(notifications.values_list("kind", flat=True)) == [NotificationKind.MONEY]
    assert said in compose(notifications.get()).body
