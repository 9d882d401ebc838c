"""The mails' words for what a cancellation does with the money (`bookings.cancelling`), for the
templates that render them: `{% load cancelling %}{{ booking|after_cancel:money }}`. A filter
because the mail is composed from the booking and the money told with its change, which is all
these words need."""

from __future__ import annotations

from django import template

from bookings import cancelling
from bookings.customer_money import Money
from bookings.models import Booking

register = template.Library()


@register.filter
def after_cancel(booking: Booking, money: Money | None) -> str:
    return cancelling.after_cancel(booking, money)
