"""How a customer pays: `POST /api/v1/bookings` with a `payment_method`, and what the API then
tells them about their money (`money`), as the provider's truth moves it. Against a real
provider, partner and worker."""

from __future__ import annotations

import pytest

from bookings.models import Booking
from payments.models import Payment
from tests.factories import OfferFactory
from tests.helpers import wait_until
from tests.payments.conftest import book_through_api, money_code

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def shown(api_client, reference: str) -> dict:
    return api_client.get(f"/api/v1/bookings/{reference}").json()


def test_a_customer_pays_with_a_card_and_is_told_what_happened_to_their_money(paying, api_client):
    offer = paying.h.partner.offers.get()

    response = book_through_api(api_client, offer, payment_method="pm_card_visa")

    assert response.status_code == 202
    first = response.json()
    assert (first["status"], first["message_code"]) == ("pending", "checking_payment")
    assert first["money"] == {
        "code": "authorizing",
        "message": "We are asking your bank to hold 360.00 EUR; you are not charged yet.",
        "currency": "EUR",
        "amount": "360.00",
        "charging": None,
        "charged": "0.00",
        "refunded": "0.00",
        "refund_failed": "0.00",
        "refunded_outside": "0.00",
        "lapses_at": None,
    }
    booking = Booking.objects.get(reference=first["reference"])
    wait_until(lambda: money_code(booking) == "charged", what="the charge", timeout_s=20)
    last = shown(api_client, first["reference"])
    assert (last["status"], last["money"]["code"]) == ("confirmed", "charged")
    assert last["money"]["message"] == "We charged 360.00 EUR to your card."
    assert last["status_version"] > first["status_version"]


def test_a_declined_card_is_told_as_declined_and_nothing_is_booked(paying, api_client):
    offer = paying.h.partner.offers.get()

    reference = book_through_api(
        api_client, offer, payment_method="pm_card_chargeDeclinedInsufficientFunds"
    ).json()["reference"]

    booking = Booking.objects.get(reference=reference)
    wait_until(lambda: money_code(booking) == "declined", what="the decline", timeout_s=20)
    last = shown(api_client, reference)
    assert (last["status"], last["message_code"]) == ("failed", "payment_declined")
    assert last["money"]["message"] == "Your bank declined the payment of 360.00 EUR: you were not charged."


@pytest.mark.parametrize("method", ["", "visa", "pm_", "pm_card visa", "pm_" + "x" * 300])
def test_a_payment_method_that_is_no_providers_id_is_a_400(db, api_client, method):
    response = book_through_api(api_client, OfferFactory(), payment_method=method)

    assert response.status_code == 400
    assert "payment_method" in response.json()["error"]["fields"]
    assert Booking.objects.count() == 0


def test_a_booking_without_a_payment_method_takes_no_payment(
    db, api_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        response = book_through_api(api_client, OfferFactory())

    assert (response.status_code, response.json()["money"], response.json()["message_code"]) == (
        202,
        None,
        "received",
    )
    assert (Booking.objects.get().status, Payment.objects.count()) == ("requested", 0)
