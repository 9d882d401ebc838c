"""Offers and quotes in the customer web client: what can be booked, choosing dates and guests,
and the errors, beside each field and in the summary, in the API's words."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from bookings.models import Quote
from bookings.pricing import stay_dates
from tests.factories import OfferFactory, PartnerFactory, QuoteFactory, TokenFactory
from tests.helpers import unique_code


def stay(**overrides) -> dict[str, str]:
    start = timezone.now().date() + timedelta(days=30)
    data = {
        "start_date": start.isoformat(),
        "end_date": (start + timedelta(days=3)).isoformat(),
        "guests": "2",
    }
    data.update(overrides)
    return data


def field_errors(response) -> dict[str, list[str]]:
    form = response.context["form"]
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


def api_field_errors(customer, offer, data: dict[str, str]) -> dict[str, list[str]]:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {TokenFactory(user=customer).key}")
    # A field left empty in a web form is one the API body leaves out; a number typed in the form
    # is a JSON number in the API's body.
    body = {
        "offer": offer.pk,
        **{
            name: int(value) if value.isascii() and value.isdigit() else value
            for name, value in data.items()
            if value
        },
    }
    response = client.post("/api/v1/quotes", body, format="json")
    assert response.status_code == 400, response.json()
    return response.json()["error"]["fields"]


# --- offers -------------------------------------------------------------------------------------
def test_anyone_sees_the_bookable_offers_on_the_home_page(client, offer):
    # given an offer of a disabled partner and an inactive offer beside the bookable one
    withdrawn = OfferFactory(partner=offer.partner, is_active=False)
    paused = OfferFactory(partner=PartnerFactory(code=unique_code("web"), enabled=False))

    # when someone who is not logged in opens the site
    response = client.get("/")

    # then only the bookable offer is listed, with its price per night and capacity
    assert response.status_code == 200
    assert [o.pk for o in response.context["page"].object_list] == [offer.pk]
    page = response.content.decode()
    assert f"/offers/{offer.pk}/" in page and "120.00 EUR a night" in page and "Up to 4" in page
    assert f"/offers/{withdrawn.pk}/" not in page and f"/offers/{paused.pk}/" not in page


def tour_offer(**fields):
    return OfferFactory(
        partner=PartnerFactory(code=unique_code("web")),
        product_id="tour-7-city",
        name="Tour 7, city tour",
        price_unit="day",
        unit_price=Decimal("45.00"),
        **fields,
    )


def day_stay(**overrides) -> dict[str, str]:
    """The day offer's form: its first day and how many days."""
    data = {
        "start_date": (timezone.now().date() + timedelta(days=30)).isoformat(),
        "days": "3",
        "guests": "2",
    }
    data.update(overrides)
    return data


def said_as_days(start, days: int) -> str:
    """How the pages say `days` days from `start` (pricing.stay_dates's own table is its test)."""
    return stay_dates(start, start + timedelta(days=days), "day")


def test_a_tour_is_priced_by_the_day_wherever_its_price_or_length_is_told(client, web, api_client, customer):
    """Tester: a tour (an offer that is not a stay) was priced "a night"."""
    tour = tour_offer()

    # the offers and the dates page say its price per day, and ask for its first day and its days
    assert "45.00 EUR a day" in client.get("/").content.decode()
    dates = web.get(f"/offers/{tour.pk}/").content.decode()
    assert "45.00 EUR a day." in dates and "a night" not in dates
    assert "First day" in dates and "Number of days" in dates and 'name="end_date"' not in dates

    # its quote, its booking and the list of bookings say its days, never nights
    web.post(f"/offers/{tour.pk}/", day_stay())
    quote = Quote.objects.get()
    told = said_as_days(quote.start_date, 3)
    assert told.endswith("(3 days)") and " to " in told
    assert f"<dt>Dates</dt><dd>{told}</dd>" in web.get(f"/quotes/{quote.pk}/").content.decode()
    web.post(f"/quotes/{quote.pk}/book/")
    booking = quote.offer.bookings.get()
    assert f"<dd>{told}</dd>" in web.get(f"/bookings/{booking.reference}/").content.decode()
    assert f"<dd>{told}</dd>" in web.get("/bookings/").content.decode()

    # and the API names the unit: on the offer, and on the offer its quotes and bookings refer to
    offers = api_client.get("/api/v1/offers").json()["results"]
    assert [(o["product_id"], o["unit_price"], o["price_unit"]) for o in offers] == [
        ("tour-7-city", "45.00", "day")
    ]
    told_api = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (told_api["offer"]["price_unit"], told_api["nights"], told_api["units"]) == ("day", 3, 3)


