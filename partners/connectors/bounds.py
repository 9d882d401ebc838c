"""Bounds on every value a partner sends: what a booking can mean and our records can hold.

Both protocols' parsers read each field through these functions, for call answers and webhooks
alike, so a value out of range is refused at the edge, whole and with its field named, before
anything is stored, ordered or compared. Nothing out of range can reach a worker as a database
error that its retries would repeat for ever (an integer past the column, a NUL in a string, a
year-1 time that overflows when converted).

`OutOfRange` is permanent for the payload that carries it: the same bytes are refused again on
every try. What follows depends on the caller: an answer is refused (and counted on its attempt),
a webhook is refused with 400.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bookings.currencies import currency_error
from bookings.dates import NotADate, parse_date
from config.text import valid_unicode
from partners.connectors.http import MalformedPayload

# PartnerReservation.version and PartnerObservation.version are PositiveIntegerFields: int4 on
# PostgreSQL.
MAX_VERSION = 2**31 - 1
# partner_ref, client_reference and reason are CharField(max_length=100).
MAX_TEXT_LENGTH = 100
# Partner times (created, modified, webhook timestamps) and stay dates: a window no real
# booking leaves, checked on the wall-clock value so that converting it cannot overflow.
EARLIEST_YEAR = 2000
LATEST_YEAR = 2099
MAX_GUESTS = 999
# Booking.total_price is DecimalField(max_digits=12, decimal_places=2).
MAX_AMOUNT = Decimal("9999999999.99")
# Money as the protocols write it: digits, and a fraction after a point (never an exponent).
DECIMAL = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,16})?")
CENT = Decimal("0.01")
CURRENCY = re.compile(r"^[A-Za-z]{3}$")
# ASCII digits only: `\d` also matches other scripts' digits (fullwidth, Arabic-Indic), which int() reads.
INTEGER = re.compile(r"-?[0-9]{1,30}")
# How deep a payload we keep may nest (the stored JSON of an answer or webhook).
MAX_PAYLOAD_DEPTH = 16
SHOWN_CHARS = 40


class OutOfRange(MalformedPayload):
    """A partner value of the right kind but outside what a booking can mean or we can store."""

    code = "out_of_range"

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(f"{field} out of range: {_shown(value)} (expected {expected})")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def identifier(value: Any, *, field: str) -> str:
    """A partner id or booking number, kept as text: a non-empty string or an integer."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        raise MalformedPayload(f"{field} is not an id: {_shown(value)}")
    return _storable_text(str(value), field=field, max_length=MAX_TEXT_LENGTH)


def text(value: Any, *, field: str, max_length: int = MAX_TEXT_LENGTH) -> str:
    """An optional short text ("" when absent)."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise MalformedPayload(f"{field} is not text: {_shown(value)}")
    return _storable_text(str(value), field=field, max_length=max_length)


def _storable_text(value: str, *, field: str, max_length: int) -> str:
    if len(value) > max_length:
        raise OutOfRange(field, value, f"at most {max_length} characters")
    _check_string(value, field=field)
    return value


def _check_string(value: str, *, field: str) -> None:
    # PostgreSQL stores neither a NUL nor a lone surrogate (json.loads lets both through).
    if "\x00" in value:
        raise OutOfRange(field, value, "no NUL character")
    if not valid_unicode(value):
        raise OutOfRange(field, value, "valid Unicode")


def version(value: Any, *, field: str = "version") -> int | None:
    """A reservation version: an integer (or a string of digits) from 0 to MAX_VERSION."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedPayload(f"{field} is not an integer: {_shown(value)}")
    if isinstance(value, str) and INTEGER.fullmatch(value.strip()):
        value = int(value.strip())
    if not isinstance(value, int):
        raise MalformedPayload(f"{field} is not an integer: {_shown(value)}")
    if not 0 <= value <= MAX_VERSION:
        raise OutOfRange(field, value, f"an integer from 0 to {MAX_VERSION}")
    return value


def moment(value: datetime, *, field: str) -> datetime:
    """A partner time, as parsed (aware or not), inside the years we accept."""
    if not EARLIEST_YEAR <= value.year <= LATEST_YEAR:
        raise OutOfRange(field, value.isoformat(), f"a time in {EARLIEST_YEAR}-{LATEST_YEAR}")
    return value


