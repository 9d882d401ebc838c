"""The streams' reads. Sync ORM code: the hub runs it in its database threads (`Hub.db`), and
the heartbeat's reads take every open stream of the process in one query each."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection
from typing import Any
from uuid import UUID

from django.db.models import Sum
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.settings import api_settings

from bookings import live, selectors
from bookings.models import Booking
from config.errors import NotFound

View = dict[str, Any]  # `bookings.live.payload`: what a publish carries, and so every stream event
# `status` too: the state machine's mixin reads it when a booking is loaded (a query each if deferred).
_VIEW_FIELDS = (
    "id",
    "customer_id",
    "reference",
    "status",
    "customer_status",
    "customer_message",
    "status_version",
)


def parse_view(data: bytes | str) -> View:
    """The view a publish carries; ValueError when it is not one."""
    view = json.loads(data)
    if not (
        isinstance(view, dict)
        and isinstance(view.get("reference"), str)
        and isinstance(view.get("status_version"), int)
    ):
        raise ValueError("not a booking view")
    return view


def stream_customer(request: HttpRequest):
    """The customer a stream request authenticates as, by the API's own authentication classes
    (a token, or the session of the pages); AnonymousUser when it presents neither. A wrong
    token raises DRF's AuthenticationFailed, as the API answers it."""
    authenticators = [authenticator() for authenticator in api_settings.DEFAULT_AUTHENTICATION_CLASSES]
    return Request(request, authenticators=authenticators).user


def followed_booking_id(*, customer, reference: str) -> UUID:
    """The booking a customer may follow: theirs (another customer's is NotFound, like none)."""
    booking_id = (
        selectors.customer_bookings(customer=customer)
        .with_reference(reference)
        .values_list("pk", flat=True)[:1]
    )
    if not booking_id:
        raise NotFound(f"No booking {reference}.")
    return booking_id[0]


def booking_views(booking_ids: Collection[UUID]) -> dict[UUID, View]:
    bookings = Booking.objects.filter(pk__in=booking_ids).only(*_VIEW_FIELDS).order_by()
    return {booking.pk: live.payload(booking) for booking in bookings}


def customer_sequences(customer_ids: Collection[int]) -> dict[int, int]:
    """Each customer's sequence number: the sum of their bookings' status versions. Versions only
    grow and bookings are never deleted, so it grows with every change a customer is shown (and
    every new booking), and stays put otherwise: the customer stream's event id."""
    sums = (
        Booking.objects.filter(customer_id__in=customer_ids)
        .order_by()
        .values_list("customer_id")
        .annotate(sequence=Sum("status_version"))
    )
    return dict(sums)


def customer_views(customer_ids: Collection[int]) -> dict[int, list[View]]:
    views: dict[int, list[View]] = defaultdict(list)
    for booking in Booking.objects.filter(customer_id__in=customer_ids).only(*_VIEW_FIELDS):
        views[booking.customer_id].append(live.payload(booking))
    return views
