"""Parsing of real wire payloads (tests/partners/fixtures) into snapshots; no network, no DB."""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import time_machine

from partners.connectors import CONNECTORS, connector_for
from partners.connectors.base import CreateRequest, PermanentPartnerError
from partners.connectors.http import _answered_exchange, money_string, parse_http_date, parse_retry_after
from partners.connectors.legacy import (
    LegacyConnector,
    from_partner_local,
    parse_booking,
    parse_cancel_response,
    parse_create_response,
    parse_listing,
    rejection_reason,
    to_partner_local,
)
from partners.connectors.legacy import create_body as legacy_create_body
from partners.connectors.reference import (
    MalformedPayload,
    ReferenceConnector,
    UnsupportedEvent,
    parse_reservation,
    parse_webhook,
    parse_webhook_payload,
    webhook_partner_time,
)
from partners.connectors.reference import create_body as reference_create_body
from partners.models import Partner, ReservationStatus

FIXTURES = Path(__file__).parent / "fixtures"
BERLIN = ZoneInfo("Europe/Berlin")
REQUEST = CreateRequest(
    client_reference="BK-7F3K2Q",
    product_id="hotel-42-dbl",
    start_date=date(2027, 3, 1),
    end_date=date(2027, 3, 4),
    guests=2,
    total_price=Decimal("360"),
    currency="EUR",
)


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# --- reference: reservation objects ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "version", "reason", "created_at", "modified_at"),
    [
        (
            "reservation_pending.json",
            ReservationStatus.PENDING,
            1,
            "",
            datetime(2027, 2, 1, 10, 15, 30, 123456, tzinfo=UTC),
            datetime(2027, 2, 1, 10, 15, 30, 123456, tzinfo=UTC),
        ),
        (
            "reservation_confirmed.json",
            ReservationStatus.CONFIRMED,
            2,
            "",
            datetime(2027, 2, 1, 10, 15, 30, tzinfo=UTC),  # "Z"
            datetime(2027, 2, 1, 10, 15, 31, tzinfo=UTC),  # "+01:00"
        ),
        (
            "reservation_rejected.json",
            ReservationStatus.REJECTED,
            2,
            "sold_out",
            datetime(2027, 2, 1, 10, 20, tzinfo=UTC),
            datetime(2027, 2, 1, 10, 20, tzinfo=UTC),
        ),
        (
            "reservation_cancelled.json",
            ReservationStatus.CANCELLED,
            3,
            "cancelled_by_client",
            datetime(2027, 2, 1, 10, 15, 30, tzinfo=UTC),
            datetime(2027, 2, 2, 13, 0, tzinfo=UTC),  # "-05:00"
        ),
    ],
)
def test_reference_reservation_fixtures_parse(
    name: str,
    status: ReservationStatus,
    version: int,
    reason: str,
    created_at: datetime,
    modified_at: datetime,
) -> None:
    # Given a reservation object as the partner sends it
    data = fixture(f"reference/{name}")

    # When it is parsed
    snapshot = parse_reservation(data)

    # Then every field is normalised, and the times are aware and equal to the instants sent
    assert snapshot.partner_ref == data["id"]
    assert snapshot.client_reference == data["client_reference"]
    assert snapshot.status == status
    assert snapshot.version == version
    assert snapshot.reason == reason
    assert snapshot.created_at == created_at
    assert snapshot.modified_at == modified_at
    assert snapshot.created_at.tzinfo is not None
    assert snapshot.modified_at.tzinfo is not None
    assert snapshot.raw == data


def test_reference_reservation_tolerates_missing_optional_fields() -> None:
    snapshot = parse_reservation(fixture("reference/reservation_minimal.json"))

    assert snapshot.partner_ref == "R-min00001"
    assert snapshot.status == ReservationStatus.CONFIRMED
    assert snapshot.client_reference == ""
    assert snapshot.reason == ""
    assert snapshot.version is None
    assert snapshot.created_at is None
    assert snapshot.modified_at is None


