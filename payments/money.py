"""Money at the provider's edge: Decimal amounts in the booking's currency inside, integer minor
units (the currency's exponent) on the wire, and nothing in another currency."""

from __future__ import annotations

from decimal import Decimal

from bookings.pricing import CENT, minor_unit_exponent

# The largest amount the provider takes in one charge (minor units).
MAX_MINOR_UNITS = 99_999_999
_MAX_DIGITS = len(str(MAX_MINOR_UNITS))  # an amount's integer digits beyond any payment's
# The least the provider charges (Stripe's "minimum charge amount", in minor units), by currency:
# a payment below it is refused `amount_too_small`, however good the card. Stripe lists these by
# settlement currency, and they hold for a charge settled in its own currency. A charge in another
# currency must come to its settlement currency's minimum after conversion at the day's rate,
# which only the provider knows: not checked here (refused then, it ends as a decline). Refunds
# have no minimum (any whole number of minor units).
MIN_CHARGE_MINOR_UNITS = {
    "USD": 50,
    "AED": 200,
    "AUD": 50,
    "BGN": 100,
    "BRL": 50,
    "CAD": 50,
    "CHF": 50,
    "CZK": 1500,
    "DKK": 250,
    "EUR": 50,
    "GBP": 30,
    "HKD": 400,
    "HUF": 17500,
    "INR": 50,
    "JPY": 50,
    "MXN": 1000,
    "MYR": 200,
    "NOK": 300,
    "NZD": 50,
    "PLN": 200,
    "RON": 200,
    "SEK": 300,
    "SGD": 50,
    "THB": 1000,
}


class RefusedAmount(ValueError):
    """An amount that cannot cross the edge exactly, or is in another currency."""


class BelowMinimumCharge(RefusedAmount):
    """A charge smaller than the provider takes in its currency (`MIN_CHARGE_MINOR_UNITS`)."""

    def __init__(self, amount: Decimal, currency: str) -> None:
        self.minimum = min_charge(currency)
        least = f"{self.minimum} {currency}"
        super().__init__(f"{amount} {currency} is less than the {least} a card payment may be")


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


def min_charge(currency: str) -> Decimal:
    """The least one charge in `currency` may be (one minor unit where the provider lists none)."""
    return Decimal(MIN_CHARGE_MINOR_UNITS.get(currency.upper(), 1)).scaleb(-minor_unit_exponent(currency))


def charge_minor(amount: Decimal, currency: str) -> int:
    """`to_minor` of an amount to charge (an authorization): refused too below the least the
    provider charges in the currency (`BelowMinimumCharge`). A capture (the price, or a
    cancellation fee) and a refund are not held to it here: Stripe's reference sets no minimum on
    `amount_to_capture` nor on a refund's `amount`."""
    units = to_minor(amount, currency)
    if units < MIN_CHARGE_MINOR_UNITS.get(currency.upper(), 1):
        raise BelowMinimumCharge(amount, currency)
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
