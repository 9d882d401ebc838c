"""Which codes are currencies (bookings.currencies): ISO 4217's active codes with a minor unit, in
capitals; refused wherever an offer's currency is entered (the admin here; partner_upsert in
tests/partners/test_partner_upsert.py)."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django.urls import reverse

from bookings.models import Offer
from tests.factories import PartnerFactory, UserFactory


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "KWD", "XOF", "XAF", "XCG", "CHF"])
def test_an_active_iso_4217_currency_is_a_currency(code):
    from bookings.currencies import currency_error

    assert currency_error(code) is None


@pytest.mark.parametrize(
    "code",
    [
        "XXX",  # "no currency"
        "XTS",  # reserved for testing
        "XAU",  # gold
        "XDR",  # a unit of account
        "ABC",  # never listed
        "HRK",  # withdrawn (the euro since 2023)
        "eur",  # ISO writes capitals
        "EURO",
        "",
        None,
        978,
    ],
)
def test_anything_else_is_refused_with_the_code_named(code):
    from bookings.currencies import currency_error

    assert currency_error(code) == (
        f"{code!r} is not an ISO 4217 currency code (three capitals, such as EUR, USD or JPY)."
    )


def test_a_pasted_blob_is_named_cut_short():
    from bookings.currencies import currency_error

    assert currency_error("X" * 5000).startswith("'XXXXXXXXXXXX...' is not an ISO 4217")


@pytest.fixture
def admin_client(db) -> Client:
    client = Client()
    client.force_login(UserFactory(username=f"root-{uuid.uuid4().hex[:6]}", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(("currency", "saved"), [("XXX", False), ("ABC", False), ("JPY", True)])
def test_the_offer_admin_refuses_a_code_that_is_not_a_currency(admin_client, currency, saved):
    partner = PartnerFactory()

    response = admin_client.post(
        reverse("admin:bookings_offer_add"),
        {
            "partner": partner.pk,
            "product_id": "room-1",
            "name": "",
            "unit_price": "12000",
            "price_unit": "night",
            "currency": currency,
            "capacity": "2",
            "free_cancellation_hours": "24",
            "cancellation_fee_percent": "0",
            "is_active": "on",
        },
    )

    assert Offer.objects.filter(product_id="room-1").exists() is saved
    if not saved:
        assert response.status_code == 200
        errors = response.context["adminform"].form.errors
        assert errors == {
            "currency": [
                f"'{currency}' is not an ISO 4217 currency code (three capitals, such as EUR, USD or JPY)."
            ]
        }


@pytest.mark.parametrize("fee", ["150", "-1"])
def test_the_offer_admin_says_a_fee_out_of_range_on_its_field_not_by_the_constraint_s_name(admin_client, fee):
    """Exploratory use: a fee of 150 % was refused at the top of the form as 'Constraint
    "offer_cancellation_fee_a_share" is violated.'"""
    response = admin_client.post(
        reverse("admin:bookings_offer_add"),
        {
            "partner": PartnerFactory().pk,
            "product_id": "room-2",
            "name": "",
            "unit_price": "120",
            "price_unit": "night",
            "currency": "EUR",
            "capacity": "2",
            "free_cancellation_hours": "24",
            "cancellation_fee_percent": fee,
            "is_active": "on",
        },
    )

    assert response.status_code == 200 and not Offer.objects.filter(product_id="room-2").exists()
    assert response.context["adminform"].form.errors == {
        "cancellation_fee_percent": ["The cancellation fee is a share of the price: 0 to 100 percent."]
    }
