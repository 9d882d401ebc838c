"""Paying on the booking page: the quote's Book form takes the card (the sandbox provider's test
cards, where production puts the provider's card element), as the API's `payment_method`."""

from __future__ import annotations

import pytest
from django.test import Client

from bookings.models import Booking
from bookings.states import BookingState
from bookings.web.forms import TEST_CARDS
from payments.models import Payment, PaymentStatus
from sandbox.payment_ledger import TEST_CARDS as SANDBOX_CARDS
from tests.factories import OfferFactory, QuoteFactory, UserFactory
from tests.helpers import queued_messages

S = BookingState


@pytest.fixture
def customer(db):
    return UserFactory()


@pytest.fixture
def web(customer) -> Client:
    client = Client()
    client.force_login(customer)
    return client


@pytest.fixture
def quote(customer):
    return QuoteFactory(customer=customer, offer=OfferFactory())


def test_the_book_form_offers_the_test_cards(web, quote):
    page = web.get(f"/quotes/{quote.pk}/").content.decode()

    assert '<select name="payment_method"' in page
    assert 'value="pm_card_visa"' in page and "We ask your bank to hold the price" in page


def test_the_book_form_offers_a_test_card_for_each_thing_the_sandbox_s_cards_do(web, quote):
    # The field stands where production puts the provider's card element: it offers the sandbox's
    # test cards, one for each way they behave (aliases of a behaviour need not all be offered).
    page = web.get(f"/quotes/{quote.pk}/").content.decode()
    offered = [card for card, _ in TEST_CARDS if card]

    def does(card: str) -> tuple:
        known = SANDBOX_CARDS[card]
        return (known.decline_code, known.review, known.refund_failure, known.processing)

    assert set(offered) <= set(SANDBOX_CARDS)
    assert {does(card) for card in offered} == {does(card) for card in SANDBOX_CARDS}
    assert all(f'value="{card}"' in page for card in offered)
    assert "Test card Visa 5126: authorized; refunds to it fail later" in page


def test_a_booking_may_pay_with_the_card_whose_refunds_fail(web, quote, broker):
    response = web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_refundFail"})

    booking = Booking.objects.get()
    assert response["Location"] == f"/bookings/{booking.reference}/"
    assert Payment.objects.get(booking=booking).payment_method == "pm_card_refundFail"


def test_booking_with_a_card_awaits_its_payment_and_queues_its_run(
    web, quote, broker, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_visa"})

    booking = Booking.objects.get()
    assert response["Location"] == f"/bookings/{booking.reference}/"
    assert (booking.status, booking.customer_message) == (S.AWAITING_PAYMENT, "checking_payment")
    payment = Payment.objects.get(booking=booking)
    assert (payment.status, payment.amount, payment.payment_method) == (
        PaymentStatus.PENDING,
        quote.total_price,
        "pm_card_visa",
    )
    assert [m.args[0] for m in queued_messages(broker, "payments")] == [str(booking.pk)]
    assert queued_messages(broker, booking.partner.queue_name) == []  # not before the hold
    page = web.get(response["Location"]).content.decode()
    assert "We are asking your bank to hold" in page


def test_a_card_that_is_not_offered_is_refused_on_the_form(web, quote):
    response = web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_someone_elses"})

    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not Booking.objects.exists()


def test_a_quote_booked_with_one_card_is_not_booked_again_with_another(web, quote, broker):
    web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_visa", "idempotency_key": "tab-1"})

    again = web.post(
        f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_chargeDeclined", "idempotency_key": "tab-2"}
    )

    assert again.status_code == 422
    assert "This quote is booked already, with another payment method." in again.content.decode()
    assert Booking.objects.count() == Payment.objects.count() == 1
