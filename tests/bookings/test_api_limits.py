"""Bounds of the customer API's inputs: how far ahead a stay may start, and every header and query
parameter limited in the OpenAPI schema and refused with a 400 outside it."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from bookings.states import BookingState, CustomerStatus
from tests.factories import BookingFactory, OfferFactory, PartnerFactory

BOOKINGS = "/api/v1/bookings"
S = BookingState


@pytest.fixture
def offer(db):
    return OfferFactory(partner=PartnerFactory(code=f"lim-{uuid.uuid4().hex[:10]}"))


def stay(offer, start, nights: int = 2) -> dict:
    return {
        "offer": offer.pk,
        "start_date": start.isoformat(),
        "end_date": (start + timedelta(days=nights)).isoformat(),
        "guests": 2,
    }


def today():
    return timezone.now().date()


def operations() -> dict[str, dict]:
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    return {
        op["operationId"]: op
        for item in schema["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }


def parameter(operation: dict, name: str) -> dict:
    return next(p for p in operation["parameters"] if p["name"] == name)


# --- how far ahead ---------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [BOOKINGS, "/api/v1/quotes"])
@pytest.mark.parametrize("start", ["2076-06-01", "9999-12-29"])
def test_a_stay_beyond_the_two_year_horizon_is_refused_with_a_field_error(api_client, offer, url, start):
    body = {"offer": offer.pk, "start_date": start, "end_date": start[:-2] + "30", "guests": 2}

    response = api_client.post(url, body, format="json", headers={"Idempotency-Key": "far-1"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"start_date": ["Bookings open at most 730 days ahead."]}


def test_a_stay_starting_on_the_horizon_day_is_accepted(api_client, offer):
    response = api_client.post(
        BOOKINGS,
        stay(offer, today() + timedelta(days=730)),
        format="json",
        headers={"Idempotency-Key": "edge"},
    )

    assert response.status_code == 202


def test_the_horizon_is_configurable(api_client, offer, settings):
    settings.BOOKING_MAX_ADVANCE_DAYS = 10

    on_it = api_client.post("/api/v1/quotes", stay(offer, today() + timedelta(days=10)), format="json")
    past_it = api_client.post("/api/v1/quotes", stay(offer, today() + timedelta(days=11)), format="json")

    assert on_it.status_code == 201
    assert past_it.json()["error"]["fields"] == {"start_date": ["Bookings open at most 10 days ahead."]}


# --- Idempotency-Key ---------------------------------------------------------------------------------
def test_the_schema_states_the_idempotency_key_s_length_and_pattern(db):
    schema = parameter(operations()["bookings_create"], "Idempotency-Key")["schema"]

    assert schema == {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"}


@pytest.mark.parametrize(
    "key",
    [
        "k",
        "order 42 / retry",
        "~!@#$%^&*()_+{}|:<>?`-=[]\\;',./\"",
        "x" * 255,
        "x" * 256,
        "clé-1",
        "tab\there",
        "nul\x00",
    ],
)
def test_the_api_accepts_exactly_the_keys_the_schema_allows(api_client, offer, key):
    pattern = parameter(operations()["bookings_create"], "Idempotency-Key")["schema"]["pattern"]
    allowed = len(key) <= 255 and re.fullmatch(pattern, key) is not None

    response = api_client.post(
        BOOKINGS, stay(offer, today() + timedelta(days=30)), format="json", HTTP_IDEMPOTENCY_KEY=key
    )

    if allowed:
        assert response.status_code == 202
    else:
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "idempotency_key_invalid"


# --- the status filter and pages -----------------------------------------------------------------------
def test_the_schema_states_the_status_values_and_the_first_page(db):
    listing = operations()["bookings_list"]

    status = parameter(listing, "status")
    # repeatable: `?status=confirmed&status=cancelled` (a form-style array, exploded by default)
    assert status["schema"]["type"] == "array" and status.get("explode", True) is True
    assert status["schema"]["items"]["enum"] == list(CustomerStatus.values)
    assert parameter(listing, "page")["schema"] == {"type": "integer", "minimum": 1}
    assert parameter(operations()["offers_list"], "page")["schema"] == {"type": "integer", "minimum": 1}


@pytest.mark.parametrize("value", ["", "bogus", "CONFIRMED"])
def test_an_empty_or_unknown_status_filter_is_a_400(api_client, value):
    response = api_client.get(BOOKINGS, {"status": value})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert list(response.json()["error"]["fields"]) == ["status"]


def test_a_known_status_filter_still_filters(api_client, customer):
    BookingFactory(customer=customer)

    pending = api_client.get(BOOKINGS, {"status": "pending"}).json()
    confirmed = api_client.get(BOOKINGS, {"status": "confirmed"}).json()

    assert (pending["count"], confirmed["count"]) == (1, 0)


def test_a_repeated_status_filter_keeps_the_bookings_shown_with_any_of_its_values(api_client, customer):
    # given a confirmed, a cancelled and a pending booking, and more confirmed ones than a page holds
    cancelled = BookingFactory(customer=customer, status=S.CANCELLED)
    BookingFactory(customer=customer)  # pending
    confirmed = BookingFactory.create_batch(20, customer=customer, status=S.CONFIRMED)

    # when the list asks for confirmed and cancelled ones
    first = api_client.get(f"{BOOKINGS}?status=confirmed&status=cancelled")
    second = api_client.get(first.json()["next"])

    # then both statuses are kept, over every page, and nothing else
    assert first.status_code == second.status_code == 200
    assert first.json()["count"] == 21
    assert "status=confirmed" in first.json()["next"] and "status=cancelled" in first.json()["next"]
    shown = first.json()["results"] + second.json()["results"]
    assert {row["reference"] for row in shown} == {b.reference for b in [*confirmed, cancelled]}
    assert {row["status"] for row in shown} == {"confirmed", "cancelled"}


def test_a_repeated_status_filter_refuses_any_value_it_does_not_know(api_client):
    response = api_client.get(f"{BOOKINGS}?status=bogus&status=confirmed")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"status": ['"bogus" is not a valid choice.']}


def test_the_same_status_twice_is_that_status(api_client, customer):
    BookingFactory(customer=customer, status=S.CONFIRMED)
    BookingFactory(customer=customer)

    response = api_client.get(f"{BOOKINGS}?status=confirmed&status=confirmed")

    assert [row["status"] for row in response.json()["results"]] == ["confirmed"]


@pytest.mark.parametrize("url", [BOOKINGS, "/api/v1/offers"])
def test_a_repeated_page_is_refused_not_one_of_them_served(api_client, url):
    response = api_client.get(f"{url}?page=1&page=2")

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request is invalid.",
            "fields": {"page": ["Give one page: `page` was given 2 times."]},
        }
    }


@pytest.mark.parametrize("url", [BOOKINGS, "/api/v1/offers"])
@pytest.mark.parametrize(
    "page",
    ["0", "00", "-1", "abc", "", "last", "1e3", "1.0", "+1", " 1 ", "1_0", "\uff11", "\u0661", "\U0001d7cf"],
)
def test_a_page_that_is_not_a_whole_number_from_1_is_a_400(api_client, url, page):
    # (Python's int() reads `+1`, ` 1 `, `1_0` as ten, and other scripts' digits: fullwidth,
    # Arabic-Indic, mathematical bold)
    response = api_client.get(url, {"page": page})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "page": ["Give a whole number from 1, in the digits 0-9 alone (e.g. `2`)."]
    }


@pytest.mark.parametrize("url", [BOOKINGS, "/api/v1/offers"])
@pytest.mark.parametrize("page", ["1", "01"])
def test_the_first_page_is_served_however_many_leading_zeros(api_client, url, page):
    assert api_client.get(url, {"page": page}).status_code == 200


def test_a_page_past_the_last_is_still_a_404(api_client):
    first = api_client.get(BOOKINGS, {"page": "1"})
    past = api_client.get(BOOKINGS, {"page": "2"})

    assert first.status_code == 200
    assert past.status_code == 404
    assert past.json()["error"]["code"] == "not_found"


def test_the_schema_states_the_reference_s_length(db):
    reference = parameter(operations()["bookings_retrieve"], "reference")["schema"]

    assert reference == {"type": "string", "minLength": 1, "maxLength": 12}
