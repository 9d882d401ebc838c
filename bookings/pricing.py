"""Validation and pricing of a stay. The price is always computed here, never taken from a client.

A stay is priced by the days from its start date to its end date, whatever the offer sells: the
offer's `price_unit` names what each of them is for the customer (a night, a day), and
`unit_count`, `price_per_unit` and `stay_dates` are those words.

Stored and sent to partners, a stay's end date is exclusive, whatever the unit: the day after the
last day. A night offer is told so ("1 April 2027 to 3 April 2027 (2 nights)": the day you leave);
a day offer by its days, the last one included ("1 April 2027 (1 day)", "1 to 3 April 2027 (3
days)"), never by the day after its last."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.utils import timezone

from bookings.dates import MONTHS
from bookings.models import CancellationTerms, Offer, PriceUnit
from config.errors import INVALID_REQUEST, ValidationFailed

CENT = Decimal("0.01")
GUESTS_REQUIRED = "At least one guest is required."
AT_LEAST_ONE_DAY = "A booking covers at least 1 day."
# Currencies whose smallest unit is not the hundredth as the payment provider counts its minor
# units (Stripe's zero- and three-decimal currencies): whole units, or thousandths; every other has
# two. These are the integers on the wire, so the provider's count, not ISO 4217's minor units,
# which differ for a few: ISO gives MGA 2 decimals (whole units here), ISK and UYI 0, IQD and LYD 3,
# CLF and UYW 4 (hundredths here). Which codes are currencies at all is bookings.currencies.
_WHOLE_UNITS = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"
_THOUSANDTHS = "BHD JOD KWD OMR TND"
MINOR_UNIT_EXPONENTS = {**dict.fromkeys(_WHOLE_UNITS.split(), 0), **dict.fromkeys(_THOUSANDTHS.split(), 3)}


def unit_count(count: int, unit: str) -> str:
    """A number of an offer's price units (`Offer.price_unit`) in words: 1 night, 3 days."""
    return f"{count} {unit}{'' if count == 1 else 's'}"


def price_per_unit(offer: Offer) -> str:
    """An offer's price in words, per its unit: 120.00 EUR a night, 45.00 EUR a day, 15000 JPY
    a night (`amount_text`)."""
    return f"{amount_text(offer.unit_price, offer.currency)} a {offer.price_unit}"


def _day(day: date, *, month: bool = True, year: bool = True) -> str:
    return " ".join(
        [str(day.day), *([MONTHS[day.month - 1]] if month else []), *([str(day.year)] if year else [])]
    )


def last_day(start_date: date, end_date: date) -> date:
    """A stay's last day (a tour's, or the last night of a room): the day before its end date."""
    return max(end_date - timedelta(days=1), start_date)


def stay_dates(start_date: date, end_date: date, price_unit: str) -> str:
    """A stay's dates as every page, mail and the console tell them, from its stored (exclusive)
    end date: a night offer's from the day you arrive to the day you leave, "1 April 2027 to 3
    April 2027 (2 nights)"; a day offer's as its days, the last included, "1 April 2027 (1 day)",
    "1 to 3 April 2027 (3 days)", "30 April to 2 May 2027 (3 days)"."""
    count = unit_count((end_date - start_date).days, price_unit)
    if price_unit != PriceUnit.DAY:
        return f"{_day(start_date)} to {_day(end_date)} ({count})"
    last = last_day(start_date, end_date)
    if last == start_date:
        return f"{_day(start_date)} ({count})"
    same_year = last.year == start_date.year
    first = _day(start_date, month=not (same_year and last.month == start_date.month), year=not same_year)
    return f"{first} to {_day(last)} ({count})"


def stay_dates_of(stay: object) -> str:
    """`stay_dates` of a quote or a booking (anything with dates and an offer)."""
    return stay_dates(stay.start_date, stay.end_date, stay.offer.price_unit)  # type: ignore[attr-defined]


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of the currency's smallest unit (2 for most, 0 for the yen)."""
    return MINOR_UNIT_EXPONENTS.get(currency.upper(), 2)


def amount_text(amount: Decimal, currency: str) -> str:
    """An amount as a person is told it, on a page, in the API's messages and in a mail: with as
    many decimals as the currency's smallest unit has (`minor_unit_exponent`), "15000 JPY",
    "360.00 EUR", "12.500 KWD". Our ledger keeps every amount to the cent (15000.00 JPY), so an
    amount finer than its currency's unit (a yen price with a service fee of 2.50) keeps its
    cents, "15002.50 JPY": never rounded away from what is charged or refused."""
    places = minor_unit_exponent(currency)
    for shown in sorted({places, max(places, 2)}):
        if amount == amount.quantize(Decimal(1).scaleb(-shown)):
            return f"{amount:.{shown}f} {currency}"
    return f"{amount.normalize():f} {currency}"


# An amount of money as a person writes it, in a console form or a command (a refund, an offer's
# price): digits 0-9, then at most a point and the cents (`written_as_amount`). Decimal() reads
# far more, all refused: other scripts' digits (Arabic-Indic ones, fullwidth ones), an exponent
# (1e1 is 10), a sign, "_" between digits, padding, ".5", "5." and decimals past the currency's
# ("1.000 EUR" is a thousand where the point groups thousands).
_WRITTEN_AS_AN_AMOUNT = re.compile(r"[0-9]+(?:\.(?P<decimals>[0-9]+))?")
AMOUNT_WRITTEN = "digits 0-9, with a point before the cents (12.50)"


