"""Money at the provider's edge: minor units by the currency's exponent, nothing inexact, nothing
in another currency (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payments.money import RefusedAmount, from_minor, same_currency, to_minor


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