def test_reference_reservation_keeps_unknown_fields_in_raw_only() -> None:
    data = fixture("reference/reservation_cancelled.json")

    snapshot = parse_reservation(data)

    assert snapshot.raw["cancelled_by"] == "api"
    assert snapshot.raw["links"] == {"self": "/v1/reservations/R-8d1f3a9c"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "on_hold"}, "unknown reservation status"),
        ({"status": None}, "unknown reservation status"),
        ({"id": None}, "no id"),
        ({"id": ""}, "no id"),
        ({"version": "three"}, "version is not an integer"),
        ({"version": True}, "version is not an integer"),
        ({"updated_at": "yesterday"}, "not an RFC 3339 time"),
        ({"updated_at": "2027-02-01T10:15:30"}, "no UTC offset"),
        ({"created_at": 1790000000}, "not a string"),
    ],
)
def test_reference_reservation_refuses_malformed(change: dict[str, Any], message: str) -> None:
    data = {**fixture("reference/reservation_pending.json"), **change}

    with pytest.raises(MalformedPayload, match=message):
        parse_reservation(data)


@pytest.mark.parametrize("data", [None, [], "R-1", 42])
def test_reference_reservation_must_be_an_object(data: Any) -> None:
    with pytest.raises(MalformedPayload, match="not a JSON object"):
        parse_reservation(data)


def test_reference_reservation_tolerant_forms() -> None:
    # Numeric ids, upper-case status and a numeric-string version are read, not refused.
    data = {**fixture("reference/reservation_pending.json"), "id": 991, "status": "CONFIRMED"}
    data["version"] = "4"

    snapshot = parse_reservation(data)

    assert (snapshot.partner_ref, snapshot.status, snapshot.version) == (
        "991",
        ReservationStatus.CONFIRMED,
        4,
    )


def test_malformed_payload_is_a_value_error() -> None:
    assert issubclass(MalformedPayload, ValueError)
    assert issubclass(UnsupportedEvent, MalformedPayload)


# --- reference: webhooks ----------------------------------------------------------------------


def test_webhook_fixture_parses_to_reservation_and_partner_time() -> None:
    body = fixture("reference/webhook_reservation_updated.json")

    event = parse_webhook(body)
    snapshot = parse_webhook_payload(body)

    assert event.type == "reservation.updated"
    assert event.timestamp == datetime(2027, 2, 1, 10, 15, 32, 500000, tzinfo=UTC)
    assert webhook_partner_time(body) == event.timestamp
    assert snapshot == event.reservation
    assert snapshot.partner_ref == "R-8d1f3a9c"
    assert snapshot.client_reference == "BK-7F3K2Q"
    assert snapshot.status == ReservationStatus.CONFIRMED
    assert snapshot.version == 2


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2027-02-01T10:15:32Z", datetime(2027, 2, 1, 10, 15, 32, tzinfo=UTC)),
        ("2027-02-01T12:15:32+02:00", datetime(2027, 2, 1, 10, 15, 32, tzinfo=UTC)),
        (1801476932, datetime(2027, 2, 1, 10, 15, 32, tzinfo=UTC)),
        (None, None),
    ],
)
def test_webhook_partner_time_forms(timestamp: Any, expected: datetime | None) -> None:
    body = {**fixture("reference/webhook_reservation_updated.json"), "timestamp": timestamp}

    assert webhook_partner_time(body) == expected


