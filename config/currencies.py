"""Which codes are currencies: ISO 4217's active codes that have a minor unit, as the `iso4217`
package lists them (its table is ISO's own list, republished with each amendment).

An active code whose minor unit ISO gives as "N.A." is not money a stay can be priced in: "no
currency" (XXX), the testing code (XTS), precious metals (XAU, XAG, XPD, XPT) and units of account
(XDR, XSU, XUA, XBA to XBD). Three letters that ISO does not list (ABC), or lists no longer (HRK),
are refused with them. Here in config, beside the settings, because a setting names currencies too
(the refund-approval amounts, config/refund_approval.py); the apps ask `bookings.currencies`, which
is this rule with the model field's validator.
"""

from __future__ import annotations

from iso4217 import Currency

SHOWN_CHARS = 12


def currency_error(code: object) -> str | None:
    """Why `code` is not a currency we price in (an active ISO 4217 code with a minor unit, in
    capitals as ISO writes it), or None."""
    if isinstance(code, str):
        try:
            if Currency(code).exponent is not None:
                return None
        except ValueError:
            pass
    shown = repr(
        code if not isinstance(code, str) or len(code) <= SHOWN_CHARS else code[:SHOWN_CHARS] + "..."
    )
    return f"{shown} is not an ISO 4217 currency code (three capitals, such as EUR, USD or JPY)."
