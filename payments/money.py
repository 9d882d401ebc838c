"""Money at the provider's edge: Decimal amounts in the booking's currency inside, integer minor
units (the currency's exponent) on the wire, and nothing in another currency."""

from __future__ import annotations

from decimal import Decimal

from bookings.pricing import CENT, minor_unit_exponent

# The largest amount the provider takes in one charge (minor units).
MAX_MINOR_UNITS = 99_999_999
_MAX_DIGITS = len(str(MAX_MINOR_UNITS))  # an amount's integer digits beyond any payment's


class RefusedAmount(ValueError):
    """An amount that cannot cross the edge exactly, or is in another currency."""


def to_minor(amount: Decimal, currency: str) -> int:
    """An amount as the provider counts it: 12.34 EUR is 1234, 1500 JPY is 1500."""
    if amount.is_finite() and amount and amount.adjusted() > _MAX_DIGITS:
        # Refused by its size alone: scaling 1e999999 overflows Decimal's context, and making an
        # int of 1e400000 takes seconds of CPU, for an amount no payment may be anyway.
        raise RefusedAmount(f"{amount} {currency} is outside what one payment may be")
    scaled = amount.scaleb(minor_unit_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise RefusedAmount(f"{amount} {currency} is not a whole number of the currency's smallest unit")
    units = int(scaled)
    if not 0 < units <= MAX_MINOR_UNITS:
        raise RefusedAmount(f"{amount} {currency} is outside what one payment may be")
    return units


def from_minor(units: object, currency: str) -> Decimal:
    """The provider's minor units as our amount, refused unless a whole count within range that
    our ledger (kept to the cent) holds exactly."""
    if not isinstance(units, int) or isinstance(units, bool) or not 0 <= units <= MAX_MINOR_UNITS:
        raise RefusedAmount(f"{units!r} is not an amount in minor units")
    amount = Decimal(units).scaleb(-minor_unit_exponent(currency))
    if amount != amount.quantize(CENT):
        raise RefusedAmount(f"{amount} {currency} is finer than the cent our ledger keeps")
    return amount.quantize(CENT)


def same_currency(ours: str, theirs: object) -> str:
    """The provider's currency, refused unless it is ours (it writes codes in lower case)."""
    if not isinstance(theirs, str) or theirs.upper() != ours.upper():
        raise RefusedAmount(f"currency {theirs!r} is not the payment's {ours}")
    return ours.upper()