def test_a_one_day_tour_is_one_day_from_its_form_to_its_pages(web, customer):
    """Tester: a one-day tour on 1 April had to be booked from 1 to 2 April, and read so."""
    tour = tour_offer()
    first = timezone.now().date() + timedelta(days=30)

    response = web.post(f"/offers/{tour.pk}/", day_stay(start_date=first.isoformat(), days="1"))

    # stored as every stay is, and sent so to the partner: the end date is the day after
    quote = Quote.objects.get()
    assert response.status_code == 302
    assert (quote.start_date, quote.end_date) == (first, first + timedelta(days=1))
    assert quote.total_price == Decimal("45.00") + service_fee()
    # and told as the one day it is
    one_day = f"{first.day} {first:%B} {first.year} (1 day)"
    page = web.get(f"/quotes/{quote.pk}/").content.decode()
    assert f"<dt>Dates</dt><dd>{one_day}</dd>" in page and "Duration" not in page
    web.post(f"/quotes/{quote.pk}/book/")
    booking = tour.bookings.get()
    assert booking.end_date == first + timedelta(days=1)
    assert f"<dd>{one_day}</dd>" in web.get(f"/bookings/{booking.reference}/").content.decode()


def service_fee() -> Decimal:
    return Decimal(settings.BOOKING_SERVICE_FEE).quantize(Decimal("0.01"))


@pytest.mark.parametrize(
    ("days", "said"),
    [
        ("", "This field is required."),
        ("0", "A booking covers at least 1 day."),
        ("-1", "A booking covers at least 1 day."),
        ("1.5", "A valid integer is required."),
        ("100000000", "A booking may cover at most"),
    ],
)
def test_a_tour_refuses_its_days_beside_the_field_and_in_the_summary(web, customer, days, said):
    tour = tour_offer()

    response = web.post(f"/offers/{tour.pk}/", day_stay(days=days))

    assert response.status_code == 400
    assert list(field_errors(response)) == ["days"]
    assert field_errors(response)["days"][0].startswith(said)
    page = response.content.decode()
    assert f"Number of days: {field_errors(response)['days'][0]}" in page  # the summary's link
    assert not Quote.objects.exists()


def test_a_tour_longer_than_a_booking_may_cover_is_told_beside_its_days(web, customer, settings):
    """The service's rule on the stay's end date is told on the day form's days, in days."""
    tour = tour_offer()

    response = web.post(f"/offers/{tour.pk}/", day_stay(days=str(settings.BOOKING_MAX_NIGHTS + 1)))

    assert field_errors(response) == {
        "days": [f"A booking may cover at most {settings.BOOKING_MAX_NIGHTS} days."]
    }


@pytest.mark.parametrize("days", ["1", "2"])
def test_a_tour_whose_last_day_is_past_the_calendar_is_told_beside_its_first_day(
    web, customer, settings, days
):
    """Explorer: 9999-12-31 and 1 day answered the server error page: its end, the day after,
    is no date at all."""
    tour = tour_offer()

    response = web.post(f"/offers/{tour.pk}/", day_stay(start_date="9999-12-31", days=days))

    assert response.status_code == 400
    assert field_errors(response) == {
        "start_date": [f"Bookings open at most {settings.BOOKING_MAX_ADVANCE_DAYS} days ahead."]
    }
    assert not Quote.objects.exists()


