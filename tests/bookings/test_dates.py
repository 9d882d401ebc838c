"""A date the customer wrote in the right format but that the calendar does not have is told as
such (bookings/dates.py), by the API and by the pages, never as a format error."""

from __future__ import annotations

import pytest

from bookings.dates import WRONG_FORMAT, NotADate, not_in_calendar, parse_date
from bookings.models import Booking, Quote
from tests.bookings.conftest import stay_body


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("2027-02-30", "2027-02-30 is not a date in the calendar: February 2027 has 28 days."),
        ("2027-02-29", "2027-02-29 is not a date in the calendar: February 2027 has 28 days."),
        ("2027-04-31", "2027-04-31 is not a date in the calendar: April 2027 has 30 days."),
        ("2027-13-01", "2027-13-01 is not a date in the calendar: there is no month 13."),
        ("2027-00-10", "2027-00-10 is not a date in the calendar: there is no month 0."),
        ("2027-03-00", "2027-03-00 is not a date in the calendar: there is no day 0."),
        ("0000-01-01", "0000-01-01 is not a date in the calendar: there is no year 0."),
    ],
)
def test_a_date_missing_from_the_calendar_says_which_part_does_not_exist(value, why):
    assert not_in_calendar(value) == why


@pytest.mark.parametrize(
    "value",
    ["2028-02-29", "2027-03-01", "01/03/2027", "2027/02/30", "tomorrow", "", None, 20270230, "2027-4-31"],
)
def test_a_real_date_or_one_in_another_format_is_not_a_calendar_error(value):
    assert not_in_calendar(value) is None


@pytest.mark.parametrize("url", ["/api/v1/bookings", "/api/v1/quotes"])
@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("start_date", "2027-02-30", "2027-02-30 is not a date in the calendar: February 2027 has 28 days."),
        ("end_date", "2027-13-01", "2027-13-01 is not a date in the calendar: there is no month 13."),
    ],
)
def test_the_api_refuses_a_date_missing_from_the_calendar_as_such(api_client, offer, url, field, value, why):
    body = stay_body(offer, **{field: value})
    response = api_client.post(url, body, format="json", headers={"Idempotency-Key": "key-1"})

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "validation_error", "message": "The request is invalid.", "fields": {field: [why]}}
    }
    assert not Booking.objects.exists() and not Quote.objects.exists()


def test_a_date_in_another_format_is_still_a_format_error(api_client, offer):
    response = api_client.post("/api/v1/quotes", stay_body(offer, start_date="30/02/2027"), format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "start_date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]
    }


# --- YYYY-MM-DD, and nothing else: one rule for the API and the pages ------------------------------
NOT_YYYY_MM_DD = [
    "20270301",  # ISO 8601's basic format, which date.fromisoformat reads
    "2027-W09-1",  # an ISO week date, the same
    "2027-3-1",  # a month and a day of one digit
    "2027-03-01\n",  # Django's fallback pattern ends with $, which a newline passes
    " 2027-03-01",
    "2027-03-01T00:00:00",
    "+2027-03-01",
    "\u0662\u0660\u0662\u0667-\u0660\u0663-\u0660\u0661",  # Arabic-Indic digits, which int() reads
]


@pytest.mark.parametrize("value", NOT_YYYY_MM_DD)
def test_only_yyyy_mm_dd_is_a_date(value):
    with pytest.raises(NotADate) as refused:
        parse_date(value)

    assert (refused.value.code, refused.value.message) == ("invalid", WRONG_FORMAT)


@pytest.mark.parametrize("url", ["/api/v1/bookings", "/api/v1/quotes"])
@pytest.mark.parametrize("value", NOT_YYYY_MM_DD)
def test_the_api_refuses_a_date_not_written_yyyy_mm_dd(api_client, offer, url, value):
    body = stay_body(offer, start_date=value)
    response = api_client.post(url, body, format="json", headers={"Idempotency-Key": "key-1"})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request is invalid.",
            "fields": {
                "start_date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]
            },
        }
    }
    assert not Booking.objects.exists() and not Quote.objects.exists()
