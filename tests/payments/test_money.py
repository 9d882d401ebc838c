"""Money at the provider's edge: minor units by the currency's exponent, nothing inexact, nothing
in another currency (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payments.money import (
    MIN_CHARGE_MINOR_UNITS,
    BelowMinimumCharge,
    RefusedAmount,
    charge_minor,
    from_minor,
    min_charge,
    same_currency,
    to_minor,
)


@pytest.mark.parametrize(
    ("amount", "currency", "units"),
    [("12.34", "EUR", 1234), ("1500", "JPY", 1500), ("1.234", "BHD", 1234), ("0.01", "usd", 1)],
)
def test_amounts_go_out_in_minor_units_and_come_back_the_same(amount, currency, units):
    assert to_minor(Decimal(amount), currency) == units
    if currency != "BHD":  # our ledger keeps cents: a thousandth comes back refused
        assert from_minor(units, currency) == Decimal(amount).quantize(Decimal("0.01"))


@pytest.mark.parametrize(
    ("amount", "currency"), [("12.345", "EUR"), ("10.50", "JPY"), ("0", "EUR"), ("-1", "EUR")]
)
def test_an_amount_that_is_no_whole_number_of_minor_units_or_not_positive_is_refused(amount, currency):
    with pytest.raises(RefusedAmount):
        to_minor(Decimal(amount), currency)


@pytest.mark.parametrize("units", [-1, 1.5, "100", True, None, 10**9])
def test_the_providers_amount_must_be_a_whole_count_in_range(units):
    with pytest.raises(RefusedAmount):
        from_minor(units, "EUR")


def test_another_currency_is_refused():
    assert same_currency("EUR", "eur") == "EUR"
    with pytest.raises(RefusedAmount):
        same_currency("EUR", "usd")
    with pytest.raises(RefusedAmount):
        same_currency("EUR", None)


@pytest.mark.parametrize(
    ("below", "least", "currency"),
    [("0.49", "0.50", "EUR"), ("0.29", "0.30", "gbp"), ("49", "50", "JPY"), ("2.99", "3.00", "SEK")],
)
def test_a_charge_below_the_providers_minimum_is_refused_and_the_minimum_is_charged(below, least, currency):
    with pytest.raises(BelowMinimumCharge) as refused:
        charge_minor(Decimal(below), currency)

    assert refused.value.minimum == min_charge(currency) == Decimal(least)
    assert charge_minor(Decimal(least), currency) == MIN_CHARGE_MINOR_UNITS[currency.upper()]
    # a capture or a refund is not held to it
    assert to_minor(Decimal(below), currency) < MIN_CHARGE_MINOR_UNITS[currency.upper()]


def test_a_currency_the_provider_lists_no_minimum_for_is_charged_from_its_smallest_unit():
    assert (min_charge("KWD"), charge_minor(Decimal("0.01"), "ISK")) == (Decimal("0.001"), 1)
    with pytest.raises(RefusedAmount):
        charge_minor(Decimal("0.00"), "KWD")