def test_webhook_without_timestamp_still_parses() -> None:
    body = fixture("reference/webhook_reservation_updated.json")
    del body["timestamp"]

    assert parse_webhook(body).timestamp is None


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ([], MalformedPayload, "not a JSON object"),
        ({"timestamp": "2027-02-01T10:15:32Z", "data": {}}, MalformedPayload, "no type"),
        ({"type": "reservation.updated"}, MalformedPayload, "no data"),
        ({"type": "reservation.updated", "data": None}, MalformedPayload, "not a JSON object"),
        ({"type": "reservation.updated", "data": {"id": "R-1"}}, MalformedPayload, "status"),
        (
            {"type": "reservation.updated", "timestamp": "soon", "data": {}},
            MalformedPayload,
            "RFC 3339",
        ),
        ({"type": "invoice.paid", "data": {}}, UnsupportedEvent, "unsupported webhook type"),
    ],
)
def test_webhook_refuses_malformed(body: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_webhook_payload(body)


# --- reference: lists and errors ------------------------------------------------------------


def test_lookup_fixture_lists_every_duplicate() -> None:
    body = fixture("reference/lookup_duplicates.json")

    snapshots = [parse_reservation(item) for item in body["data"]]

    assert [(s.partner_ref, s.client_reference, s.status) for s in snapshots] == [
        ("R-aaa00001", "BK-DUP001", ReservationStatus.CONFIRMED),
        ("R-aaa00002", "BK-DUP001", ReservationStatus.PENDING),
    ]


def test_reference_create_body_has_exact_fields_and_types() -> None:
    assert reference_create_body(REQUEST) == {
        "client_reference": "BK-7F3K2Q",
        "product_id": "hotel-42-dbl",
        "start_date": "2027-03-01",
        "end_date": "2027-03-04",
        "guests": 2,
        "total_price": "360.00",
        "currency": "EUR",
    }


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("360"), "360.00"),
        (Decimal("360.5"), "360.50"),
        (Decimal("360.00"), "360.00"),
        (Decimal("1.234"), "1.234"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("0"), "0.00"),
    ],
)
def test_money_string(amount: Decimal, text: str) -> None:
    assert money_string(amount) == text


# --- legacy ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("create_ok.json", ReservationStatus.CONFIRMED, ""),
        ("create_pending.json", ReservationStatus.PENDING, ""),
        ("create_fail_sold_out.json", ReservationStatus.REJECTED, "sold_out"),
        ("create_fail_other.json", ReservationStatus.REJECTED, "pax exceeds capacity"),
    ],
)
def test_legacy_create_response_fixtures_parse(name: str, status: ReservationStatus, reason: str) -> None:
    data = fixture(f"legacy/{name}")

    snapshot = parse_create_response(data, request=REQUEST)

    assert snapshot.partner_ref == str(data["booking_no"])
    assert snapshot.client_reference == "BK-7F3K2Q"  # from our request: the answer has no ref
    assert snapshot.status == status
    assert snapshot.reason == reason
    assert snapshot.version is None
    assert snapshot.modified_at is None
    assert snapshot.created_at is None


def test_legacy_fail_without_booking_number_is_read() -> None:
    snapshot = parse_create_response({"state": "FAIL", "msg": "sold-out"}, request=REQUEST)

    assert (snapshot.partner_ref, snapshot.status, snapshot.reason) == (
        "",
        ReservationStatus.REJECTED,
        "sold_out",
    )


@pytest.mark.parametrize(
    "data",
    [{"state": "OK"}, {"booking_no": 1, "state": "MAYBE"}, {"booking_no": 1}, [], None],
)
def test_legacy_create_response_refuses_malformed(data: Any) -> None:
    with pytest.raises(MalformedPayload):
        parse_create_response(data, request=REQUEST)


@pytest.mark.parametrize(
    ("name", "status", "modified_at"),
    [
        # Berlin winter time is UTC+1 (summer time starts 2027-03-28)
        ("booking_pending.json", ReservationStatus.PENDING, datetime(2027, 1, 15, 8, tzinfo=UTC)),
        (
            "booking_ok.json",
            ReservationStatus.CONFIRMED,
            datetime(2027, 3, 1, 13, 5, 9, tzinfo=UTC),
        ),
        (
            "booking_fail.json",
            ReservationStatus.REJECTED,
            datetime(2027, 1, 15, 8, 0, 1, tzinfo=UTC),
        ),
        # 02:30 happens twice on 2027-10-31: the earlier (summer time, fold=0) is chosen
        (
            "booking_cxl.json",
            ReservationStatus.CANCELLED,
            datetime(2027, 10, 31, 0, 30, tzinfo=UTC),
        ),
    ],
)
def test_legacy_booking_fixtures_parse_local_times_to_utc(
    name: str, status: ReservationStatus, modified_at: datetime
) -> None:
    data = fixture(f"legacy/{name}")

    snapshot = parse_booking(data, BERLIN)

    assert snapshot.partner_ref == str(data["booking_no"])
    assert snapshot.client_reference == data["ref"]
    assert snapshot.status == status
    assert snapshot.modified_at == modified_at
    assert snapshot.modified_at.tzinfo == UTC
    assert snapshot.version is None


