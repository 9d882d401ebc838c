"""Template filters of the customer pages (`{% load web %}`, registered in settings.TEMPLATES)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django import template

from bookings import cancelling, pricing
from bookings.cancelling import offer_policy
from bookings.customer_money import money_shown
from bookings.models import Booking, Offer

register = template.Library()


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}{'' if number == 1 else 's'}"


@register.filter
def duration(value: timedelta) -> str:
    """A span as a person would say it, to the unit that matters: 40 seconds, 3 minutes, 2 hours."""
    seconds = round(value.total_seconds())
    if seconds < 90:
        return _count(seconds, "second")
    minutes = round(seconds / 60)
    if minutes < 90:
        return _count(minutes, "minute")
    hours = round(minutes / 60)
    if hours < 48:
        return _count(hours, "hour")
    return _count(round(hours / 24), "day")


@register.filter
def money_words(booking: Booking) -> str:
    """What the booking's page says of its money (`cancelling.money_words`: the API's
    `money.message` too); empty for a booking that does not pay."""
    money = money_shown(booking)
    return cancelling.money_words(booking, money) if money else ""


@register.filter
def amount(value: Decimal, currency: str) -> str:
    """An amount in its currency as the customer is told it (`pricing.amount_text`):
    `{{ booking.total_price|amount:booking.currency }}` is "15000 JPY", "360.00 EUR"."""
    return pricing.amount_text(value, currency)


@register.filter
def price_per_unit(offer: Offer) -> str:
    """The offer's price per its unit: 120.00 EUR a night, 45.00 EUR a day."""
    return pricing.price_per_unit(offer)


@register.filter
def stay_dates(stay: object) -> str:
    """A quote's or a booking's dates in the words of its offer's unit (`pricing.stay_dates`):
    "1 April 2027 to 3 April 2027 (2 nights)", "1 April 2027 (1 day)"."""
    return pricing.stay_dates_of(stay)


@register.filter
def cancellation_policy(offer: Offer) -> str:
    """The offer's cancellation policy in words, before dates are chosen (the quote's page then
    says it with the stay's cut-off and fee)."""
    return offer_policy(offer).text
