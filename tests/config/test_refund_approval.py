"""The two-person rule's amounts (config/refund_approval.py): read per currency from the
environment, and a wrong one stops the process at start, the variable named."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import refund_approval

ROOT = Path(__file__).resolve().parents[2]
NAME = "PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY"


def test_amounts_are_read_per_currency():
    assert refund_approval.by_currency(NAME, " JPY=30000, KWD=60.500 ,", base="EUR") == {
        "JPY": Decimal("30000"),
        "KWD": Decimal("60.500"),
    }
    assert refund_approval.by_currency(NAME, "", base="EUR") == {}


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("JPY", "is CODE=AMOUNT pairs separated by commas (JPY=30000,KWD=60), not 'JPY'"),
        ("ABC=1", "'ABC' is not an ISO 4217 currency code"),
        ("jpy=1", "'jpy' is not an ISO 4217 currency code"),
        ("XAU=1", "'XAU' is not an ISO 4217 currency code"),
        ("EUR=300", "names EUR, the currency of PAYMENTS_REFUND_APPROVAL_ABOVE: set it there"),
        ("JPY=1,JPY=2", "names JPY twice"),
        ("JPY=-1", "(JPY) must be an amount of 0 or more"),
        ("JPY=1e3", "(JPY) must be an amount of 0 or more"),
        ("JPY=", "(JPY) must be an amount of 0 or more"),
        ("KWD=1.0005", "(KWD) must be an amount of 0 or more"),
    ],
)
def test_a_wrong_amount_is_refused_naming_the_variable(raw, why):
    with pytest.raises(ImproperlyConfigured) as refused:
        refund_approval.by_currency(NAME, raw, base="EUR")
    assert str(refused.value).startswith(NAME) and why in str(refused.value)


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (NAME, "KWD=sixty", f"{NAME} (KWD) must be an amount of 0 or more"),
        ("PAYMENTS_REFUND_APPROVAL_ABOVE", "200 EUR", "PAYMENTS_REFUND_APPROVAL_ABOVE must be an amount"),
        ("PAYMENTS_REFUND_APPROVAL_CURRENCY", "XXX", "PAYMENTS_REFUND_APPROVAL_CURRENCY must be a currency"),
    ],
)
def test_a_process_with_a_wrong_amount_does_not_start(tmp_path, variable, value, said):
    (tmp_path / ".env").write_text("")
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "ENV_FILE": str(tmp_path / ".env"),
            variable: value,
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "started" not in result.stdout
    assert "ImproperlyConfigured: config.settings.test does not start on these values" in result.stderr
    assert f"\n- {said}" in result.stderr  # one line of the one refusal


def test_the_settings_read_the_default_currency_and_its_amount(settings):
    assert settings.PAYMENTS_REFUND_APPROVAL_CURRENCY == "EUR"
    above = settings.PAYMENTS_REFUND_APPROVAL_ABOVE
    assert above == Decimal("200.00")
    assert settings.PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY == {}