def test_legacy_booking_fail_reason() -> None:
    assert parse_booking(fixture("legacy/booking_fail.json"), BERLIN).reason == "sold_out"


def test_legacy_listing_fixtures_parse() -> None:
    page1, next1 = parse_listing(fixture("legacy/listing_page1.json"), BERLIN)
    page2, next2 = parse_listing(fixture("legacy/listing_page2.json"), BERLIN)
    empty, next3 = parse_listing(fixture("legacy/listing_empty.json"), BERLIN)

    assert [(s.partner_ref, s.client_reference, s.status) for s in page1] == [
        ("551230", "BK-7F3K2Q", ReservationStatus.CONFIRMED),
        ("551238", "BK-7F3K2Q", ReservationStatus.PENDING),
        ("551239", "BK-X2", ReservationStatus.CANCELLED),
    ]
    # 03:10 on the day summer time starts is UTC+2
    assert page1[2].modified_at == datetime(2027, 3, 28, 1, 10, tzinfo=UTC)
    assert next1 == 2
    assert [(s.partner_ref, s.status) for s in page2] == [("551240", ReservationStatus.REJECTED)]
    assert next2 is None
    assert (empty, next3) == ((), None)


@pytest.mark.parametrize(
    "data",
    [
        {"next_page": None},
        {"items": {}, "next_page": None},
        {"items": [{"booking_no": 1, "state": "OK", "modified": "later"}], "next_page": None},
        {"items": [{"ref": "BK-1", "state": "OK"}], "next_page": None},
        {"items": [], "next_page": "two"},
        {"items": [], "next_page": "\u00b2"},  # a digit to str.isdigit, not to int()
    ],
)
def test_legacy_listing_refuses_malformed(data: Any) -> None:
    with pytest.raises(MalformedPayload):
        parse_listing(data, BERLIN)


def test_legacy_cancel_fixture_parses() -> None:
    snapshot = parse_cancel_response(fixture("legacy/cancel_ok.json"), BERLIN, partner_ref="551230")

    assert (snapshot.partner_ref, snapshot.status) == ("551230", ReservationStatus.CANCELLED)


def test_legacy_cancel_response_without_state_means_cancelled() -> None:
    snapshot = parse_cancel_response({}, BERLIN, partner_ref="551230")

    assert (snapshot.partner_ref, snapshot.status) == ("551230", ReservationStatus.CANCELLED)
    assert snapshot.raw == {}  # what the partner sent, not what we assumed


def test_legacy_create_body_has_exact_fields_and_types() -> None:
    assert legacy_create_body(REQUEST) == {
        "ref": "BK-7F3K2Q",
        "item": "hotel-42-dbl",
        "from": "2027-03-01",
        "to": "2027-03-04",
        "pax": 2,
        "amount": "360.00",
        "ccy": "EUR",
    }


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2027, 1, 15, 8, 0, 0, 999999, tzinfo=UTC), "2027-01-15 09:00:00"),
        (datetime(2027, 7, 1, 12, 0, tzinfo=UTC), "2027-07-01 14:00:00"),
        (datetime(2027, 7, 1, 9, 0, tzinfo=timezone(timedelta(hours=-5))), "2027-07-01 16:00:00"),
        # both instants of the repeated hour read the same on the partner's wall clock
        (datetime(2027, 10, 31, 0, 30, tzinfo=UTC), "2027-10-31 02:30:00"),
        (datetime(2027, 10, 31, 1, 30, tzinfo=UTC), "2027-10-31 02:30:00"),
    ],
)
def test_to_partner_local(moment: datetime, text: str) -> None:
    assert to_partner_local(moment, BERLIN) == text