def test_the_api_refuses_a_stay_at_the_calendar_s_end_in_its_fields(api_client, db):
    tour = tour_offer()
    body = {"offer": tour.pk, "start_date": "9999-12-31", "end_date": "9999-12-31", "guests": 2}

    for url in ("/api/v1/quotes", "/api/v1/bookings"):
        response = api_client.post(url, body, format="json", headers={"Idempotency-Key": "end-of-time"})

        assert response.status_code == 400, (url, response.content)
        assert set(response.json()["error"]["fields"]) == {"start_date", "end_date"}


def test_a_room_is_priced_by_the_night(web, quote):
    page = web.get(f"/quotes/{quote.pk}/").content.decode()

    start, end = (f"{day.day} {day:%B} {day.year}" for day in (quote.start_date, quote.end_date))
    assert f"<dt>Dates</dt><dd>{start} to {end} (3 nights)</dd>" in page


def test_a_rooms_form_still_asks_for_the_day_you_leave(web, offer):
    page = web.get(f"/offers/{offer.pk}/").content.decode()

    assert "Start date" in page and "End date" in page and "The day you leave" in page
    assert 'name="days"' not in page


def test_choosing_dates_needs_an_account(client, offer):
    response = client.get(f"/offers/{offer.pk}/")

    assert response.status_code == 302
    assert response["Location"] == f"/account/login/?next=/offers/{offer.pk}/"


def test_an_offer_that_cannot_be_booked_is_not_found(web, offer):
    withdrawn = OfferFactory(partner=offer.partner, is_active=False)

    assert web.get(f"/offers/{withdrawn.pk}/").status_code == 404
    assert web.get("/offers/999999999/").status_code == 404


# --- quotes -------------------------------------------------------------------------------------
def test_a_stay_is_priced_in_a_quote_locked_for_the_customer(web, customer, offer):
    # when the customer chooses three nights for two
    response = web.post(f"/offers/{offer.pk}/", stay())

    # then a quote holds the price, and the customer is sent to it
    quote = Quote.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/quotes/{quote.pk}/"
    assert (quote.customer, quote.offer, quote.guests) == (customer, offer, 2)
    assert quote.total_price == Decimal("360.00")
    assert quote.expires_at > timezone.now()


