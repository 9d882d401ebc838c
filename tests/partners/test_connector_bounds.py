"""Out-of-range partner values are refused at the edge, whole, with the field named: the bounds
themselves, each protocol's parser fed the very values the sandbox's `garbage_values_rate` sends,
and real sandbox processes that send them: refused, counted on the attempt, never applied, and
after the configured tries the booking is support's."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bookings.states import BookingState
from partners.connectors import bounds
from partners.connectors.base import Terms
from partners.connectors.bounds import OutOfRange
from partners.connectors.http import MalformedPayload
from partners.connectors.legacy import parse_booking, parse_listing
from partners.connectors.reference import parse_reservation, parse_webhook
from partners.messages import FollowUp
from partners.models import Operation, Outcome, PartnerAttempt, PartnerObservation
from partners.services.listing import change_listing_walk
from partners.services.submission import submission_run
from partners.services.sync import booking_sync
from sandbox.garbage import AMOUNTS, VERSIONS
from sandbox.legacy import GARBAGE as LEGACY_GARBAGE
from sandbox.reference import GARBAGE as REFERENCE_GARBAGE
from tests.partners.conftest import book, timeline

S = BookingState

FIXTURES = Path(__file__).parent / "fixtures"
BERLIN = ZoneInfo("Europe/Berlin")
LEGACY_BOOKING = {
    "booking_no": 551230,
    "ref": "BK-7F3K2Q",
    "state": "OK",
    "modified": "2027-03-01 14:05:09",
    "from": "2027-03-01",
    "to": "2027-03-04",
    "pax": 2,
    "amount": "360.00",
    "ccy": "EUR",
}


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# --- the bounds, one by one -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (0, 0), (1, 1), ("7", 7), (" 12 ", 12), (bounds.MAX_VERSION, bounds.MAX_VERSION)],
)
def test_version_in_range(value: Any, expected: int | None) -> None:
    assert bounds.version(value) == expected


@pytest.mark.parametrize("value", [*VERSIONS, bounds.MAX_VERSION + 1, "-3", "9" * 30])
def test_version_out_of_range(value: Any) -> None:
    expected = r"^version out of range: .* \(expected an integer from 0 to 2147483647\)$"
    with pytest.raises(OutOfRange, match=expected):
        bounds.version(value)


# Other scripts' digits (fullwidth, Arabic-Indic): "a string of digits" is ASCII digits, as everywhere.
@pytest.mark.parametrize("value", [True, 1.5, "three", "9" * 31, [], {}, "\uff11", "\u0661", "1\u0662"])
def test_version_of_the_wrong_kind_is_malformed_not_out_of_range(value: Any) -> None:
    with pytest.raises(MalformedPayload, match="version is not an integer") as raised:
        bounds.version(value)
    assert not isinstance(raised.value, OutOfRange)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2000, 1, 1, tzinfo=UTC),
        datetime(2099, 12, 31, 23, 59, tzinfo=UTC),
        datetime(2027, 2, 1, 10, 15),  # a legacy wall-clock time, checked before its zone is added
    ],
)
def test_moment_in_range(value: datetime) -> None:
    assert bounds.moment(value, field="updated_at") is value


@pytest.mark.parametrize(
    "value",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59),
    ],
)
def test_moment_out_of_range(value: datetime) -> None:
    with pytest.raises(OutOfRange, match=r"^updated_at out of range: .* \(expected a time in 2000-2099\)$"):
        bounds.moment(value, field="updated_at")


@pytest.mark.parametrize("value", [-(2**62), 2**62, 4_102_444_800, float("nan"), float("inf")])
def test_unix_time_out_of_range(value: float) -> None:
    with pytest.raises(OutOfRange, match=r"^timestamp out of range"):
        bounds.unix_time(value, field="timestamp")


def test_unix_time_in_range() -> None:
    assert bounds.unix_time(1801476932, field="timestamp") == datetime(2027, 2, 1, 10, 15, 32, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("2027-03-01", date(2027, 3, 1)), (" 2027-03-01 ", date(2027, 3, 1))],
)
def test_stay_date(value: Any, expected: date | None) -> None:
    assert bounds.stay_date(value, field="start_date") == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("0001-01-01", OutOfRange),
        ("9999-12-31", OutOfRange),
        ("2027-02-30", MalformedPayload),
        ("2027-3-1", MalformedPayload),
        (20270301, MalformedPayload),
        # Python's fromisoformat reads these as some day, which was then compared with ours.
        ("2027-W09-3", MalformedPayload),
        ("2027W093", MalformedPayload),
        ("2027-060", MalformedPayload),
        ("\uff12027-03-01", MalformedPayload),
    ],
)
def test_stay_date_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^start_date"):
        bounds.stay_date(value, field="start_date")


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), (1, 1), (bounds.MAX_GUESTS, bounds.MAX_GUESTS)]
)
def test_guests_in_range(value: Any, expected: int | None) -> None:
    assert bounds.guests(value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (0, OutOfRange),
        (-2, OutOfRange),
        (bounds.MAX_GUESTS + 1, OutOfRange),
        ("2", MalformedPayload),
        (True, MalformedPayload),
    ],
)
def test_guests_refused(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"^guests"):
        bounds.guests(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("360.00", Decimal("360.00")),
        ("360", Decimal("360")),
        ("360.000", Decimal("360.000")),  # whole cents, written with three places
        (360, Decimal("360")),
        ("0", Decimal("0")),
        ("9999999999.99", bounds.MAX_AMOUNT),
    ],
)
def test_amount_in_range(value: Any, expected: Decimal | None) -> None:
    assert bounds.amount(value, field="total_price") == expected


@pytest.mark.parametrize(
    "value",
    [
        *AMOUNTS,
        "-1.00",
        "10000000000.00",
        "360.005",
        "Infinity",
        "-NaN",
        "1e400",
        # The protocols' spelling only: never an exponent, a sign or padding.
        "1e3",
        "3.6E+2",
        "+360",
        " 360.00",
        "360.00 ",
        "360.",
        ".5",
        "٣٦٠",  # digits, but not ASCII ones
    ],
)
def test_amount_out_of_range(value: Any) -> None:
    with pytest.raises(OutOfRange, match=r"^total_price out of range"):
        bounds.amount(value, field="total_price")


@pytest.mark.parametrize("value", [360.0, True, ["360.00"]])
def test_amount_of_the_wrong_kind_is_malformed(value: Any) -> None:
    with pytest.raises(MalformedPayload, match=r"^total_price is not a decimal string") as raised:
        bounds.amount(value, field="total_price")
    assert not isinstance(raised.value, OutOfRange)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, ""), ("EUR", "EUR"), ("eur", "EUR"), (" JPY ", "JPY"), ("CLF", "CLF")]
)
def test_currency(value: Any, expected: str) -> None:
    assert bounds.currency(value) == expected


# Three letters are not a currency: a code ISO 4217 does not list (made up, or withdrawn as HRK
# was), or one that prices nothing (no currency, gold), is refused as our offers' are
# (bookings/currencies.py); a real currency other than the booking's is a mismatch instead.
@pytest.mark.parametrize("value", ["EURO", "E1R", "", 978, "XYZ", "ABC", "HRK", "XXX", "XAU"])
def test_currency_refused(value: Any) -> None:
    with pytest.raises(OutOfRange, match=r"^currency out of range: .* \(expected an ISO 4217 currency code"):
        bounds.currency(value)


@pytest.mark.parametrize("value", ["XYZ", "xyz"])
def test_a_made_up_currency_refuses_the_answer_whole_in_either_protocol(value: str) -> None:
    with pytest.raises(OutOfRange, match=r"^currency out of range"):
        parse_reservation({**fixture("reference/reservation_confirmed.json"), "currency": value})
    with pytest.raises(OutOfRange, match=r"^ccy out of range"):
        parse_booking({**LEGACY_BOOKING, "ccy": value}, BERLIN)


@pytest.mark.parametrize(
    "value", ["R-" + "x" * 99, "bad\x00id", "lone \ud800 surrogate"], ids=["too long", "NUL", "surrogate"]
)
def test_identifier_refuses_what_a_column_cannot_hold(value: str) -> None:
    with pytest.raises(OutOfRange, match=r"^id out of range"):
        bounds.identifier(value, field="id")


@pytest.mark.parametrize("value", [None, "", True, 1.5, {"id": 1}])
def test_identifier_of_the_wrong_kind_is_malformed(value: Any) -> None:
    with pytest.raises(MalformedPayload, match=r"^id is not an id"):
        bounds.identifier(value, field="id")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"note": "a\x00b"}, "payload.note"),
        ({"score": float("nan")}, "payload.score"),
        ({"items": [1, {"x": float("-inf")}]}, r"payload.items\[1\].x"),
        ({"a\x00": 1}, "payload"),
    ],
)
def test_payload_refuses_what_the_database_cannot_store(data: Any, field: str) -> None:
    with pytest.raises(OutOfRange, match=f"^{field} out of range"):
        bounds.payload(data)


def test_payload_refuses_deep_nesting_and_returns_what_it_accepts() -> None:
    deep: Any = "leaf"
    for _ in range(bounds.MAX_PAYLOAD_DEPTH + 1):
        deep = [deep]
    with pytest.raises(OutOfRange, match="nested at most 16 deep"):
        bounds.payload(deep)
    fine = {"id": "R-1", "n": 2**70, "f": 1.5, "list": [None, True, "ok"]}
    assert bounds.payload(fine) is fine


def test_out_of_range_is_a_malformed_payload_with_its_own_code() -> None:
    problem = OutOfRange("version", 2**63, "an integer")

    assert isinstance(problem, MalformedPayload)
    assert (problem.code, MalformedPayload("x").code) == ("out_of_range", "malformed_payload")
    assert (problem.field, problem.value) == ("version", 2**63)


# --- the parsers, fed the sandbox's garbage -------------------------------------------------------


def test_reference_reservation_carries_its_terms() -> None:
    snapshot = parse_reservation(fixture("reference/reservation_confirmed.json"))

    assert snapshot.terms == Terms(
        start_date=date(2027, 3, 1),
        end_date=date(2027, 3, 4),
        guests=2,
        total_price=Decimal("360.00"),
        currency="EUR",
    )


def test_reference_reservation_without_terms_has_empty_terms() -> None:
    assert parse_reservation(fixture("reference/reservation_minimal.json")).terms == Terms()


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in REFERENCE_GARBAGE.items() for value in values],
)
def test_reference_reservation_refuses_each_garbage_value(field: str, value: Any) -> None:
    data = {**fixture("reference/reservation_confirmed.json"), field: value}

    with pytest.raises(OutOfRange, match=f"^{field} out of range"):
        parse_reservation(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in REFERENCE_GARBAGE.items() for value in values],
)
def test_reference_webhook_refuses_each_garbage_value(field: str, value: Any) -> None:
    body = copy.deepcopy(fixture("reference/webhook_reservation_updated.json"))
    body["data"][field] = value

    with pytest.raises(OutOfRange, match=f"^{field} out of range"):
        parse_webhook(body)


@pytest.mark.parametrize("timestamp", [-(2**62), 2**62, "0001-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00"])
def test_reference_webhook_refuses_an_out_of_range_timestamp(timestamp: Any) -> None:
    body = {**fixture("reference/webhook_reservation_updated.json"), "timestamp": timestamp}

    with pytest.raises(OutOfRange, match=r"^timestamp out of range"):
        parse_webhook(body)


def test_legacy_booking_carries_the_terms_it_echoes() -> None:
    snapshot = parse_booking(LEGACY_BOOKING, BERLIN)

    assert snapshot.terms == Terms(
        start_date=date(2027, 3, 1),
        end_date=date(2027, 3, 4),
        guests=2,
        total_price=Decimal("360.00"),
        currency="EUR",
    )
    assert snapshot.modified_at == datetime(2027, 3, 1, 13, 5, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in LEGACY_GARBAGE.items() for value in values],
)
def test_legacy_booking_refuses_each_garbage_value(field: str, value: Any) -> None:
    # Year 1 and 9999 in Berlin's wall time would overflow on conversion: refused before it.
    with pytest.raises(OutOfRange, match=f"^{field} out of range"):
        parse_booking({**LEGACY_BOOKING, field: value}, BERLIN)


def test_legacy_listing_is_refused_whole_for_one_garbage_entry() -> None:
    good = dict(LEGACY_BOOKING)
    bad = {**LEGACY_BOOKING, "booking_no": 551231, "amount": "N/A"}

    with pytest.raises(OutOfRange, match=r"^amount out of range"):
        parse_listing({"items": [good, bad], "next_page": None}, BERLIN)


# --- a real partner that sends out-of-range values ----------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_a_confirmed_booking_whose_partner_keeps_sending_garbage_goes_to_support_after_its_tries(
    harness, settings, profile
):
    # Given a confirmed booking, then a partner whose every answer carries an out-of-range value
    settings.PARTNER_REFUSED_MAX_TRIES = 3
    h = harness(profile)
    booking = book(h)
    submission_run(booking.pk)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    h.faults(garbage_values_rate=1)
    observed = PartnerObservation.objects.filter(booking=booking).count()

    # When it is synced as often as the tries allow
    follow_ups = [booking_sync(booking.pk) for _ in range(3)]

    # Then each answer was refused at the edge (recorded on its attempt, never applied), no
    # sync asked for another (a confirmed booking's audit comes round again), and after the
    # third support has the booking with the reason
    reads = PartnerAttempt.objects.filter(booking=booking, operation=Operation.GET).order_by("started_at")
    assert [(a.outcome, bool(a.refusal)) for a in reads] == [(Outcome.TRANSIENT, True)] * 3
    assert all(" out of range: " in a.refusal for a in reads)
    assert PartnerObservation.objects.filter(booking=booking).count() == observed
    assert follow_ups == [FollowUp(), FollowUp(), FollowUp()]
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_data_refused")
    assert booking.attention_detail.startswith("3 partner answers in a row refused at our edge; the last: ")
    assert timeline(booking).count("sync.failed") == 3


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_usable_answer_between_refused_ones_starts_the_count_again(harness, settings):
    settings.PARTNER_REFUSED_MAX_TRIES = 2
    h = harness("reference")
    booking = book(h)
    submission_run(booking.pk)

    h.faults(garbage_values_rate=1)
    booking_sync(booking.pk)
    h.faults(garbage_values_rate=0)
    booking_sync(booking.pk)
    h.faults(garbage_values_rate=1)
    booking_sync(booking.pk)

    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.CONFIRMED, "")


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_garbage_listing_page_stops_the_walk_where_it_was(harness):
    # Given a legacy partner with a booking in its listing, and a walk that has read it once
    h = harness("legacy")
    booking = book(h)
    submission_run(booking.pk)
    change_listing_walk(h.partner.pk)
    h.partner.refresh_from_db()
    checkpoint = h.partner.listing_checkpoint

    # When every listing answer carries an out-of-range value
    h.faults(garbage_values_rate=1)
    applied = change_listing_walk(h.partner.pk)

    # Then nothing of it is applied, the checkpoint stays, and the refusal is on the attempt
    h.partner.refresh_from_db()
    assert (applied, h.partner.listing_checkpoint) == (0, checkpoint)
    walk = PartnerAttempt.objects.filter(partner=h.partner, operation=Operation.LIST).latest("started_at")
    assert (walk.outcome, walk.refusal.split(" out of range: ")[0] in ("modified", "amount")) == (
        Outcome.TRANSIENT,
        True,
    )


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_lookup_the_partner_refuses_for_good_hands_the_fenced_booking_over_at_once(harness, settings):
    # Given a legacy partner registered as if it could look bookings up (it cannot: every
    # lookup is refused for good), and a booking whose create timed out after the commit
    h = harness("legacy", capabilities=["lookup_by_reference"])
    h.faults(timeout_after_commit_rate=1)
    booking = book(h)
    submission_run(booking.pk)
    booking.refresh_from_db()
    assert booking.status == S.UNKNOWN

    # When its sync asks what the partner holds
    follow_up = booking_sync(booking.pk)

    # Then support has it at once, fenced still, and no sync is asked for again
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_not_supported")
    assert follow_up == FollowUp()
    assert PartnerAttempt.objects.fencing().filter(booking=booking).count() == 1