def test_to_partner_local_refuses_naive() -> None:
    with pytest.raises(ValueError, match="naive"):
        to_partner_local(datetime(2027, 1, 1), BERLIN)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2027-01-15 09:00:00", datetime(2027, 1, 15, 8, tzinfo=UTC)),
        ("2027-01-15T09:00:00", datetime(2027, 1, 15, 8, tzinfo=UTC)),
        ("2027-01-15 09:00:00.250", datetime(2027, 1, 15, 8, 0, 0, 250000, tzinfo=UTC)),
        ("2027-01-15 09:00:00+00:00", datetime(2027, 1, 15, 9, tzinfo=UTC)),  # an offset wins
        # in the gap of the spring change: read with the offset before it (fold=0)
        ("2027-03-28 02:30:00", datetime(2027, 3, 28, 1, 30, tzinfo=UTC)),
    ],
)
def test_from_partner_local(text: str, expected: datetime) -> None:
    assert from_partner_local(text, BERLIN) == expected


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Sold out", "sold_out"),
        ("SOLD_OUT", "sold_out"),
        ("item is sold-out", "sold_out"),
        ("no availability", "no availability"),
        (None, ""),
    ],
)
def test_rejection_reason(message: Any, reason: str) -> None:
    assert rejection_reason(message) == reason


# --- HTTP header parsing ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 01 Feb 2027 10:15:30 GMT", datetime(2027, 2, 1, 10, 15, 30, tzinfo=UTC)),
        ("Mon, 01 Feb 2027 10:15:30 -0000", datetime(2027, 2, 1, 10, 15, 30, tzinfo=UTC)),
        ("Mon, 01 Feb 2027 11:15:30 +0100", datetime(2027, 2, 1, 10, 15, 30, tzinfo=UTC)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", datetime(1970, 1, 1, tzinfo=UTC)),  # the partner's word
        ("Fri, 31 Dec 9999 23:59:59 -0100", None),  # past what a datetime holds in UTC
        ("not a date", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_http_date(value: str | None, expected: datetime | None) -> None:
    parsed = parse_http_date(value)

    assert parsed == expected
    assert parsed is None or parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("date", "retry_after_s"),
    [
        pytest.param("Mon, 01 Feb 2027 10:15:00 GMT", 40.0, id="from-the-partner-s-clock"),
        pytest.param("Thu, 01 Jan 1970 00:00:00 GMT", 10.0, id="1970-from-ours"),
        pytest.param("Sat, 01 Jan 2000 00:00:00 GMT", 10.0, id="decades-off-from-ours"),
    ],
)
def test_a_retry_after_date_is_counted_from_a_partner_date_only_a_clock_would_write(date, retry_after_s):
    # ours is 10:15:30; the partner says come back at 10:15:40 (its clock) and that it is `date`
    ours = datetime(2027, 2, 1, 10, 15, 30, tzinfo=UTC)
    headers = {"Date": date, "Retry-After": "Mon, 01 Feb 2027 10:15:40 GMT"}

    with time_machine.travel(ours, tick=False):
        exchange = _answered_exchange(503, headers, b"", write=False, started=time.monotonic(), attempts=1)

    assert exchange.retry_after_s == retry_after_s


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-4", 0.0),
        ("Mon, 01 Feb 2027 10:15:40 GMT", 10.0),
        ("Mon, 01 Feb 2027 10:15:00 GMT", 0.0),
        ("86400", 86_400.0),
        ("1e20", 86_400.0),  # a day at most: a larger pause would overflow the retry's time
        ("Fri, 31 Dec 9999 23:59:59 GMT", 86_400.0),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2027, 2, 1, 10, 15, 30, tzinfo=UTC)

    assert parse_retry_after(value, now=now) == expected


# --- registry -------------------------------------------------------------------------------


@pytest.mark.parametrize(("adapter", "cls"), [("reference", ReferenceConnector), ("legacy", LegacyConnector)])
def test_connector_for_chooses_by_adapter(adapter: str, cls: type) -> None:
    partner = Partner(code="p1", adapter=adapter, base_url="http://127.0.0.1:9", timezone="UTC")

    assert isinstance(connector_for(partner), cls)
    assert set(CONNECTORS) == {"reference", "legacy"}


def test_connector_for_unknown_adapter_is_permanent() -> None:
    partner = Partner(code="p1", adapter="carrier-pigeon", base_url="http://127.0.0.1:9")

    with pytest.raises(PermanentPartnerError, match="carrier-pigeon"):
        connector_for(partner)


def test_legacy_connector_refuses_unknown_timezone() -> None:
    partner = Partner(code="p1", adapter="legacy", base_url="http://x", timezone="Mars/Olympus")

    with pytest.raises(ValueError, match="unknown timezone"):
        LegacyConnector(partner)