def unix_time(value: int | float, *, field: str) -> datetime:
    """Unix seconds as an aware UTC time, inside the years we accept."""
    if isinstance(value, float) and not math.isfinite(value):
        raise OutOfRange(field, value, "finite unix seconds")
    try:
        parsed = datetime.fromtimestamp(value, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise OutOfRange(field, value, f"unix seconds in {EARLIEST_YEAR}-{LATEST_YEAR}") from None
    return moment(parsed, field=field)


def stay_date(value: Any, *, field: str) -> date | None:
    """A stay date `YYYY-MM-DD` (None when absent), blanks around it ignored: by the customer's one
    date rule (`bookings.dates`), not `date.fromisoformat`, which also reads `2027-W09-3` (an ISO
    week date: some day, compared with ours as if the partner had said it)."""
    if value is None:
        return None
    try:
        parsed = parse_date(value.strip() if isinstance(value, str) else value)
    except NotADate:
        raise MalformedPayload(f"{field} is not a date YYYY-MM-DD: {_shown(value)}") from None
    if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
        raise OutOfRange(field, value, f"a date in {EARLIEST_YEAR}-{LATEST_YEAR}")
    return parsed


def guests(value: Any, *, field: str = "guests") -> int | None:
    """A number of guests from 1 to MAX_GUESTS (None when absent)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedPayload(f"{field} is not an integer: {_shown(value)}")
    if not 1 <= value <= MAX_GUESTS:
        raise OutOfRange(field, value, f"an integer from 1 to {MAX_GUESTS}")
    return value


def amount(value: Any, *, field: str) -> Decimal | None:
    """Money as a decimal string (or an integer): finite, not negative, whole cents, at most
    MAX_AMOUNT (None when absent). Never a float: its binary value is not the partner's amount."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MalformedPayload(f"{field} is not a decimal string: {_shown(value)}")
    text = str(value)
    if not DECIMAL.fullmatch(text):  # no sign, exponent, padding or "NaN": the protocol's spelling
        raise OutOfRange(field, value, 'a decimal string such as "360.00"')
    try:
        parsed = Decimal(text)
    except InvalidOperation:
        raise OutOfRange(field, value, 'a decimal string such as "360.00"') from None
    if not parsed.is_finite() or parsed < 0 or parsed > MAX_AMOUNT:
        raise OutOfRange(field, value, f"an amount from 0 to {MAX_AMOUNT}")
    if parsed != parsed.quantize(CENT):
        raise OutOfRange(field, value, "whole cents")
    return parsed


def currency(value: Any, *, field: str = "currency") -> str:
    """A currency we price in, upper-cased ("" when absent): the rule our offers' codes keep
    (`bookings.currencies`, ISO 4217's active codes with a minor unit). Three letters ISO does not
    list are no statement of terms to compare with ours, but an unreadable value; a real currency
    other than the booking's is the partner's to explain (a mismatch, `decisions.terms_differences`)."""
    if value is None:
        return ""
    if (
        not isinstance(value, str)
        or not CURRENCY.match(value.strip())
        or currency_error(value.strip().upper())
    ):
        raise OutOfRange(field, value, "an ISO 4217 currency code with a minor unit, such as EUR")
    return value.strip().upper()


def payload(data: Any, *, field: str = "payload") -> Any:
    """A parsed JSON value we are about to store as it came: no NUL or lone surrogate in any
    string, no NaN or infinity (Python's JSON reader accepts both), nested at most
    MAX_PAYLOAD_DEPTH deep. Returned unchanged."""
    _check_json(data, field=field, depth=0)
    return data


def _check_json(value: Any, *, field: str, depth: int) -> None:
    if depth > MAX_PAYLOAD_DEPTH:
        raise OutOfRange(field, "...", f"JSON nested at most {MAX_PAYLOAD_DEPTH} deep")
    if isinstance(value, str):
        _check_string(value, field=field)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise OutOfRange(field, value, "finite numbers")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_string(str(key), field=field)
            _check_json(item, field=f"{field}.{key}", depth=depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, field=f"{field}[{index}]", depth=depth + 1)
