"""Pricing and validation of a stay: the rules in bookings/pricing.py and services, and how the
API reports a broken rule (400, `validation_error`, the fields named, nothing written)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.utils import timezone

from bookings.models import Booking, BookingEvent, Quote
from bookings.pricing import (
    Stay,
    amount_text,
    confirmation_deadline,
    price_per_unit,
    price_stay,
    stay_dates,
    unit_count,
    validate_stay,
)
from config.errors import ValidationFailed
from tests.bookings.conftest import post_booking, stay_body, today
from tests.factories import OfferFactory, PartnerFactory, QuoteFactory

QUOTES_URL = "/api/v1/quotes"


def assert_nothing_written() -> None:
    assert Booking.objects.count() == 0
    assert BookingEvent.objects.count() == 0


# --- pricing --------------------------------------------------------------------------------
def test_the_price_is_nights_times_unit_price_plus_the_fee(db, settings):
    settings.BOOKING_SERVICE_FEE = "2.5"
    offer = OfferFactory(unit_price=Decimal("99.99"), currency="CHF")
    start = today() + timedelta(days=10)

    price = price_stay(Stay(offer=offer, start_date=start, end_date=start + timedelta(days=4), guests=1))

    assert (price.unit_price, price.nights, price.fee, price.total, price.currency) == (
        Decimal("99.99"),
        4,
        Decimal("2.50"),
        Decimal("402.46"),
        "CHF",
    )


def test_an_offer_priced_by_the_day_is_priced_by_the_days_of_the_stay_and_told_so(db, settings):
    settings.BOOKING_SERVICE_FEE = "0"
    tour = OfferFactory(unit_price=Decimal("45.00"), price_unit="day")
    start = today() + timedelta(days=10)

    # the same count as nights: the days from the start date to the end date, whatever the guests
    price = price_stay(Stay(offer=tour, start_date=start, end_date=start + timedelta(days=2), guests=5))

    assert (price.nights, price.total) == (2, Decimal("90.00"))
    assert price_per_unit(tour) == "45.00 EUR a day"
    assert (unit_count(1, tour.price_unit), unit_count(2, tour.price_unit)) == ("1 day", "2 days")
    too_long = Stay(offer=tour, start_date=start, end_date=start + timedelta(days=31), guests=1)
    with pytest.raises(ValidationFailed) as refused:
        validate_stay(too_long)
    assert refused.value.fields == {"end_date": ["A booking may cover at most 30 days."]}


@pytest.mark.parametrize(
    ("amount", "currency", "told"),
    [
        ("15000.00", "JPY", "15000 JPY"),  # the ledger's cents of a whole-yen amount: not said
        ("0.00", "JPY", "0 JPY"),
        ("1E+4", "KRW", "10000 KRW"),
        ("360.00", "EUR", "360.00 EUR"),
        ("360", "EUR", "360.00 EUR"),
        ("12.50", "KWD", "12.500 KWD"),  # the dinar's thousandths
        ("1.005", "KWD", "1.005 KWD"),
        # finer than the currency's unit (a yen price with a fee of 2.50): the real cents, kept
        ("15002.50", "JPY", "15002.50 JPY"),
        ("15002.5", "JPY", "15002.50 JPY"),
        ("0.001", "EUR", "0.001 EUR"),
    ],
)
def test_an_amount_is_told_with_its_currencys_decimals_and_never_rounded(amount, currency, told):
    """Reviewer: every amount told to a customer was written to two decimals: "We charged
    15000.00 JPY", and a dinar amount with two of its three."""
    assert amount_text(Decimal(amount), currency) == told


def test_a_yen_offers_price_is_told_in_whole_yen(db):
    offer = OfferFactory(unit_price=Decimal("15000.00"), currency="JPY")

    assert price_per_unit(offer) == "15000 JPY a night"


def test_the_deadline_is_the_confirmation_window_when_the_stay_is_far(settings):
    settings.BOOKING_CONFIRMATION_WINDOW = timedelta(minutes=30)
    now = datetime(2031, 5, 10, 9, 0, tzinfo=UTC)

    deadline = confirmation_deadline(start_date=now.date() + timedelta(days=20), now=now)

    assert deadline == datetime(2031, 5, 10, 9, 30, tzinfo=UTC)


