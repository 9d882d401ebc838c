"""The two-person rule's amounts (docs/console.md "Payments"), read from the environment and
checked when the settings load: a wrong one stops the process with the variable named, rather
than letting one person refund what a second should have approved.

An amount is in one currency: 200 EUR is not 200 JPY (about 1.20 EUR) nor 200 KWD (about 600
EUR). So `PAYMENTS_REFUND_APPROVAL_ABOVE` is in `PAYMENTS_REFUND_APPROVAL_CURRENCY`, and every other
currency support refunds in has its own amount in `PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY`
("JPY=30000,KWD=60"). A currency with none has no amount one person may refund alone: every
refund in it needs a second person (`approval_above` is None), never the number of another
currency. No exchange rate: one would be stale, and the rule is the operator's to set.
"""

from __future__ import annotations

import re
from decimal import Decimal

from django.core.exceptions import ImproperlyConfigured

from config.currencies import currency_error

# Digits, then at most a point and up to three decimals (the dinar's thousandths).
_AMOUNT = re.compile(r"[0-9]+(?:\.[0-9]{1,3})?")


def amount(name: str, raw: str) -> Decimal:
    """An approval amount as written in `name`: 0 or more, "200.00", "30000", "60.500"."""
    if not _AMOUNT.fullmatch(raw.strip()):
        raise ImproperlyConfigured(
            f"{name} must be an amount of 0 or more (digits, with a point before at most three "
            f"decimals, such as 200.00), not {raw!r}"
        )
    return Decimal(raw.strip())


def currency(name: str, raw: str) -> str:
    """A currency as written in `name`, refused unless one we price in (`bookings.currencies`)."""
    code = raw.strip()
    if why := currency_error(code):
        raise ImproperlyConfigured(f"{name} must be a currency we price in: {why}")
    return code


def by_currency(name: str, raw: str, *, base: str) -> dict[str, Decimal]:
    """`CODE=AMOUNT` pairs, separated by commas ("JPY=30000,KWD=60"); each currency once, and not
    `base` (its amount is PAYMENTS_REFUND_APPROVAL_ABOVE)."""
    amounts: dict[str, Decimal] = {}
    for pair in filter(None, (part.strip() for part in raw.split(","))):
        code, equals, value = pair.partition("=")
        if not equals:
            raise ImproperlyConfigured(
                f"{name} is CODE=AMOUNT pairs separated by commas (JPY=30000,KWD=60), not {pair!r}"
            )
        code = currency(name, code)
        if code == base:
            raise ImproperlyConfigured(
                f"{name} names {code}, the currency of PAYMENTS_REFUND_APPROVAL_ABOVE: set it there"
            )
        if code in amounts:
            raise ImproperlyConfigured(f"{name} names {code} twice")
        amounts[code] = amount(f"{name} ({code})", value)
    return amounts
