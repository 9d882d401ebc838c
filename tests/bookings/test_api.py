"""The customer API (`/api/v1/`): auth, ownership, the booking representation, idempotency,
listing, cancelling, offers and quotes. Concurrency lives in test_api_concurrency.py."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import transaction
from django.test import Client
from django.utils import timezone
from rest_framework.fields import DateTimeField
from rest_framework.test import APIClient

from bookings import customer_view
from bookings.cancelling import cancel_money, stay_policy
from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Actor, Booking, BookingEvent, Quote
from bookings.pricing import stay_dates
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState, CustomerStatus
from partners.models import PartnerAttempt
from tests.bookings.conftest import (
    BOOKINGS_URL,
    post_booking,
    stay_body,
)
from tests.factories import (
    BookingFactory,
    OfferFactory,
    PartnerFactory,
    PartnerReservationFactory,
    QuoteFactory,
)
from tests.helpers import queued_messages, wait_until

S = BookingState
SERVER = "http://testserver"


def iso(value) -> str:
    return DateTimeField().to_representation(value)


NO_PAYMENT_IF_CANCELLED = {
    "outcome": "no_payment",
    "message": "This booking takes no payment: cancelling costs nothing, and there is nothing to refund.",
    "why": "",
    "fee": "0.00",
    "refund": "0.00",
    "released": "0.00",
    "cut_off": None,
}


# The messages of a booking waiting for the partner to confirm: only then is its deadline told.
AWAITING_PARTNER_CODES = {"received", "submitting", "partner_confirming", "checking", "taking_longer"}


def booking_json(
    booking: Booking, *, status: str, message: str, code: str = "received", cancellable: bool = True
):
    booking.refresh_from_db()
    url = f"{SERVER}{BOOKINGS_URL}/{booking.reference}"
    return {
        "reference": booking.reference,
        "status": status,
        "message": message,
        "message_code": code,
        "status_version": booking.status_version,
        "offer": {
            "id": booking.offer.pk,
            "product_id": booking.offer.product_id,
            "name": booking.offer.name,
            "price_unit": "night",
        },
        "partner": {"code": booking.partner.code},
        "start_date": booking.start_date.isoformat(),
        "end_date": booking.end_date.isoformat(),
        "nights": booking.nights,
        "units": booking.nights,
        "last_day": (booking.end_date - timedelta(days=1)).isoformat(),
        "dates_text": stay_dates(booking.start_date, booking.end_date, "night"),
        "guests": booking.guests,
        "total_price": str(booking.total_price),
        "currency": booking.currency,
        "created_at": iso(booking.created_at),
        "updated_at": iso(booking.updated_at),
        "deadline": iso(booking.deadline) if code in AWAITING_PARTNER_CODES else None,
        "money": None,  # no payment (tests/payments cover the money the API shows)
        "if_cancelled": NO_PAYMENT_IF_CANCELLED | {"currency": booking.currency} if cancellable else None,
        "links": {"self": url, "cancel": f"{url}/cancel" if cancellable else None},
    }


PENDING_MESSAGE = "We received your booking and are sending it to the partner."


def disrupted_booking(customer) -> Booking:
    """Confirmed once, then cancelled by the partner: with support now."""
    return BookingFactory(
        customer=customer,
        status=S.NEEDS_ATTENTION,
        attention_reason="partner_cancelled_confirmed",
        confirmed_shown_at=timezone.now(),
    )


CANCELLING_MESSAGE = "We are cancelling your booking with the partner."


# --- authentication -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", BOOKINGS_URL),
        ("post", BOOKINGS_URL),
        ("get", f"{BOOKINGS_URL}/BK-AAAAAA"),
        ("post", f"{BOOKINGS_URL}/BK-AAAAAA/cancel"),
        ("get", "/api/v1/offers"),
        ("post", "/api/v1/quotes"),
    ],
)
def test_every_endpoint_requires_a_token(db, method, url):
    # given a client without credentials
    client = APIClient()

    # when it calls the endpoint
    response = getattr(client, method)(url, {}, format="json")

    # then it is told to authenticate, in the one error shape
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    assert response.json() == {
        "error": {
            "code": "not_authenticated",
            "message": "Authentication credentials were not provided.",
        }
    }


def test_an_invalid_token_is_refused(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(BOOKINGS_URL)

    assert response.status_code == 401
    assert response.json() == {"error": {"code": "authentication_failed", "message": "Invalid token."}}


def test_throttled_requests_get_429_in_the_one_shape(api_client, settings):
    # given a per-customer limit of 2 requests a minute, counted under keys of this test only
    settings.API_THROTTLE_RATE = "2/min"
    settings.API_THROTTLE_NAMESPACE = f"throttle-{uuid.uuid4().hex}"

    # when the customer makes a third request within the minute
    statuses = [api_client.get("/api/v1/offers").status_code for _ in range(2)]
    response = api_client.get("/api/v1/offers")

    # then it is refused with 429, Retry-After and the error shape
    assert statuses == [200, 200]
    assert response.status_code == 429
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert response.json()["error"]["code"] == "throttled"


# --- create -----------------------------------------------------------------------------------
def test_create_booking_returns_202_with_location_and_retry_after(
    api_client, customer, offer, django_capture_on_commit_callbacks
):
    # given a valid stay of 3 nights at 120.00
    body = stay_body(offer)

    # when the customer books it
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_booking(api_client, body, key="create-1")

    # then the booking is stored, pending, and the submission is queued after commit
    booking = Booking.objects.get()
    assert response.status_code == 202
    assert response.headers["Location"] == f"{SERVER}{BOOKINGS_URL}/{booking.reference}"
    assert response.headers["Retry-After"] == str(settings.BOOKING_POLL_AFTER_S)
    assert response.headers["ETag"] == 'W/"1"'
    assert response.json() == booking_json(booking, status="pending", message=PENDING_MESSAGE)
    assert response.json()["total_price"] == "360.00"
    assert booking.customer == customer
    assert booking.status == S.REQUESTED
    assert len(callbacks) == 2  # its first view published, its submission queued
    assert (booking.customer, booking.idempotency_key) == (customer, "create-1")
    assert list(booking.events.values_list("kind", "actor", "to_state")) == [
        ("booking.requested", "customer", "requested")
    ]


def test_create_booking_does_not_expose_the_internal_state(api_client, offer):
    response = post_booking(api_client, stay_body(offer))

    assert response.status_code == 202
    assert "state" not in response.json()
    assert response.json()["status"] == "pending"


@pytest.mark.parametrize("url", [BOOKINGS_URL, f"{BOOKINGS_URL}/"])
def test_booking_collection_answers_with_and_without_trailing_slash(api_client, offer, url):
    response = api_client.post(url, stay_body(offer), format="json", headers={"Idempotency-Key": "slash"})
    listing = api_client.get(url)

    assert response.status_code == 202
    assert listing.status_code == 200
    assert [row["reference"] for row in listing.json()["results"]] == [response.json()["reference"]]


def test_create_booking_requires_an_idempotency_key(api_client, offer, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_booking(api_client, stay_body(offer), key=None)

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "idempotency_key_required",
            "message": "The Idempotency-Key header is required to create a booking.",
            "fields": {"Idempotency-Key": ["This header is required."]},
        }
    }
    assert Booking.objects.count() == 0
    assert callbacks == []


@pytest.mark.parametrize("key", ["", "   "])
def test_a_blank_idempotency_key_counts_as_missing(api_client, offer, key):
    response = post_booking(api_client, stay_body(offer), key=key)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency_key_required"
    assert Booking.objects.count() == 0


@pytest.mark.parametrize("key", ["k" * 256, "tab\there", "bell\x07", "clé"])
def test_an_invalid_idempotency_key_is_refused(api_client, offer, key):
    response = post_booking(api_client, stay_body(offer), key=key)

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "idempotency_key_invalid",
            "message": "The Idempotency-Key header is invalid.",
            "fields": {"Idempotency-Key": ["Use 1 to 255 printable ASCII characters."]},
        }
    }
    assert Booking.objects.count() == 0


def test_an_idempotency_key_of_255_characters_is_accepted(api_client, offer):
    response = post_booking(api_client, stay_body(offer), key="k" * 255)

    assert response.status_code == 202
    assert Booking.objects.get().idempotency_key == "k" * 255


def test_create_booking_requires_every_stay_field(api_client, db):
    response = post_booking(api_client, {})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request is invalid.",
            "fields": {
                "offer": ["This field is required."],
                "start_date": ["This field is required."],
                "end_date": ["This field is required."],
                "guests": ["This field is required."],
            },
        }
    }


def test_create_booking_parses_types(api_client, db):
    response = post_booking(
        api_client,
        {
            "offer": "one",
            "start_date": "tomorrow",
            "end_date": "2030-02-30",
            "guests": "two",
            "quote": "not-a-uuid",
        },
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "offer": ["A valid integer is required."],
        "start_date": [
            "Date has wrong format. Use one of these formats instead: YYYY-MM-DD.",
        ],
        "end_date": ["2030-02-30 is not a date in the calendar: February 2030 has 28 days."],
        "guests": ["A valid integer is required."],
        "quote": ["Must be a valid UUID."],
    }
    assert Booking.objects.count() == 0


@pytest.mark.parametrize(
    "loose",
    [
        pytest.param("1", id="string"),
        pytest.param("\u0661", id="arabic-indic-string"),
        pytest.param("\uff11", id="fullwidth-string"),
        pytest.param(1.0, id="float"),
        pytest.param(True, id="boolean"),
    ],
)
@pytest.mark.parametrize("url", [BOOKINGS_URL, "/api/v1/quotes"])
def test_offer_and_guests_are_json_integers_and_nothing_that_reads_as_one(api_client, offer, url, loose):
    # The schema says integer. DRF's IntegerField took `"1"`, an Arabic-Indic one (Python's int()
    # reads other scripts' digits), `1.0` and `true` as 1: a client's bug would book a stay it did
    # not write.
    response = api_client.post(
        url,
        {**stay_body(offer), "offer": loose, "guests": loose},
        format="json",
        headers={"Idempotency-Key": "k"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "offer": ["A valid integer is required."],
        "guests": ["A valid integer is required."],
    }
    assert Booking.objects.count() == Quote.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        pytest.param('{"offer": 1, "guests": 2, "guests": 1}', id="top-level"),
        pytest.param('{"offer": 1, "x": {"a": 1, "a": 2}}', id="nested"),
    ],
)
def test_a_body_naming_a_field_twice_is_refused_not_read_as_its_last_value(api_client, db, body):
    # Python's reader keeps the last value silently; another reader (a proxy, a log, the
    # client's own test) may keep the first: which one was meant is not ours to guess.
    response = api_client.post(
        BOOKINGS_URL, data=body, content_type="application/json", headers={"Idempotency-Key": "k"}
    )

    assert response.status_code == 400
    name = "guests" if 'guests": 1' in body else "a"
    assert response.json()["error"] == {
        "code": "parse_error",
        "message": f'The body names "{name}" twice in one object: give each name once.',
    }
    assert Booking.objects.count() == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"paymentMethod": "pm_card_visa"},  # a misspelt payment_method: an unpaid booking otherwise
        {"status": "confirmed", "total_price": "1.00", "reference": "BK-MINE"},  # output fields
    ],
    ids=["misspelt", "read-only"],
)
@pytest.mark.parametrize("url", [BOOKINGS_URL, "/api/v1/quotes"])
def test_a_field_the_api_does_not_take_is_refused_not_ignored(api_client, offer, url, extra):
    response = api_client.post(
        url, {**stay_body(offer), **extra}, format="json", headers={"Idempotency-Key": "k"}
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request is invalid.",
            "fields": {key: ["Unknown field."] for key in extra},
        }
    }
    assert Booking.objects.count() == Quote.objects.count() == 0


def test_an_unknown_field_is_named_with_the_other_fields_errors(api_client, db):
    response = post_booking(api_client, {"offer": "one", "guests": 2, "start_date": "x", "nights": 3})

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "offer": ["A valid integer is required."],
        "start_date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."],
        "end_date": ["This field is required."],
        "nights": ["Unknown field."],
    }


def test_format_and_field_rule_errors_are_named_together_under_one_message(api_client, db):
    # given a body whose fields are unreadable, and whose guests break their own rule
    body = {"offer": -1, "start_date": "2027-02-30", "end_date": "x", "guests": 0}

    response = post_booking(api_client, body)

    # then every field is named at once, under the message every validation error has
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request is invalid.",
            "fields": {
                "offer": ["Ensure this value is greater than or equal to 1."],
                "start_date": ["2027-02-30 is not a date in the calendar: February 2027 has 28 days."],
                "end_date": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."],
                "guests": ["At least one guest is required."],
            },
        }
    }


def test_an_offer_id_beyond_64_bits_is_a_validation_error(api_client, db):
    response = post_booking(api_client, {"offer": 2**63, "start_date": "2030-01-01"})

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["offer"] == [
        "Ensure this value is less than or equal to 9223372036854775807."
    ]


def test_an_unknown_offer_is_a_validation_error(api_client, db):
    response = post_booking(api_client, {**stay_body(OfferFactory.build(pk=999_999))})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "Unknown offer.",
            "fields": {"offer": ["No such offer."]},
        }
    }


@pytest.mark.parametrize(
    ("unit_price", "currency", "said"),
    [
        ("0.10", "EUR", "0.30 EUR cannot be paid by card: a card payment in EUR is at least 0.50 EUR."),
        ("13.00", "JPY", "39 JPY cannot be paid by card: a card payment in JPY is at least 50 JPY."),
    ],
)
def test_a_price_below_the_least_a_card_payment_may_be_is_not_payable_and_nothing_is_stored(
    api_client, partner, settings, unit_price, currency, said
):
    """Review: Stripe refuses a charge below its minimum (`amount_too_small`), which was read as a
    refusal: the booking ended as a card decline although the card was fine."""
    settings.BOOKING_SERVICE_FEE = "0.00"
    offer = OfferFactory(partner=partner, unit_price=Decimal(unit_price), currency=currency)

    response = post_booking(api_client, stay_body(offer, payment_method="pm_card_visa"))

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "not_payable",
            "message": "This price cannot be paid by card.",
            "fields": {"payment_method": [said]},
        }
    }
    assert not Booking.objects.exists()
    # a price of the least or more is paid by card; a stay that does not pay is booked at any price
    least = OfferFactory(partner=partner, unit_price=Decimal("0.17"), currency="EUR")  # 0.51 EUR
    paid = post_booking(api_client, stay_body(least, payment_method="pm_card_visa"), key="k2")
    assert paid.status_code == 202
    assert post_booking(api_client, stay_body(offer), key="k3").status_code == 202


def test_malformed_json_is_a_parse_error(api_client, db):
    response = api_client.post(
        BOOKINGS_URL,
        data="{not json",
        content_type="application/json",
        headers={"Idempotency-Key": "k"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert Booking.objects.count() == 0


LONE_SURROGATE = (
    "The body is not valid JSON: a string in it holds a lone surrogate (a \\uD800-\\uDFFF escape "
    "without its pair), which is no Unicode character."
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "{not json",
            "The body is not valid JSON: Expecting property name enclosed in double quotes "
            "(line 1, column 2).",
        ),
        (b'{"guests": \xff}', "The body is not valid JSON: it is not UTF-8 text."),
        (
            '{"guests": ' + "9" * 5000 + "}",
            "The body is not valid JSON: a value cannot be read (a number too long, say).",
        ),
        ('{"guests": NaN}', "The body is not valid JSON: NaN is not a JSON value."),
        ('{"guests": -Infinity}', "The body is not valid JSON: -Infinity is not a JSON value."),
        # A lone surrogate is no character: echoed under "Unknown field." it made the answer
        # impossible to write as UTF-8 (a 500); as a value it could not be stored.
        ('{"\\ud800": 1}', LONE_SURROGATE),
        ('{"guests": 2, "note": ["ok", {"x": "\\udfff"}]}', LONE_SURROGATE),
    ],
    ids=[
        "syntax",
        "not-utf8",
        "number-too-long",
        "nan",
        "infinity",
        "surrogate-name",
        "surrogate-deep-value",
    ],
)
def test_a_body_that_is_not_json_is_told_where_in_plain_words(api_client, db, body, message):
    # Not the decoder's internals ("'utf-8' codec can't decode byte 0xff in position 11",
    # "use sys.set_int_max_str_digits()"): a client's developer reads these.
    response = api_client.post(
        BOOKINGS_URL, data=body, content_type="application/json", headers={"Idempotency-Key": "k"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == {"code": "parse_error", "message": message}
    assert Booking.objects.count() == 0


@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "GZIP", "identity, gzip", "x-anything"])
@pytest.mark.parametrize("encoded", [False, True], ids=["plain-body", "gzipped-body"])
def test_a_body_declared_in_a_content_coding_is_refused_with_415(api_client, offer, coding, encoded):
    # The API decodes no content coding. A body declared gzip but sent plain was booked as if
    # plain (a 202 for what the client says is something else); a gzipped one was told it is "not
    # UTF-8 text". Either is a 415 naming the coding, with the one the API takes (RFC 9110 15.5.16).
    body = json.dumps(stay_body(offer)).encode()
    response = api_client.post(
        BOOKINGS_URL,
        data=gzip.compress(body) if encoded else body,
        content_type="application/json",
        headers={"Idempotency-Key": "k", "Content-Encoding": coding},
    )

    assert response.status_code == 415
    assert response.json()["error"] == {
        "code": "unsupported_media_type",
        "message": (
            f'The body is declared in the content coding "{coding}" (Content-Encoding): this API '
            "reads bodies sent as they are only; send it without a Content-Encoding."
        ),
    }
    assert response["Accept-Encoding"] == "identity"
    assert Booking.objects.count() == 0


@pytest.mark.parametrize("coding", ["identity", "Identity", ""])
def test_a_body_declared_identity_is_read_as_it_is(api_client, offer, coding):
    response = api_client.post(
        BOOKINGS_URL,
        data=json.dumps(stay_body(offer)),
        content_type="application/json",
        headers={"Idempotency-Key": "k", "Content-Encoding": coding},
    )

    assert response.status_code == 202


@pytest.mark.parametrize("charset", ["utf-16", "latin-1", "bogus", "UTF-8"])
def test_a_json_body_is_read_as_utf8_whatever_charset_it_declares(api_client, offer, charset):
    # JSON is UTF-8 (RFC 8259 8.1; its media type has no charset parameter, 11): DRF honoured
    # `charset=utf-16`, so the same UTF-8 body was booked under one label and refused as "a value
    # cannot be read (a number too long, say)" under another.
    response = api_client.post(
        BOOKINGS_URL,
        data=json.dumps(stay_body(offer)).encode(),
        content_type=f"application/json; charset={charset}",
        headers={"Idempotency-Key": "k"},
    )
    utf16 = api_client.post(
        BOOKINGS_URL,
        data=json.dumps(stay_body(offer)).encode("utf-16"),
        content_type=f"application/json; charset={charset}",
        headers={"Idempotency-Key": "k2"},
    )

    assert response.status_code == 202
    assert utf16.status_code == 400
    assert utf16.json()["error"] == {
        "code": "parse_error",
        "message": "The body is not valid JSON: it is not UTF-8 text.",
    }


def test_only_json_bodies_are_accepted(api_client, offer):
    response = api_client.post(
        BOOKINGS_URL, stay_body(offer), format="multipart", headers={"Idempotency-Key": "k"}
    )

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert Booking.objects.count() == 0


# --- idempotency ------------------------------------------------------------------------------
def test_a_replay_with_the_same_key_and_body_returns_the_same_booking(
    api_client, offer, django_capture_on_commit_callbacks
):
    # given a booking made with a key
    body = stay_body(offer)
    with django_capture_on_commit_callbacks() as first_callbacks:
        first = post_booking(api_client, body, key="same")

    # when the same request is sent again
    with django_capture_on_commit_callbacks() as replay_callbacks:
        replay = post_booking(api_client, body, key="same")

    # then it is the same booking, the same status code and headers, and nothing new happened
    assert first.status_code == replay.status_code == 202
    assert replay.json() == first.json()
    assert replay.headers["Location"] == first.headers["Location"]
    assert replay.headers["Retry-After"] == first.headers["Retry-After"]
    assert Booking.objects.count() == 1
    assert Booking.objects.exclude(idempotency_key="").count() == 1
    assert BookingEvent.objects.filter(kind="booking.requested").count() == 1
    assert len(first_callbacks) == 2  # published, queued
    assert replay_callbacks == []


def test_a_replay_returns_the_booking_as_it_is_now(api_client, offer):
    first = post_booking(api_client, stay_body(offer), key="later")
    Booking.objects.filter(reference=first.json()["reference"]).update(
        status=S.CONFIRMED, customer_status="confirmed", customer_message="confirmed", status_version=2
    )

    replay = post_booking(api_client, stay_body(offer), key="later")

    assert replay.status_code == 202
    assert replay.json()["reference"] == first.json()["reference"]
    assert (replay.json()["status"], replay.json()["status_version"]) == ("confirmed", 2)
    assert replay.headers["ETag"] == 'W/"2"'


def test_a_replay_still_works_after_the_offer_is_withdrawn(api_client, offer):
    first = post_booking(api_client, stay_body(offer), key="withdrawn")
    offer.is_active = False
    offer.save(update_fields=["is_active"])

    replay = post_booking(api_client, stay_body(offer), key="withdrawn")

    assert replay.status_code == 202
    assert replay.json()["reference"] == first.json()["reference"]


def test_the_same_key_booking_the_same_quote_with_another_card_is_a_key_reused(api_client, customer, offer):
    # an API client's key names one request body (the page's names its attempt at the quote)
    quote = QuoteFactory(customer=customer, offer=offer)
    body = {
        "offer": offer.pk,
        "quote": str(quote.pk),
        "start_date": quote.start_date.isoformat(),
        "end_date": quote.end_date.isoformat(),
        "guests": quote.guests,
    }
    assert (
        post_booking(api_client, body | {"payment_method": "pm_card_chargeDeclined"}, key="k").status_code
        == 202
    )

    again = post_booking(api_client, body | {"payment_method": "pm_card_visa"}, key="k")

    assert again.status_code == 422
    assert again.json()["error"]["code"] == "idempotency_key_reused"


def test_the_same_key_with_another_body_is_refused_and_writes_nothing(
    api_client, offer, django_capture_on_commit_callbacks
):
    # given a booking made with a key
    post_booking(api_client, stay_body(offer), key="reused")
    events_before = BookingEvent.objects.count()

    # when the key is sent with another body
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_booking(api_client, stay_body(offer, guests=3), key="reused")

    # then it is refused and nothing is written or queued
    assert response.status_code == 422
    assert response.json() == {
        "error": {
            "code": "idempotency_key_reused",
            "message": "This Idempotency-Key was already used with a different request body.",
        }
    }
    assert Booking.objects.count() == 1
    assert Booking.objects.exclude(idempotency_key="").count() == 1
    assert BookingEvent.objects.count() == events_before
    assert callbacks == []


def test_a_replay_with_an_unknown_field_is_refused_and_a_refused_request_keeps_its_key(api_client, offer):
    # given a booking made with a key
    first = post_booking(api_client, stay_body(offer), key="used")

    # when the same key and body come again with a field the API does not take
    replay = post_booking(api_client, stay_body(offer, paymentMethod="pm_card_visa"), key="used")
    # and a new key is first sent with one, then without it
    refused = post_booking(api_client, stay_body(offer, paymentMethod="pm_card_visa"), key="fresh")
    corrected = post_booking(api_client, stay_body(offer, payment_method="pm_card_visa"), key="fresh")

    # then the unknown field is refused before the key is looked at, and the refusal used no key
    assert first.status_code == 202
    assert replay.status_code == refused.status_code == 400
    assert replay.json()["error"]["fields"] == {"paymentMethod": ["Unknown field."]}
    assert corrected.status_code == 202, corrected.json()
    assert corrected.json()["reference"] != first.json()["reference"]
    assert Booking.objects.get(idempotency_key="fresh").status == S.AWAITING_PAYMENT  # it pays


def test_a_quote_booked_under_one_key_answers_another_key_with_its_booking(api_client, offer):
    quote = api_client.post("/api/v1/quotes", stay_body(offer), format="json").json()
    body = stay_body(offer, quote=quote["id"])
    first = post_booking(api_client, body, key="first-try")

    again = post_booking(api_client, body, key="second-try")

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert Booking.objects.count() == 1


def test_a_booked_quote_that_has_expired_since_answers_that_it_is_booked(api_client, offer):
    # given a quote booked without a card, whose hold has ended since
    quote = api_client.post("/api/v1/quotes", stay_body(offer), format="json").json()
    first = post_booking(api_client, stay_body(offer, quote=quote["id"]), key="first-try")
    Quote.objects.filter(pk=quote["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))

    # when it is booked again under another key: the same request, then with a card
    again = post_booking(api_client, stay_body(offer, quote=quote["id"]), key="second-try")
    otherwise = post_booking(
        api_client, stay_body(offer, quote=quote["id"], payment_method="pm_card_visa"), key="third-try"
    )

    # then the same request answers with its booking, the other is refused as booked: its expiry
    # is beside the point once it is booked
    assert first.status_code == again.status_code == 202
    assert again.json()["reference"] == first.json()["reference"]
    assert otherwise.status_code == 422
    assert otherwise.json()["error"]["code"] == "quote_booked_otherwise"
    assert Booking.objects.count() == 1


@pytest.mark.parametrize("expired_since", [False, True])
def test_a_quote_whose_booking_did_not_go_ahead_is_refused_pointing_at_a_new_quote(
    api_client, offer, expired_since
):
    """Reviewer: a quote whose booking was declined answered "booked already" to another card."""
    # given a quote booked with a card its bank declined: the booking ended, nothing booked
    quote = api_client.post("/api/v1/quotes", stay_body(offer), format="json").json()
    body = stay_body(offer, quote=quote["id"], payment_method="pm_card_chargeDeclined")
    first = post_booking(api_client, body, key="first-try")
    money = money_of(PaymentFacts("declined", "EUR", Decimal(quote["total_price"]))).as_json()
    Booking.objects.filter(reference=first.json()["reference"]).update(
        status=S.FAILED, customer_status="failed", customer_message="payment_declined", customer_money=money
    )
    if expired_since:
        Quote.objects.filter(pk=quote["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))

    # when it is booked again with another card, under another key
    again = post_booking(api_client, {**body, "payment_method": "pm_card_visa"}, key="second-try")

    # then it is refused, saying so and pointing at a new quote for the stay; nothing is booked
    assert again.status_code == 422
    assert again.json() == {
        "error": {
            "code": "quote_booking_did_not_go_ahead",
            "message": f"This quote's booking {first.json()['reference']} did not go ahead, and a quote "
            "is booked only once: get a new quote for the same stay, and book that.",
        }
    }
    assert Booking.objects.count() == 1

    # and a new quote for the same stay books with the other card
    new = api_client.post("/api/v1/quotes", stay_body(offer), format="json").json()
    booked = post_booking(
        api_client, {**body, "quote": new["id"], "payment_method": "pm_card_visa"}, key="third"
    )
    assert booked.status_code == 202, booked.json()
    assert Booking.objects.count() == 2


def test_a_booked_quote_asked_for_another_stay_is_refused_for_the_stay(api_client, offer):
    # given a booked quote
    quote = api_client.post("/api/v1/quotes", stay_body(offer), format="json").json()
    post_booking(api_client, stay_body(offer, quote=quote["id"]), key="first-try")

    # when a request names it with other guests
    other = post_booking(api_client, stay_body(offer, quote=quote["id"], guests=1), key="second-try")

    # then what is wrong with the request is said, as for any quote
    assert other.status_code == 400
    assert other.json()["error"]["fields"] == {"guests": ["Differs from the quote."]}


def test_idempotency_keys_are_per_customer(api_client, other_client, offer):
    mine = post_booking(api_client, stay_body(offer), key="shared-key")
    theirs = post_booking(other_client, stay_body(offer), key="shared-key")

    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["reference"] != theirs.json()["reference"]
    assert Booking.objects.count() == 2
    assert Booking.objects.exclude(idempotency_key="").count() == 2


def test_booking_with_a_quote_keeps_the_quoted_price(api_client, offer):
    # given a quote, then a price rise
    quote = api_client.post("/api/v1/quotes", stay_body(offer), format="json").json()
    offer.unit_price = Decimal("200.00")
    offer.save(update_fields=["unit_price"])

    # when the customer books with the quote
    response = post_booking(api_client, stay_body(offer, quote=quote["id"]))

    # then the quoted price holds
    assert response.status_code == 202
    assert response.json()["total_price"] == "360.00"
    assert str(Booking.objects.get().quote_id) == quote["id"]


# --- detail -----------------------------------------------------------------------------------
def test_a_customer_sees_their_booking(api_client, customer, django_assert_num_queries):
    booking = BookingFactory(customer=customer)

    with django_assert_num_queries(2):  # the token with its user, the booking with its relations
        response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}")

    assert response.status_code == 200
    assert response.json() == booking_json(booking, status="pending", message=PENDING_MESSAGE)


def test_detail_answers_with_a_trailing_slash(api_client, customer):
    booking = BookingFactory(customer=customer)

    response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}/")

    assert response.status_code == 200
    assert response.json()["reference"] == booking.reference


@pytest.mark.parametrize(
    ("state", "status", "code", "message", "cancellable"),
    [
        (S.REQUESTED, "pending", "received", PENDING_MESSAGE, True),
        (S.SUBMITTING, "pending", "submitting", "We are placing your booking with the partner.", True),
        (
            S.PENDING_PARTNER,
            "pending",
            "partner_confirming",
            "The partner is confirming your booking.",
            True,
        ),
        (S.UNKNOWN, "pending", "checking", "We are checking your booking with the partner.", True),
        (S.CONFIRMED, "confirmed", "confirmed", "Your booking is confirmed.", True),
        (
            S.REJECTED,
            "failed",
            "declined",
            "The partner could not accept this booking. Nothing is booked.",
            False,
        ),
        (
            S.FAILED,
            "failed",
            "not_completed",
            "We could not complete this booking. Nothing is booked.",
            False,
        ),
        (
            S.EXPIRED,
            "failed",
            "not_confirmed_in_time",
            "The partner did not confirm in time. Nothing is booked.",
            False,
        ),
        (S.CANCEL_REQUESTED, "cancelling", "cancelling", CANCELLING_MESSAGE, False),
        (S.CANCELLED, "cancelled", "cancelled", "Your booking is cancelled.", False),
        (
            S.NEEDS_ATTENTION,
            "pending",
            "with_support",
            "Our support team is reviewing your booking with the partner; we will tell you when it "
            "is settled.",
            True,
        ),
    ],
)
def test_detail_shows_the_customer_facing_status(
    api_client, customer, state, status, code, message, cancellable
):
    booking = BookingFactory(customer=customer, status=state)

    response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}")

    assert response.json() == booking_json(
        booking, status=status, message=message, code=code, cancellable=cancellable
    )


@pytest.mark.parametrize(
    ("fields", "told"),
    [
        ({"status": S.PENDING_PARTNER}, True),
        ({"status": S.CONFIRMED}, False),  # the partner confirmed: nothing is left to meet
        ({"status": S.CANCEL_REQUESTED}, False),
        ({"status": S.NEEDS_ATTENTION, "attention_reason": "outcome_unknown_no_lookup"}, False),
        ({"status": S.AWAITING_PAYMENT}, False),  # the partner is not asked before the money is held
        ({"status": S.EXPIRED}, False),
    ],
)
def test_the_partners_deadline_is_told_only_while_the_booking_waits_for_it_to_confirm(
    api_client, customer, fields, told
):
    """Tester: a confirmed booking still carried the partner's `deadline`; the progress page
    tells it only while the customer waits for the partner to confirm, and so does the API."""
    booking = BookingFactory(customer=customer, **fields)

    shown = api_client.get(f"{BOOKINGS_URL}/{booking.reference}").json()
    listed = api_client.get(BOOKINGS_URL).json()["results"][0]

    assert "deadline" in shown  # kept, null when it does not apply: clients reading it still work
    assert shown["deadline"] == listed["deadline"] == (iso(booking.deadline) if told else None)
    assert customer_view.partner_deadline(booking) == (booking.deadline if told else None)


def test_detail_is_tagged_with_its_status_version_and_says_when_to_poll(api_client, customer):
    pending = BookingFactory(customer=customer)
    confirmed = BookingFactory(customer=customer, status=S.CONFIRMED, status_version=4)

    waiting = api_client.get(f"{BOOKINGS_URL}/{pending.reference}")
    settled = api_client.get(f"{BOOKINGS_URL}/{confirmed.reference}")

    assert (waiting.headers["ETag"], waiting.json()["status_version"]) == ('W/"1"', 1)
    assert waiting.headers["Retry-After"] == str(settings.BOOKING_POLL_AFTER_S)
    assert (settled.headers["ETag"], settled.json()["status_version"]) == ('W/"4"', 4)
    assert "Retry-After" not in settled.headers


@pytest.mark.parametrize("if_none_match", ['W/"3"', '"3"', 'W/"1", W/"3"', "*"])
def test_an_unchanged_booking_answers_304_without_a_body(api_client, customer, if_none_match):
    booking = BookingFactory(customer=customer, status=S.PENDING_PARTNER, status_version=3)

    response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}", headers={"If-None-Match": if_none_match})

    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["ETag"] == 'W/"3"'
    assert response.headers["Retry-After"] == str(settings.BOOKING_POLL_AFTER_S)


def test_a_customers_answers_are_private_revalidated_and_vary_by_credential(api_client, customer):
    # An answer tagged for one customer's client must not be served to another by a shared cache,
    # nor by the client's own without asking (its ETag says whether it is still current).
    booking = BookingFactory(customer=customer, status=S.PENDING_PARTNER, status_version=3)
    url = f"{BOOKINGS_URL}/{booking.reference}"

    answers = {
        "detail": api_client.get(url),
        "not modified": api_client.get(url, headers={"If-None-Match": 'W/"3"'}),
        "list": api_client.get(BOOKINGS_URL),
        "not found": api_client.get(f"{BOOKINGS_URL}/BK-NOPE"),
        "unauthenticated": APIClient().get(url),
    }

    assert {name: r.status_code for name, r in answers.items()} == {
        "detail": 200, "not modified": 304, "list": 200, "not found": 404, "unauthenticated": 401,
    }  # fmt: skip
    for name, response in answers.items():
        assert response.headers["Cache-Control"] == "private, no-cache", name
        vary = {value.strip().lower() for value in response.headers["Vary"].split(",")}
        assert {"authorization", "cookie"} <= vary, name


def test_a_changed_booking_answers_in_full_to_an_older_etag(api_client, customer):
    booking = BookingFactory(customer=customer, status=S.PENDING_PARTNER, status_version=3)
    Booking.objects.filter(pk=booking.pk).update(
        status=S.CONFIRMED, customer_status="confirmed", customer_message="confirmed", status_version=4
    )

    response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}", headers={"If-None-Match": 'W/"3"'})

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["status_version"]) == ("confirmed", 4)
    assert response.headers["ETag"] == 'W/"4"'


def test_another_customers_booking_is_not_found(api_client, other_customer):
    # given a booking of another customer
    booking = BookingFactory(customer=other_customer)

    # when this customer asks for it, and for a reference that does not exist
    response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}")
    missing = api_client.get(f"{BOOKINGS_URL}/BK-NONE00")

    # then both are the same 404
    assert response.status_code == missing.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": f"No booking {booking.reference}."}}
    assert missing.json() == {"error": {"code": "not_found", "message": "No booking BK-NONE00."}}


def test_a_reference_in_any_case_finds_my_booking_and_never_another_customers(
    api_client, customer, other_customer, django_capture_on_commit_callbacks
):
    # References are made of one case only: a client that lowers it still names the same booking.
    mine = BookingFactory(customer=customer, status=S.CONFIRMED)
    theirs = BookingFactory(customer=other_customer, status=S.CONFIRMED)

    read = api_client.get(f"{BOOKINGS_URL}/{mine.reference.lower()}")
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = api_client.post(f"{BOOKINGS_URL}/{mine.reference.lower()}/cancel")
    not_theirs = api_client.get(f"{BOOKINGS_URL}/{theirs.reference.lower()}")
    not_cancelled = api_client.post(f"{BOOKINGS_URL}/{theirs.reference.lower()}/cancel")

    assert (read.status_code, read.json()["reference"]) == (200, mine.reference)
    assert (cancelled.status_code, cancelled.json()["reference"]) == (202, mine.reference)
    assert not_theirs.status_code == not_cancelled.status_code == 404
    assert not_theirs.json() == {
        "error": {"code": "not_found", "message": f"No booking {theirs.reference.lower()}."}
    }
    theirs.refresh_from_db()
    assert theirs.status == S.CONFIRMED


def test_a_nul_in_a_reference_is_not_found_not_a_server_error(api_client, customer):
    # `%00` reached the database, whose text cannot hold a NUL: a 500 with an error logged, from
    # anyone with a token. It names no booking, as any other unknown reference.
    booking = BookingFactory(customer=customer, status=S.CONFIRMED)

    read = api_client.get(f"{BOOKINGS_URL}/{booking.reference}%00")
    cancel = api_client.post(f"{BOOKINGS_URL}/{booking.reference}%00/cancel")

    assert read.status_code == cancel.status_code == 404
    assert read.json()["error"]["code"] == cancel.json()["error"]["code"] == "not_found"
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED


# --- list -------------------------------------------------------------------------------------
def test_the_list_holds_only_my_bookings_newest_first(
    api_client, customer, other_customer, django_assert_num_queries
):
    older = BookingFactory(customer=customer)
    newer = BookingFactory(customer=customer)
    BookingFactory(customer=other_customer)

    with django_assert_num_queries(3):  # token, count, page with relations
        response = api_client.get(BOOKINGS_URL)

    assert response.status_code == 200
    assert response.json() == {
        "count": 2,
        "next": None,
        "previous": None,
        "results": [
            booking_json(newer, status="pending", message=PENDING_MESSAGE),
            booking_json(older, status="pending", message=PENDING_MESSAGE),
        ],
    }


def test_the_list_is_paginated(api_client, customer):
    bookings = BookingFactory.create_batch(settings.REST_FRAMEWORK["PAGE_SIZE"] + 1, customer=customer)

    first = api_client.get(BOOKINGS_URL)
    second = api_client.get(first.json()["next"])

    assert first.json()["count"] == 21
    assert len(first.json()["results"]) == 20
    assert first.json()["next"] == f"{SERVER}{BOOKINGS_URL}?page=2"
    assert [row["reference"] for row in second.json()["results"]] == [bookings[0].reference]
    assert second.json()["previous"] == f"{SERVER}{BOOKINGS_URL}"


def test_a_page_out_of_range_is_not_found(api_client, db):
    response = api_client.get(f"{BOOKINGS_URL}?page=9")

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Invalid page."}}


@pytest.mark.parametrize(
    ("status", "states"),
    [
        (
            CustomerStatus.PENDING,
            {S.AWAITING_PAYMENT, S.REQUESTED, S.SUBMITTING, S.PENDING_PARTNER, S.UNKNOWN, S.NEEDS_ATTENTION},
        ),
        (CustomerStatus.CONFIRMED, {S.CONFIRMED}),
        (CustomerStatus.FAILED, {S.REJECTED, S.FAILED, S.EXPIRED}),
        (CustomerStatus.CANCELLING, {S.CANCEL_REQUESTED}),
        (CustomerStatus.CANCELLED, {S.CANCELLED}),
        (CustomerStatus.DISRUPTED, {"confirmed, then taken away"}),
    ],
)
def test_the_list_filters_by_customer_facing_status(api_client, customer, other_customer, status, states):
    # given one booking of mine in every state and one the partner cancelled after confirming
    # it, and another customer's in the same states
    mine = {state: BookingFactory(customer=customer, status=state) for state in S}
    mine["confirmed, then taken away"] = disrupted_booking(customer)
    for state in S:
        BookingFactory(customer=other_customer, status=state)
    disrupted_booking(other_customer)

    # when I filter by a status
    response = api_client.get(BOOKINGS_URL, {"status": status})

    # then I see exactly my bookings the customer sees with that status
    assert response.status_code == 200
    assert {row["reference"] for row in response.json()["results"]} == {
        mine[state].reference for state in states
    }
    assert {row["status"] for row in response.json()["results"]} == {status}


def test_an_unknown_status_filter_is_refused(api_client, db):
    response = api_client.get(BOOKINGS_URL, {"status": "needs_attention"})

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "validation_error",
            "message": "The request is invalid.",
            "fields": {"status": ['"needs_attention" is not a valid choice.']},
        }
    }


# --- cancel -----------------------------------------------------------------------------------
def test_cancel_is_accepted_and_idempotent(api_client, customer, django_capture_on_commit_callbacks):
    # given a confirmed booking
    booking = BookingFactory(customer=customer, status=S.CONFIRMED)
    url = f"{BOOKINGS_URL}/{booking.reference}/cancel"

    # when the customer cancels it twice
    with django_capture_on_commit_callbacks() as first_callbacks:
        first = api_client.post(url)
    with django_capture_on_commit_callbacks() as second_callbacks:
        second = api_client.post(url)

    # then both answers are the same 202, with one timeline row and one queued cancellation
    booking.refresh_from_db()
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert first.json() == booking_json(
        booking, status="cancelling", message=CANCELLING_MESSAGE, code="cancelling", cancellable=False
    )
    assert first.headers["Location"] == f"{SERVER}{BOOKINGS_URL}/{booking.reference}"
    assert first.headers["Retry-After"] == str(settings.BOOKING_POLL_AFTER_S)
    assert booking.status == S.CANCEL_REQUESTED
    assert list(booking.events.values_list("kind", "actor", "actor_label", "from_state")) == [
        ("booking.cancel_requested", "customer", customer.username, "confirmed")
    ]
    assert len(first_callbacks) == 2  # the cancellation queued, the new status published
    assert second_callbacks == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"reason": "Plans changed"}, {"reason": ["Unknown field."]}),
        (["cancel"], {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}),
    ],
    ids=["a-reason", "not-an-object"],
)
def test_a_cancel_with_a_body_is_refused_not_taken_as_recorded(api_client, customer, body, fields):
    booking = BookingFactory(customer=customer, status=S.CONFIRMED)

    response = api_client.post(f"{BOOKINGS_URL}/{booking.reference}/cancel", body, format="json")

    booking.refresh_from_db()
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == fields
    assert booking.status == S.CONFIRMED
    assert booking.events.count() == 0


def test_a_cancel_with_an_empty_object_is_taken(api_client, customer):
    booking = BookingFactory(customer=customer, status=S.CONFIRMED)

    response = api_client.post(f"{BOOKINGS_URL}/{booking.reference}/cancel", {}, format="json")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelling"


def test_cancel_answers_with_a_trailing_slash(api_client, customer):
    booking = BookingFactory(customer=customer)

    response = api_client.post(f"{BOOKINGS_URL}/{booking.reference}/cancel/")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelling"


def test_cancelling_a_cancelled_booking_answers_202(api_client, customer):
    booking = BookingFactory(customer=customer, status=S.CANCELLED)

    response = api_client.post(f"{BOOKINGS_URL}/{booking.reference}/cancel")

    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert booking.events.count() == 0


@pytest.mark.parametrize("state", [S.REJECTED, S.FAILED, S.EXPIRED])
def test_a_finished_booking_is_not_cancellable(
    api_client, customer, state, django_capture_on_commit_callbacks
):
    booking = BookingFactory(customer=customer, status=state)
    shown = booking.customer_message_text  # "The partner could not accept this booking. ..."
    words = shown[0].lower() + shown[1:]

    with django_capture_on_commit_callbacks() as callbacks:
        response = api_client.post(f"{BOOKINGS_URL}/{booking.reference}/cancel")

    booking.refresh_from_db()
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "not_cancellable",
            "message": f"Booking {booking.reference} can no longer be cancelled: {words}",
        }
    }
    assert booking.status == state
    assert booking.events.count() == 0
    assert callbacks == []


def test_a_refused_cancel_says_what_the_customer_is_shown_never_the_internal_state(
    api_client, customer, django_capture_on_commit_callbacks
):
    # given a booking the partner declined while it may still hold a reservation for it: shown
    # pending, the partner being asked to release it
    booking = BookingFactory(customer=customer, status=S.PENDING_PARTNER, submission_count=1)
    PartnerReservationFactory(booking=booking, status="pending")
    with django_capture_on_commit_callbacks(), transaction.atomic():
        apply_transition(lock_booking(booking.pk), "reject", actor=Actor.WORKER)
    shown = api_client.get(f"{BOOKINGS_URL}/{booking.reference}").json()
    assert (shown["status"], shown["message_code"]) == ("pending", "releasing")

    # when the customer cancels it anyway
    response = api_client.post(f"{BOOKINGS_URL}/{booking.reference}/cancel")

    # then the refusal says what they are shown, in the one error shape, never "rejected"
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "not_cancellable",
            "message": f"Booking {booking.reference} can no longer be cancelled: we could not confirm "
            "your booking and are making sure the partner releases it. We will tell you when this is "
            "settled.",
        }
    }
    assert shown["message"].startswith("We could not confirm your booking")


def test_another_customers_booking_cannot_be_cancelled(
    api_client, other_customer, django_capture_on_commit_callbacks
):
    booking = BookingFactory(customer=other_customer, status=S.CONFIRMED)

    with django_capture_on_commit_callbacks() as callbacks:
        response = api_client.post(f"{BOOKINGS_URL}/{booking.reference}/cancel")

    booking.refresh_from_db()
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": f"No booking {booking.reference}."}}
    assert booking.status == S.CONFIRMED
    assert booking.events.count() == 0
    assert callbacks == []


def test_cancel_needs_no_body_and_takes_get_as_not_allowed(api_client, customer):
    booking = BookingFactory(customer=customer)

    response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}/cancel")

    assert response.status_code == 405
    assert response.json() == {
        "error": {"code": "method_not_allowed", "message": 'Method "GET" not allowed.'}
    }


# --- what cancelling would do to the money -----------------------------------------------------
# The stay starts in 30 days (the factory's); free until a day before it, or until 60 days before
# it (already past): a quarter of the 360.00 EUR price, 90.00 EUR, after.
BEFORE_CUT_OFF = {"free_cancellation_hours": 24, "cancellation_fee_percent": Decimal("25")}
AFTER_CUT_OFF = {"free_cancellation_hours": 60 * 24, "cancellation_fee_percent": Decimal("25")}


def paying_booking(customer, state: str = "charged", *, status: str = S.CONFIRMED, **policy) -> Booking:
    charged = Decimal("360.00") if state == "charged" else Decimal(0)
    told = money_of(PaymentFacts(state, "EUR", Decimal("360.00"), charged))
    return BookingFactory(
        customer=customer, offer=OfferFactory(**policy), status=status, customer_money=told.as_json()
    )


def cut_off_of(booking: Booking, hours: int) -> str:
    return iso(datetime.combine(booking.start_date, time.min, tzinfo=UTC) - timedelta(hours=hours))


def test_a_paid_booking_says_what_cancelling_keeps_refunds_and_why_before_it_is_asked(
    api_client, customer, django_assert_num_queries
):
    booking = paying_booking(customer, **AFTER_CUT_OFF)

    with django_assert_num_queries(2):  # the preview reads nothing more than the booking
        response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}")

    cut_off = datetime.combine(booking.start_date, time.min, tzinfo=UTC) - timedelta(days=60)
    assert response.json()["if_cancelled"] == {
        "outcome": "refund_less_fee",
        "message": (
            "Once the cancellation is done, we keep the cancellation fee of 90.00 EUR and refund the "
            "other 270.00 EUR of the 360.00 EUR you paid to your card."
        ),
        "why": (
            f"Free cancellation ended on {cut_off.day} {cut_off:%b %Y}, 00:00 UTC (1440 hours before the "
            "start): the fee is now 25% of the price, 90.00 EUR."
        ),
        "currency": "EUR",
        "fee": "90.00",
        "refund": "270.00",
        "released": "0.00",
        "cut_off": cut_off_of(booking, 60 * 24),
    }


def test_a_paid_booking_before_the_cut_off_is_refunded_in_full_and_says_until_when(api_client, customer):
    booking = paying_booking(customer, **BEFORE_CUT_OFF)

    told = api_client.get(f"{BOOKINGS_URL}/{booking.reference}").json()["if_cancelled"]

    assert (told["outcome"], told["fee"], told["refund"], told["released"]) == (
        "full_refund",
        "0.00",
        "360.00",
        "0.00",
    )
    assert told["cut_off"] == cut_off_of(booking, 24)
    assert told["why"].startswith("Cancelling is free until ")
    assert told["why"].endswith("from then on the fee is 25% of the price, 90.00 EUR.")


def test_a_yen_booking_is_told_in_whole_yen_by_the_api_and_its_page(api_client, customer):
    """Reviewer: the API's money message and the booking's page said "We charged 15000.00 JPY":
    the yen has no decimals (nor the fee of a yen booking, 3750 JPY, nor its refund)."""
    told = money_of(PaymentFacts("charged", "JPY", Decimal("15000.00"), Decimal("15000.00")))
    booking = BookingFactory(
        customer=customer,
        offer=OfferFactory(currency="JPY", unit_price=Decimal("5000.00"), **AFTER_CUT_OFF),
        total_price=Decimal("15000.00"),
        currency="JPY",
        status=S.CONFIRMED,
        customer_money=told.as_json(),
    )

    shown = api_client.get(f"{BOOKINGS_URL}/{booking.reference}").json()

    assert shown["money"]["message"] == "We charged 15000 JPY to your card."
    assert shown["total_price"] == "15000.00"  # the amount fields stay the ledger's decimals
    assert shown["if_cancelled"]["message"] == (
        "Once the cancellation is done, we keep the cancellation fee of 3750 JPY and refund the "
        "other 11250 JPY of the 15000 JPY you paid to your card."
    )
    assert shown["if_cancelled"]["why"].endswith("the fee is now 25% of the price, 3750 JPY.")
    page = Client()
    page.force_login(customer)
    html = " ".join(page.get(f"/bookings/{booking.reference}/").content.decode().split())
    assert "We charged 15000 JPY to your card." in html
    assert "<dd>15000 JPY</dd>" in html
    assert "15000.00" not in html


def test_a_hold_on_a_confirmed_booking_says_the_fee_is_kept_and_the_rest_comes_back_either_way(
    api_client, customer
):
    # Its charge is due from the confirmation on and may be out to the provider: a cancel may find
    # the hold charged in full (the rest refunded) or not yet (the fee taken, the rest released).
    booking = paying_booking(customer, "held", **AFTER_CUT_OFF)

    told = api_client.get(f"{BOOKINGS_URL}/{booking.reference}").json()["if_cancelled"]

    assert (told["outcome"], told["fee"], told["refund"], told["released"]) == (
        "release_or_refund",
        "90.00",
        "0.00",  # 0 until the cancel finds out which
        "0.00",
    )


def test_a_hold_on_a_booking_the_partner_has_not_confirmed_is_released_in_full(api_client, customer):
    booking = paying_booking(customer, "held", status=S.PENDING_PARTNER, **AFTER_CUT_OFF)

    told = api_client.get(f"{BOOKINGS_URL}/{booking.reference}").json()["if_cancelled"]

    assert (told["outcome"], told["fee"], told["released"]) == ("release", "0.00", "360.00")
    assert told["why"] == "Cancelling is free while the partner has not confirmed your booking."
    assert told["cut_off"] == cut_off_of(booking, 60 * 24)  # the policy that applies once confirmed


@pytest.mark.parametrize("status", [S.CANCEL_REQUESTED, S.CANCELLED, S.FAILED])
def test_a_booking_that_cannot_be_cancelled_has_no_preview(api_client, customer, status):
    booking = paying_booking(customer, status=status, **AFTER_CUT_OFF)

    response = api_client.get(f"{BOOKINGS_URL}/{booking.reference}")

    assert (response.json()["if_cancelled"], response.json()["links"]["cancel"]) == (None, None)


def test_the_preview_is_the_cancel_page_s_and_the_fee_the_cancel_then_fixes(api_client, customer):
    booking = paying_booking(customer, **AFTER_CUT_OFF)
    url = f"{BOOKINGS_URL}/{booking.reference}"

    told = api_client.get(url).json()["if_cancelled"]
    page = cancel_money(booking, at=timezone.now())
    cancelled = api_client.post(f"{url}/cancel")

    assert (told["message"], told["why"]) == (page.text, page.why)
    booking.refresh_from_db()
    assert Decimal(told["fee"]) == booking.cancellation_fee == Decimal("90.00")
    assert cancelled.json()["if_cancelled"] is None  # asked for: nothing left to preview


def last_minute_hold(customer) -> Booking:
    """A booking that starts in 2 days (free cancellation ended 60 days before its start), its
    money held, the partner not asked to confirm it yet: cancelling it is free until they do."""
    held = money_of(PaymentFacts("held", "EUR", Decimal("360.00")))
    return BookingFactory(
        customer=customer,
        offer=OfferFactory(**AFTER_CUT_OFF),
        status=S.PENDING_PARTNER,
        start_date=timezone.now().date() + timedelta(days=2),
        customer_money=held.as_json(),
    )


def partner_confirms(booking: Booking) -> None:
    Booking.objects.filter(pk=booking.pk).update(status=S.CONFIRMED, confirmed_shown_at=timezone.now())


def test_a_cancel_that_would_now_cost_more_than_the_fee_shown_is_refused_and_changes_nothing(
    api_client, customer, django_capture_on_commit_callbacks
):
    # given a booking whose preview says cancelling is free
    booking = last_minute_hold(customer)
    url = f"{BOOKINGS_URL}/{booking.reference}"
    shown = api_client.get(url).json()["if_cancelled"]
    assert (shown["outcome"], shown["fee"]) == ("release", "0.00")

    # when the partner confirms it before the client posts the cancel with the fee it showed
    partner_confirms(booking)
    with django_capture_on_commit_callbacks() as callbacks:
        response = api_client.post(f"{url}/cancel", {"expected_fee": shown["fee"]}, format="json")

    # then it is refused in the one error shape, with the new fee, and nothing is cancelled
    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "code": "cancellation_fee_changed",
            "message": (
                f"The cost of cancelling booking {booking.reference} has changed since it was shown to "
                "you. Cancelling is no longer free: it now costs a cancellation fee of 90.00 EUR. Nothing "
                "has been cancelled: check what cancelling does now, and confirm again if you still want "
                "to cancel."
            ),
        }
    }
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CONFIRMED, None)
    assert booking.events.count() == 0
    assert callbacks == []

    # and the preview read again, its fee sent, cancels at that fee
    shown = api_client.get(url).json()["if_cancelled"]
    assert (shown["outcome"], shown["fee"]) == ("release_or_refund", "90.00")
    response = api_client.post(f"{url}/cancel", {"expected_fee": shown["fee"]}, format="json")
    assert response.status_code == 202
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CANCEL_REQUESTED, Decimal("90.00"))


def test_a_cancel_refused_for_a_fee_higher_than_the_one_shown_names_both(api_client, customer):
    booking = paying_booking(customer, **AFTER_CUT_OFF)

    response = api_client.post(
        f"{BOOKINGS_URL}/{booking.reference}/cancel", {"expected_fee": "89.99"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "cancellation_fee_changed"
    assert "The cancellation fee is now 90.00 EUR, not 89.99 EUR." in response.json()["error"]["message"]
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CONFIRMED, None)


@pytest.mark.parametrize("expected", ["90.00", "90", "100.00", 90])
def test_a_cancel_that_costs_the_fee_shown_or_less_goes_ahead_at_the_fee_that_stands(
    api_client, customer, expected
):
    booking = paying_booking(customer, **AFTER_CUT_OFF)

    response = api_client.post(
        f"{BOOKINGS_URL}/{booking.reference}/cancel", {"expected_fee": expected}, format="json"
    )

    assert response.status_code == 202
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CANCEL_REQUESTED, Decimal("90.00"))


def test_a_cancel_without_an_expected_fee_takes_the_fee_as_it_stands_when_asked(api_client, customer):
    # documented: a client that sends no `expected_fee` is not held to a preview it never named
    booking = last_minute_hold(customer)
    api_client.get(f"{BOOKINGS_URL}/{booking.reference}")  # free, then
    partner_confirms(booking)

    response = api_client.post(f"{BOOKINGS_URL}/{booking.reference}/cancel")

    assert response.status_code == 202
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CANCEL_REQUESTED, Decimal("90.00"))


@pytest.mark.parametrize(
    ("fee", "message"),
    [
        ("free", "A valid number is required."),
        ("-1.00", "Ensure this value is greater than or equal to 0."),
        ("1.005", "Ensure that there are no more than 2 decimal places."),
        (None, "This field may not be null."),
    ],
)
def test_an_expected_fee_that_is_not_an_amount_is_refused_and_cancels_nothing(
    api_client, customer, fee, message
):
    booking = paying_booking(customer, **AFTER_CUT_OFF)

    response = api_client.post(
        f"{BOOKINGS_URL}/{booking.reference}/cancel", {"expected_fee": fee}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"expected_fee": [message]}
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert booking.events.count() == 0


def test_the_list_previews_every_cancellable_paid_booking_in_the_same_queries(
    api_client, customer, django_assert_num_queries
):
    paying_booking(customer, **AFTER_CUT_OFF)
    paying_booking(customer, "held", **BEFORE_CUT_OFF)
    paying_booking(customer, status=S.CANCELLED, **AFTER_CUT_OFF)

    with django_assert_num_queries(3):  # token, count, page with relations
        response = api_client.get(BOOKINGS_URL)

    assert [b["if_cancelled"] and b["if_cancelled"]["outcome"] for b in response.json()["results"]] == [
        None,
        "release_or_refund",  # confirmed, held: its charge is due and may be out
        "refund_less_fee",
    ]


# --- offers -----------------------------------------------------------------------------------
def test_offers_lists_active_offers_of_enabled_partners(api_client, offer):
    # given the bookable offer, an inactive one and one of a disabled partner
    OfferFactory(partner=offer.partner, is_active=False)
    OfferFactory(partner=PartnerFactory(enabled=False))

    response = api_client.get("/api/v1/offers")

    assert response.status_code == 200
    assert response.json() == {
        "count": 1,
        "next": None,
        "previous": None,
        "results": [
            {
                "id": offer.pk,
                "product_id": offer.product_id,
                "name": offer.name,
                "unit_price": "120.00",
                "price_unit": "night",
                "currency": "EUR",
                "capacity": 4,
                "partner": {"code": offer.partner.code},
                "cancellation": {
                    "message": "Cancelling is free.",
                    "free_cancellation_hours": 24,
                    "fee_percent": "0.00",
                },
            }
        ],
    }


def test_an_offer_states_its_cancellation_policy(api_client, partner):
    OfferFactory(partner=partner, free_cancellation_hours=48, cancellation_fee_percent=Decimal("25"))

    (offer,) = api_client.get("/api/v1/offers").json()["results"]

    assert offer["cancellation"] == {
        "message": (
            "Cancelling is free until 48 hours before the start; from then on the fee is 25% of the price."
        ),
        "free_cancellation_hours": 48,
        "fee_percent": "25.00",
    }


# --- quotes -----------------------------------------------------------------------------------
def test_a_quote_prices_the_stay_and_expires(api_client, customer, offer):
    body = stay_body(offer)

    response = api_client.post("/api/v1/quotes/", body, format="json")

    quote = Quote.objects.get()
    assert response.status_code == 201
    assert response.json() == {
        "id": str(quote.pk),
        "offer": {"id": offer.pk, "product_id": offer.product_id, "name": offer.name, "price_unit": "night"},
        "start_date": body["start_date"],
        "end_date": body["end_date"],
        "nights": 3,
        "units": 3,
        "last_day": (quote.end_date - timedelta(days=1)).isoformat(),
        "dates_text": stay_dates(quote.start_date, quote.end_date, "night"),
        "guests": 2,
        "total_price": "360.00",
        "currency": "EUR",
        "expires_at": iso(quote.expires_at),
        "cancellation": {
            "message": "Cancelling this booking is free.",
            "free_cancellation_hours": 24,
            "fee_percent": "0.00",
            "free_until": None,
            "fee": "0.00",
            "currency": "EUR",
        },
    }
    assert quote.customer == customer
    assert quote.expires_at - quote.created_at == pytest.approx(settings.QUOTE_TTL, abs=timedelta(seconds=1))


def test_a_one_day_tour_tells_its_day_and_keeps_the_end_date_the_day_after(api_client, partner):
    """Tester: a one-day tour read `"nights": 1`, and its dates as two days."""
    tour = OfferFactory(partner=partner, price_unit="day", unit_price=Decimal("45.00"))
    first = timezone.now().date() + timedelta(days=30)
    body = stay_body(tour, start_date=first.isoformat(), end_date=(first + timedelta(days=1)).isoformat())
    said = f"{first.day} {first:%B} {first.year} (1 day)"

    quote = api_client.post("/api/v1/quotes", body, format="json").json()
    booking = post_booking(api_client, {**body, "quote": quote["id"]}).json()

    for told in (quote, booking):
        assert {
            name: told[name]
            for name in ("start_date", "end_date", "nights", "units", "last_day", "dates_text")
        } == {
            "start_date": first.isoformat(),
            "end_date": (first + timedelta(days=1)).isoformat(),  # exclusive, as stored and sent
            "nights": 1,  # kept for the clients that read it
            "units": 1,
            "last_day": first.isoformat(),
            "dates_text": said,
        }
        assert told["offer"]["price_unit"] == "day"


def test_a_quote_says_what_cancelling_would_cost_for_its_stay_before_booking(api_client, partner):
    # given an offer free to cancel until 48 hours before the start, then a quarter of the price
    offer = OfferFactory(partner=partner, free_cancellation_hours=48, cancellation_fee_percent=Decimal("25"))
    body = stay_body(offer)  # 3 nights from 30 days ahead: 360.00 EUR
    start = datetime.combine(date.fromisoformat(body["start_date"]), time.min, tzinfo=UTC)
    cut_off = start - timedelta(hours=48)

    # when the customer asks for a quote
    response = api_client.post("/api/v1/quotes", body, format="json")

    # then it states the cut-off of this stay and the fee for this price, in the quote page's words
    assert response.status_code == 201
    quote = Quote.objects.get()
    words = (
        f"Cancelling is free until {cut_off.day} {cut_off:%b %Y}, 00:00 UTC (48 hours before the "
        "start); from then on the fee is 25% of the price, 90.00 EUR. A fee is only ever taken from "
        "the card you book with, and only once the partner has confirmed your booking: until then, "
        "cancelling is free."
    )
    assert response.json()["cancellation"] == {
        "message": words,
        "free_cancellation_hours": 48,
        "fee_percent": "25.00",
        "free_until": iso(cut_off),
        "fee": "90.00",
        "currency": "EUR",
    }
    assert stay_policy(quote).terms(at=timezone.now()) == words  # the page's words, from one place

    # and a booking of the quote, once confirmed and paid, is charged that fee from the cut-off on
    booking = BookingFactory(
        offer=offer,
        quote=quote,
        start_date=quote.start_date,
        end_date=quote.end_date,
        total_price=quote.total_price,
        status=S.CONFIRMED,
        customer_money=money_of(
            PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00"))
        ).as_json(),
    )
    assert cancel_money(booking, at=cut_off - timedelta(seconds=1)).fee == Decimal("0.00")
    assert cancel_money(booking, at=cut_off).fee == Decimal("90.00")


def test_a_quote_requires_every_stay_field(api_client, db):
    response = api_client.post("/api/v1/quotes", {"offer": 1}, format="json")

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {
        "start_date": ["This field is required."],
        "end_date": ["This field is required."],
        "guests": ["This field is required."],
    }
    assert Quote.objects.count() == 0


# --- enqueue after commit, through the API ------------------------------------------------------
def test_a_committed_booking_queues_one_submission_on_its_partner_queue(
    api_client, offer, broker, partner_queue, django_capture_on_commit_callbacks
):
    # when the booking request commits
    with django_capture_on_commit_callbacks(execute=True):
        response = post_booking(api_client, stay_body(offer))

    # then exactly one submit_booking message for it waits on the partner's queue
    booking = Booking.objects.get(reference=response.json()["reference"])
    messages = queued_messages(broker, partner_queue)
    assert [(m.actor_name, m.args) for m in messages] == [("submit_booking", (str(booking.pk),))]


# --- a real worker --------------------------------------------------------------------------
@pytest.mark.integration
def test_a_real_worker_picks_up_the_submission(
    transactional_db, partner_queue, worker, broker, settings, api_client, offer
):
    # given a worker consuming the partner's queue; the partner's base_url is a closed port, and
    # the re-send after a failed connect is a minute away, so the booking holds still for us
    settings.PARTNER_RETRY_MIN_S = 60.0
    broker.declare_queue(partner_queue)

    # when a booking is requested over the API (no test transaction: it really commits)
    response = post_booking(api_client, stay_body(offer))
    assert response.status_code == 202
    booking = Booking.objects.get(reference=response.json()["reference"])

    # then a worker ran the submission: it recorded an attempt with our key and, since nothing
    # reached the partner, put the booking back to requested with a deferral on its timeline
    wait_until(
        booking.events.filter(kind="booking.submission_deferred").exists,
        what="a worker to pick the submission up",
    )
    booking.refresh_from_db()
    attempt = PartnerAttempt.objects.get(booking=booking)
    assert (attempt.operation, attempt.outcome, attempt.idempotency_key) == (
        "create",
        "transient",
        booking.partner_key,
    )
    assert booking.status == S.REQUESTED
    assert booking.submission_count == 1
    assert list(booking.events.values_list("kind", flat=True)) == [
        "booking.requested",
        "booking.submitting",
        "partner.attempt.transient",
        "booking.submission_deferred",
    ]


def test_a_cancel_with_a_form_body_is_refused_as_not_json(api_client, customer):
    booking = BookingFactory(customer=customer, status=S.CONFIRMED)

    response = api_client.post(
        f"{BOOKINGS_URL}/{booking.reference}/cancel",
        "reason=x",
        content_type="application/x-www-form-urlencoded",
    )

    booking.refresh_from_db()
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert booking.status == S.CONFIRMED


# --- `?format=` is the customer's own query, never a renderer's ----------------------------------
@pytest.mark.parametrize("given", ["xml", "api", "csv", "json"])
def test_a_format_in_the_query_changes_nothing_of_the_answer(api_client, customer, offer, given):
    """DRF's `?format=` override answered any format but json `404 Not found.`, before
    authentication: a booking that exists said it did not, and a booking was refused."""
    booking = BookingFactory(customer=customer, offer=offer)

    read = api_client.get(f"{BOOKINGS_URL}/{booking.reference}", {"format": given})
    created = api_client.post(
        f"{BOOKINGS_URL}?format={given}", stay_body(offer), format="json", headers={"Idempotency-Key": "f-1"}
    )
    anonymous = APIClient().get(f"{BOOKINGS_URL}/{booking.reference}", {"format": given})

    assert (read.status_code, read["Content-Type"]) == (200, "application/json")
    assert read.json()["reference"] == booking.reference
    assert created.status_code == 202 and created.json()["reference"] != booking.reference
    assert anonymous.status_code == 401


@pytest.mark.django_db
def test_the_schema_still_takes_its_format_in_the_query():
    as_json, as_yaml = (APIClient().get("/api/schema/", {"format": kind}) for kind in ("json", "yaml"))

    assert as_json["Content-Type"].startswith("application/vnd.oai.openapi+json")
    assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi")
    assert as_json.json()["openapi"] == "3.0.3" and as_yaml.content.startswith(b"openapi: 3.0.3")