def test_the_deadline_comes_before_the_start_when_the_stay_is_near(settings):
    settings.BOOKING_CONFIRMATION_WINDOW = timedelta(hours=12)
    settings.BOOKING_MIN_LEAD_TIME = timedelta(hours=6)
    now = datetime(2031, 5, 10, 9, 0, tzinfo=UTC)

    deadline = confirmation_deadline(start_date=now.date() + timedelta(days=1), now=now)

    assert deadline == datetime(2031, 5, 10, 18, 0, tzinfo=UTC)


def test_validate_stay_names_every_broken_rule_at_once(db):
    offer = OfferFactory(is_active=False, capacity=2, partner=PartnerFactory(enabled=False))
    start = today()

    with pytest.raises(ValidationFailed) as error:
        validate_stay(Stay(offer=offer, start_date=start, end_date=start, guests=3))

    assert error.value.fields == {
        "offer": [
            "This offer is no longer available.",
            "This offer's partner is not taking bookings right now.",
        ],
        "start_date": ["The start date must be in the future."],
        "end_date": ["The end date must be after the start date."],
        "guests": ["This offer takes at most 2 guests."],
    }


# --- the API's answers ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        pytest.param(
            {"start_date": -1, "end_date": 2},
            {"start_date": ["The start date must be in the future."]},
            id="start-in-the-past",
        ),
        pytest.param(
            {"start_date": 0, "end_date": 2},
            {"start_date": ["The start date must be in the future."]},
            id="start-today",
        ),
        pytest.param(
            {"start_date": 10, "end_date": 10},
            {"end_date": ["The end date must be after the start date."]},
            id="end-on-start",
        ),
        pytest.param(
            {"start_date": 10, "end_date": 9},
            {"end_date": ["The end date must be after the start date."]},
            id="end-before-start",
        ),
        pytest.param(
            {"start_date": 10, "end_date": 41},
            {"end_date": ["A booking may cover at most 30 nights."]},
            id="too-many-nights",
        ),
        pytest.param(
            {"guests": 5},
            {"guests": ["This offer takes at most 4 guests."]},
            id="over-capacity",
        ),
        pytest.param(
            {"guests": 0},
            {"guests": ["At least one guest is required."]},
            id="no-guests",
        ),
    ],
)
@pytest.mark.parametrize("url", ["/api/v1/bookings", QUOTES_URL])
def test_an_invalid_stay_is_a_400_naming_the_fields(api_client, offer, url, overrides, fields):
    # given a stay breaking one rule (dates given as days from today)
    body = stay_body(offer)
    for name, value in overrides.items():
        body[name] = (today() + timedelta(days=value)).isoformat() if "date" in name else value

    # when it is quoted or booked
    response = api_client.post(url, body, format="json", headers={"Idempotency-Key": "k"})

    # then it is refused with the fields named, and nothing is written
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request is invalid.",
            "fields": fields,
        }
    }
    assert_nothing_written()
    assert Quote.objects.count() == 0


@pytest.mark.parametrize(
    ("offer_kwargs", "message"),
    [
        ({"is_active": False}, "This offer is no longer available."),
        (
            {"partner__enabled": False},
            "This offer's partner is not taking bookings right now.",
        ),
    ],
    ids=["inactive-offer", "disabled-partner"],
)
def test_an_offer_that_cannot_be_booked_is_a_400(api_client, db, offer_kwargs, message):
    offer = OfferFactory(**offer_kwargs)

    response = post_booking(api_client, stay_body(offer))
    quote = api_client.post(QUOTES_URL, stay_body(offer), format="json")

    assert response.status_code == quote.status_code == 400
    assert response.json()["error"]["fields"] == {"offer": [message]}
    assert quote.json()["error"]["fields"] == {"offer": [message]}
    assert_nothing_written()
    assert Quote.objects.count() == 0


def test_a_stay_too_close_to_its_start_is_a_400(api_client, offer, settings):
    # given it is 20:00 UTC and bookings close 6 hours before the (UTC) start day
    settings.BOOKING_MIN_LEAD_TIME = timedelta(hours=6)
    with time_machine.travel(datetime(2031, 5, 10, 20, 0, tzinfo=UTC), tick=False):
        # when a stay starting tomorrow is booked
        response = post_booking(api_client, stay_body(offer, start_date="2031-05-11", end_date="2031-05-13"))

    # then it is too close to the start
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "start_date": ["Too close to the start: bookings close 6 hours before the start date."]
    }
    assert_nothing_written()


