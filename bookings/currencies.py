"""Which codes are currencies: ISO 4217's active codes that have a minor unit, as the `iso4217`
package lists them (its table is ISO's own list, republished with each amendment).

An active code whose minor unit ISO gives as "N.A." is not money a stay can be priced in: "no
currency" (XXX), the testing code (XTS), precious metals (XAU, XAG, XPD, XPT) and units of account
(XDR, XSU, XUA, XBA to XBD). Three letters that ISO does not list (ABC), or lists no longer (HRK),
are refused with them. Every place a currency enters asks this module: an offer registered by
`partner_upsert` (partners.services.registry) or edited in the admin (`Offer.currency`'s
validator), and a partner's answer (`partners.connectors.bounds.currency`: a code refused here is
an unreadable value there). Bookings, quotes and payments take the offer's currency, and the
payment provider's answers are refused unless in the payment's (payments.money.same_currency).

How many decimals a currency's smallest unit has, as the payment provider counts it, is
`bookings.pricing.minor_unit_exponent`.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
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


def validate_currency(value: object) -> None:
    """The model field's validator (`Offer.currency`): the admin and every model form refuse what
    `currency_error` refuses."""
    if why := currency_error(value):
        raise ValidationError(why, code="invalid_currency")
