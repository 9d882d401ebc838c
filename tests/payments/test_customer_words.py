"""What the customer is told about their money, fed by the payment: on the booking's page, in the
mails (each change's mail says the money as it stood then), and a mail of its own when the money
is the only news (charged, refunded, released)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from bookings import customer_view
from bookings.customer_view import PaymentFacts, money_of
from bookings.models import Actor, Notification, NotificationKind
from bookings.notifications import compose
from bookings.services import lock_booking
from bookings.states import BookingState
from tests.factories import BookingFactory

S = BookingState
PRICE = Decimal("360.00")


def told(state: str, charged: str = "0", refunded: str = "0") -> dict:
    facts = PaymentFacts(state, "EUR", PRICE, Decimal(charged), Decimal(refunded))
    return money_of(facts).as_json()


def test_the_booking_page_says_what_happened_to_the_money(db):
    booking = BookingFactory(status=S.CANCELLED, customer_money=told("charged", "360.00", "270.00"))
    client = Client()
    client.force_login(booking.customer)

    page = client.get(f"/bookings/{booking.reference}/").content.decode()

    assert "We charged 360.00 EUR and refunded 270.00 EUR of it to your card: you paid 90.00 EUR." in page


def test_a_booking_without_a_payment_says_nothing_of_money(db):
    booking = BookingFactory(status=S.CONFIRMED)
    client = Client()
    client.force_login(booking.customer)

    page = client.get(f"/bookings/{booking.reference}/").content.decode()

    assert "status-panel__money" not in page and "charged" not in page


def test_a_mail_says_the_money_as_it_stood_with_its_change(db):
    booking = BookingFactory(status=S.CONFIRMED, customer_money=told("held"))
    notification = Notification.objects.create(
        booking=booking,
        status_version=2,
        kind=NotificationKind.CONFIRMED,
        message="confirmed",
        money=told("held"),
    )

    mail = compose(notification)

    words = "We are holding 360.00 EUR on your card; you are not charged yet."
    assert words in mail.body and words in mail.alternatives[0][0]


@pytest.mark.parametrize(
    ("then", "now", "mailed"),
    [
        (told("held"), PaymentFacts("charged", "EUR", PRICE, PRICE), True),
        (told("charged", "360"), PaymentFacts("charged", "EUR", PRICE, PRICE, PRICE), True),  # refunded
        (told("held"), PaymentFacts("released", "EUR", PRICE), True),
        (told("authorizing"), PaymentFacts("held", "EUR", PRICE), False),  # not yet news of money
    ],
)
def test_money_that_is_the_only_news_is_mailed_once(
    db, django_capture_on_commit_callbacks, then, now, mailed
):
    booking = BookingFactory(status=S.CONFIRMED, customer_money=then)

    with django_capture_on_commit_callbacks():
        customer_view.refresh(lock_booking(booking.pk), actor=Actor.WORKER, payment=now)

    kinds = list(Notification.objects.filter(booking=booking).values_list("kind", flat=True))
    assert kinds == (["money"] if mailed else [])
    if mailed:
        mail = compose(Notification.objects.get(booking=booking))
        assert mail.subject == f"Your payment for booking {booking.reference}"
        assert money_of(now).text in mail.body


def test_money_news_the_customer_caused_is_not_mailed(db, django_capture_on_commit_callbacks):
    booking = BookingFactory(status=S.CONFIRMED, customer_money=told("held"))

    with django_capture_on_commit_callbacks():
        customer_view.refresh(
            lock_booking(booking.pk),
            actor=Actor.CUSTOMER,
            payment=PaymentFacts("charged", "EUR", PRICE, PRICE),
        )

    assert not Notification.objects.filter(booking=booking).exists()