def written_as_amount(text: object, currency: str) -> bool:
    """Is `text` an amount of `currency` written as `AMOUNT_WRITTEN` says: at most as many
    decimals as the currency's smallest unit has, or two, as our ledger writes every amount
    (1500.00 JPY)? Its value's bounds are the caller's: more than 0, at most what it may be, a
    whole number of the currency's smallest unit (1500.50 JPY is not), kept to the cent."""
    if not isinstance(text, str) or not (written := _WRITTEN_AS_AN_AMOUNT.fullmatch(text)):
        return False
    return len(written["decimals"] or "") <= max(2, minor_unit_exponent(currency))


@dataclass(frozen=True)
class Stay:
    offer: Offer
    start_date: date
    end_date: date
    guests: int

    @property
    def nights(self) -> int:
        return (self.end_date - self.start_date).days


@dataclass(frozen=True)
class Price:
    unit_price: Decimal
    nights: int
    fee: Decimal
    total: Decimal
    currency: str


def confirmation_deadline(*, start_date: date, now: datetime) -> datetime:
    """The booking must be resolved by then: the window, but well before the booked start."""
    start_of_stay = datetime.combine(start_date, time.min, tzinfo=UTC)
    return min(now + settings.BOOKING_CONFIRMATION_WINDOW, start_of_stay - settings.BOOKING_MIN_LEAD_TIME)


def offer_unavailable(offer: Offer) -> list[str]:
    """Why the offer cannot be booked now (withdrawn, its partner paused); empty if it can."""
    why = []
    if not offer.is_active:
        why.append("This offer is no longer available.")
    if not offer.partner.enabled:
        why.append("This offer's partner is not taking bookings right now.")
    return why


def start_has_passed(start_date: date, *, now: datetime) -> bool:
    """Whether a stay starting then can no longer be priced: its start is not in the future."""
    return start_date <= now.date()


def too_long(price_unit: str) -> str:
    return f"A booking may cover at most {unit_count(settings.BOOKING_MAX_NIGHTS, price_unit)}."


def too_far_ahead() -> str:
    return f"Bookings open at most {settings.BOOKING_MAX_ADVANCE_DAYS} days ahead."


def validate_stay(stay: Stay, *, now: datetime | None = None) -> None:
    """Raise `ValidationFailed` naming every field that is wrong."""
    now = now or timezone.now()
    errors: dict[str, list[str]] = {}
    offer = stay.offer
    if unavailable := offer_unavailable(offer):
        errors["offer"] = unavailable
    if start_has_passed(stay.start_date, now=now):
        errors.setdefault("start_date", []).append("The start date must be in the future.")
    elif stay.start_date > now.date() + timedelta(days=settings.BOOKING_MAX_ADVANCE_DAYS):
        errors.setdefault("start_date", []).append(too_far_ahead())
    elif confirmation_deadline(start_date=stay.start_date, now=now) <= now + timedelta(minutes=1):
        lead_hours = int(settings.BOOKING_MIN_LEAD_TIME.total_seconds() // 3600)
        errors.setdefault("start_date", []).append(
            f"Too close to the start: bookings close {lead_hours} hours before the start date."
        )
    if stay.end_date <= stay.start_date:
        errors.setdefault("end_date", []).append("The end date must be after the start date.")
    elif stay.nights > settings.BOOKING_MAX_NIGHTS:
        errors.setdefault("end_date", []).append(too_long(offer.price_unit))
    if stay.guests < 1:
        errors.setdefault("guests", []).append(GUESTS_REQUIRED)
    elif stay.guests > offer.capacity:
        errors.setdefault("guests", []).append(f"This offer takes at most {offer.capacity} guests.")
    if errors:
        raise ValidationFailed(INVALID_REQUEST, fields=errors)


def cancellation_cut_off(*, terms: CancellationTerms, start_date: date) -> datetime:
    """When free cancellation ends under `terms` (an offer's now, or those a quote or a booking
    kept): `free_cancellation_hours` before the start (the start of its first day, UTC)."""
    return datetime.combine(start_date, time.min, tzinfo=UTC) - timedelta(hours=terms.free_cancellation_hours)


def cancellation_fee(
    *, terms: CancellationTerms, total: Decimal, currency: str, start_date: date, at: datetime
) -> Decimal:
    """What a cancellation asked for `at` costs under `terms`: nothing before the
    cut-off (`cancellation_cut_off`), then the offer's share of the price, rounded to the smallest
    unit of the price's `currency` (the stay's, which the offer's may no longer be; amounts are
    kept to the cent: a currency with thousandths is rounded to the cent)."""
    if at < cancellation_cut_off(terms=terms, start_date=start_date):
        return Decimal("0.00")
    unit = Decimal(1).scaleb(-min(minor_unit_exponent(currency), 2))
    fee = (total * terms.cancellation_fee_percent / 100).quantize(unit, rounding=ROUND_HALF_UP)
    return min(fee, total).quantize(CENT)


def price_stay(stay: Stay) -> Price:
    fee = Decimal(settings.BOOKING_SERVICE_FEE).quantize(CENT)
    total = (stay.offer.unit_price * stay.nights + fee).quantize(CENT)
    return Price(
        unit_price=stay.offer.unit_price,
        nights=stay.nights,
        fee=fee,
        total=total,
        currency=stay.offer.currency,
    )
