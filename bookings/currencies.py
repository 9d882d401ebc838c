"""Which codes are currencies we price in: the rule is `config.currencies.currency_error` (ISO
4217's active codes with a minor unit), asked here by every place a currency enters: an offer
registered by `partner_upsert` (partners.services.registry) or edited in the admin
(`Offer.currency`'s validator), and a partner's answer (`partners.connectors.bounds.currency`: a
code refused here is an unreadable value there). Bookings, quotes and payments take the offer's
currency, and the payment provider's answers are refused unless in the payment's
(payments.money.same_currency).

How many decimals a currency's smallest unit has, as the payment provider counts it, is
`bookings.pricing.minor_unit_exponent`.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError

from config.currencies import currency_error

__all__ = ["currency_error", "validate_currency"]


def validate_currency(value: object) -> None:
    """The model field's validator (`Offer.currency`): the admin and every model form refuse what
    `currency_error` refuses."""
    if why := currency_error(value):
        raise ValidationError(why, code="invalid_currency")