def test_a_stay_starting_tomorrow_is_accepted_early_in_the_day(api_client, offer, settings):
    settings.BOOKING_CONFIRMATION_WINDOW = timedelta(hours=12)
    settings.BOOKING_MIN_LEAD_TIME = timedelta(hours=6)
    with time_machine.travel(datetime(2031, 5, 10, 8, 0, tzinfo=UTC), tick=False):
        response = post_booking(api_client, stay_body(offer, start_date="2031-05-11", end_date="2031-05-13"))

    assert response.status_code == 202
    # resolved by 18:00, six hours before the start, though the window would allow 20:00
    assert response.json()["deadline"] == "2031-05-10T18:00:00Z"


# --- quotes -----------------------------------------------------------------------------------
def test_an_expired_quote_is_a_400(api_client, customer, offer):
    quote = QuoteFactory(customer=customer, offer=offer, expires_at=timezone.now() - timedelta(seconds=1))

    response = post_booking(api_client, stay_body(offer, quote=str(quote.pk)))

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The quote has expired.",
            "fields": {"quote": ["This quote has expired."]},
        }
    }
    assert_nothing_written()


@pytest.mark.parametrize("whose", ["another-customer", "nobody"])
def test_a_quote_that_is_not_mine_is_a_400(api_client, offer, whose):
    quote_id = (
        str(QuoteFactory(offer=offer).pk)
        if whose == "another-customer"
        else "00000000-0000-4000-8000-000000000000"
    )

    response = post_booking(api_client, stay_body(offer, quote=quote_id))

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "Unknown quote.",
            "fields": {"quote": ["No such quote."]},
        }
    }
    assert_nothing_written()


def test_a_quote_for_another_stay_is_a_400_naming_what_differs(api_client, customer, offer):
    quote = QuoteFactory(customer=customer, offer=offer)
    other_offer = OfferFactory(partner=offer.partner)
    body = stay_body(
        other_offer,
        end_date=(today() + timedelta(days=34)).isoformat(),
        guests=3,
        quote=str(quote.pk),
    )

    response = post_booking(api_client, body)

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The quote does not match this booking.",
            "fields": {
                "offer": ["Differs from the quote."],
                "end_date": ["Differs from the quote."],
                "guests": ["Differs from the quote."],
            },
        }
    }
    assert_nothing_written()


def test_a_refused_request_does_not_use_up_its_idempotency_key(api_client, offer):
    # given a request refused for a broken rule
    refused = post_booking(api_client, stay_body(offer, guests=9), key="fix-and-retry")

    # when it is corrected and sent with the same key
    accepted = post_booking(api_client, stay_body(offer), key="fix-and-retry")

    # then the key was not spent on the refused request
    assert refused.status_code == 400
    assert accepted.status_code == 202
    assert Booking.objects.count() == 1


@pytest.mark.parametrize(
    ("unit", "start", "end", "said"),
    [
        ("day", (2027, 4, 1), (2027, 4, 2), "1 April 2027 (1 day)"),
        ("day", (2027, 4, 1), (2027, 4, 4), "1 to 3 April 2027 (3 days)"),
        ("day", (2027, 4, 1), (2027, 4, 3), "1 to 2 April 2027 (2 days)"),
        ("day", (2027, 4, 30), (2027, 5, 3), "30 April to 2 May 2027 (3 days)"),
        ("day", (2027, 4, 30), (2027, 5, 1), "30 April 2027 (1 day)"),  # ends on the 1st: one day
        ("day", (2027, 12, 31), (2028, 1, 2), "31 December 2027 to 1 January 2028 (2 days)"),
        ("day", (2027, 12, 31), (2028, 1, 1), "31 December 2027 (1 day)"),
        ("night", (2027, 4, 1), (2027, 4, 2), "1 April 2027 to 2 April 2027 (1 night)"),
        ("night", (2027, 4, 1), (2027, 4, 3), "1 April 2027 to 3 April 2027 (2 nights)"),
        ("night", (2027, 4, 30), (2027, 5, 2), "30 April 2027 to 2 May 2027 (2 nights)"),
        ("night", (2027, 12, 31), (2028, 1, 1), "31 December 2027 to 1 January 2028 (1 night)"),
    ],
)
def test_a_stays_dates_are_told_in_its_offers_unit_a_day_offers_as_its_days(unit, start, end, said):
    """Tester: a one-day tour on 1 April 2027 read "1 April 2027 to 2 April 2027", two days."""
    assert stay_dates(date(*start), date(*end), unit) == said
