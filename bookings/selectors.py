"""Reads of the booking core."""

from __future__ import annotations

from django.db.models import QuerySet

from bookings.models import Booking, Offer
from bookings.states import states_for_customer_status
from config.errors import NotFound


def customer_bookings(*, customer, status: str | None = None) -> QuerySet[Booking]:
    bookings = Booking.objects.filter(customer=customer).select_related("offer", "partner")
    if status:
        bookings = bookings.filter(status__in=states_for_customer_status(status))
    return bookings.order_by("-created_at", "-id")


def customer_booking(*, customer, reference: str) -> Booking:
    booking = customer_bookings(customer=customer).filter(reference=reference).first()
    if booking is None:
        raise NotFound(f"No booking {reference}.")
    return booking


def bookable_offers() -> QuerySet[Offer]:
    return Offer.objects.filter(is_active=True, partner__enabled=True).select_related("partner")