def test_the_quote_page_shows_the_price_and_until_when_it_holds(web, quote):
    response = web.get(f"/quotes/{quote.pk}/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "300.00 EUR" in page
    assert f'datetime="{quote.expires_at.isoformat()}"' in page
    assert f'action="/quotes/{quote.pk}/book/"' in page
    assert response["Cache-Control"].startswith("max-age=0")


def test_the_quote_page_says_what_cancelling_costs_for_the_stay_before_book(web, customer, offer):
    # given an offer free to cancel until 48 hours before the start, then a quarter of the price
    type(offer).objects.filter(pk=offer.pk).update(free_cancellation_hours=48, cancellation_fee_percent=25)
    offer.refresh_from_db()  # the quote keeps the offer's terms as they are when it is made
    quote = QuoteFactory(customer=customer, offer=offer, total_price=Decimal("360.00"))
    cut_off = datetime.combine(quote.start_date, time.min, tzinfo=UTC) - timedelta(hours=48)

    page = web.get(f"/quotes/{quote.pk}/").content.decode()

    # then, before Book, it says until when cancelling is free for these dates, and the fee after
    policy = (
        f"Cancelling is free until {cut_off.day} {cut_off:%b %Y}, 00:00 UTC (48 hours before the start); "
        "from then on the fee is 25% of the price, 90.00 EUR. A fee is only ever taken from the card "
        "you book with, and only once the partner has confirmed your booking: until then, cancelling "
        "is free."
    )
    assert f'<p class="cancel-policy" data-cancel-policy>{policy}</p>' in page
    assert page.index("data-cancel-policy") < page.index('id="book"')


def test_an_offer_without_a_fee_says_cancelling_is_free_before_book(web, quote):
    page = web.get(f"/quotes/{quote.pk}/").content.decode()

    assert '<p class="cancel-policy" data-cancel-policy>Cancelling this booking is free.</p>' in page


def test_the_offers_and_the_dates_page_state_the_policy_before_any_dates(client, web, offer):
    type(offer).objects.filter(pk=offer.pk).update(free_cancellation_hours=48, cancellation_fee_percent=25)
    rule = "Cancelling is free until 48 hours before the start; from then on the fee is 25% of the price."

    assert rule in client.get("/").content.decode()
    assert rule in web.get(f"/offers/{offer.pk}/").content.decode()


def test_another_customers_quote_is_not_found(web, other_customer, offer):

    theirs = QuoteFactory(customer=other_customer, offer=offer)

    assert web.get(f"/quotes/{theirs.pk}/").status_code == 404
    assert web.post(f"/quotes/{theirs.pk}/book/").status_code == 404


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(stay(start_date="2020-01-01", end_date="2020-01-01", guests="9"), id="rules"),
        pytest.param(stay(start_date="01/03/2027", guests="two"), id="unparseable"),
        pytest.param(stay(start_date="2027-02-30", end_date="2027-13-01"), id="not-in-the-calendar"),
        pytest.param(stay(start_date="20270301", end_date="2027-W09-1"), id="iso-8601-not-yyyy-mm-dd"),
        pytest.param({"start_date": "", "end_date": "", "guests": ""}, id="missing"),
    ],
)
def test_refused_stays_say_what_the_api_says_beside_each_field(web, customer, offer, data):
    # when the customer submits a stay the booking rules (or the parser) refuse
    response = web.post(f"/offers/{offer.pk}/", data)

    # then nothing is quoted, and each field carries the API's words for it
    assert response.status_code == 400
    assert Quote.objects.count() == 0
    errors = field_errors(response)
    assert errors == api_field_errors(customer, offer, data)
    page = response.content.decode()
    assert "<title>Error: When and for how many?" in page
    assert 'class="error-summary"' in page
    for name, messages in errors.items():
        label = response.context["form"][name].label
        for message in messages:
            assert f'<a href="#id_{name}">{label}: {message}</a>' in page  # in the summary, linked
        assert f'id="id_{name}_error"' in page
        assert f'aria-describedby="id_{name}_helptext id_{name}_error"' in page  # read with the field


@pytest.mark.parametrize("typed", ["\u0661", "\uff12", "1.0", "+2", "1_0", "2e0"])
def test_guests_are_typed_in_the_digits_0_to_9_alone(web, offer, typed):
    # Django's IntegerField reads with Python's int(): other scripts' digits, `+2`, `1_0` (ten) and
    # `1.0` were taken; the API takes a JSON integer, whose digits are 0-9.
    response = web.post(f"/offers/{offer.pk}/", stay(guests=typed))

    assert response.status_code == 400
    assert field_errors(response) == {"guests": ["A valid integer is required."]}
    assert Quote.objects.count() == 0


@pytest.mark.parametrize(("typed", "guests"), [(" 2 ", 2), ("02", 2)])
def test_guests_typed_with_spaces_or_a_leading_zero_are_read(web, offer, typed, guests):
    response = web.post(f"/offers/{offer.pk}/", stay(guests=typed))

    assert response.status_code == 302
    assert Quote.objects.get().guests == guests


def test_a_date_missing_from_the_calendar_is_said_so_beside_its_field(web, offer):
    response = web.post(f"/offers/{offer.pk}/", stay(start_date="2027-02-30"))

    assert response.status_code == 400
    assert field_errors(response) == {
        "start_date": ["2027-02-30 is not a date in the calendar: February 2027 has 28 days."]
    }
    assert "wrong format" not in response.content.decode()


def test_the_stay_form_keeps_what_was_typed(web, offer):
    response = web.post(f"/offers/{offer.pk}/", stay(guests="9"))

    page = response.content.decode()
    assert 'name="guests" value="9"' in page
    assert "This offer takes at most 4 guests." in page
