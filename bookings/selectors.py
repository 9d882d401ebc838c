"""Reads of the booking core."""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from django.core.cache import cache
from django.db.models import QuerySet
from django.utils import timezone

from bookings import customer_view
from bookings.models import Booking, BookingEvent, Offer, Quote
from bookings.states import TERMINAL_STATES, BookingState
from config.errors import NotFound

S = BookingState


def customer_bookings(*, customer, statuses: Collection[str] = ()) -> QuerySet[Booking]:
    """The customer's bookings, newest first; only those shown with one of `statuses`, if given."""
    bookings = Booking.objects.filter(customer=customer).select_related("offer", "partner")
    if statuses:
        bookings = bookings.filter(customer_status__in=statuses)
    return bookings.order_by("-created_at", "-id")


def customer_booking(*, customer, reference: str) -> Booking:
    booking = customer_bookings(customer=customer).with_reference(reference).first()
    if booking is None:
        raise NotFound(f"No booking {reference}.")
    return booking


def bookable_offers() -> QuerySet[Offer]:
    return Offer.objects.filter(is_active=True, partner__enabled=True).select_related("partner")


def customer_quote(*, customer, quote_id: UUID) -> Quote:
    quote = Quote.objects.filter(pk=quote_id, customer=customer).select_related("offer__partner").first()
    if quote is None:
        raise NotFound("No such quote.")
    return quote


def customer_booking_of_quote(*, customer, quote_id: UUID) -> Booking | None:
    """The booking made from this quote, if any (a quote is booked once)."""
    return customer_bookings(customer=customer).filter(quote_id=quote_id).first()


# --- a booking's progress, as its customer may see it -----------------------------------------
# What each state the booking moved into adds to the customer's list of steps. Only our own
# words: a step never shows the timeline row's summary or data (partner references, errors,
# support notes). A move back to `requested` is our retry, not news for the customer; nor is
# support taking up an ended booking for what the partner still holds of it: it is shown as that
# end still (`customer_view.Facts.ended_as`).
_STEP_FOR_STATE: dict[str, str] = {
    S.SUBMITTING: "Sent to the partner",
    S.PENDING_PARTNER: "The partner is confirming",
    S.UNKNOWN: "Checking with the partner",
    S.CONFIRMED: "Confirmed by the partner",
    S.REJECTED: "Not confirmed: the partner declined",
    S.FAILED: "Not confirmed",
    S.EXPIRED: "Not confirmed in time",
    S.CANCEL_REQUESTED: "Cancellation requested",
    S.CANCELLED: "Cancelled",
    S.NEEDS_ATTENTION: "Passed to our support team",
}
_RECEIVED = "Booking received"


@dataclass(frozen=True)
class ProgressStep:
    label: str
    at: datetime


@dataclass(frozen=True)
class BookingProgress:
    booking: Booking
    steps: tuple[ProgressStep, ...]

    @property
    def awaiting_news(self) -> bool:
        return customer_view.awaiting_news(self.booking)

    @property
    def awaits_partner_confirmation(self) -> bool:
        """Whether the partner's deadline and usual time apply (`customer_view`'s rule)."""
        return customer_view.awaits_partner_confirmation(self.booking)

    @property
    def confirm_by(self) -> datetime | None:
        """The partner's deadline to confirm, where it applies, while it is still ahead."""
        deadline = customer_view.partner_deadline(self.booking)
        return deadline if deadline is not None and deadline > timezone.now() else None

    @property
    def version(self) -> str:
        """Changes exactly when what the customer sees of the booking changes: its money too (a
        refund is a change of the money alone, and a page that polls must get it)."""
        money = json.dumps(self.booking.customer_money, sort_keys=True)
        seen = [self.booking.customer_status, self.booking.customer_message, money]
        seen += [f"{step.label}@{step.at.isoformat()}" for step in self.steps]
        return hashlib.blake2b("\n".join(seen).encode(), digest_size=8).hexdigest()


def customer_booking_progress(*, customer, reference: str) -> BookingProgress:
    booking = customer_booking(customer=customer, reference=reference)
    moves = (
        BookingEvent.objects.filter(booking=booking)
        .exclude(to_state="")
        .order_by("occurred_at", "id")
        .values_list("from_state", "to_state", "occurred_at")
    )
    steps: list[ProgressStep] = []
    for from_state, to_state, occurred_at in moves:
        if from_state in TERMINAL_STATES and to_state == S.NEEDS_ATTENTION:
            continue
        label = _RECEIVED if not from_state and to_state == S.REQUESTED else _STEP_FOR_STATE.get(to_state)
        if label and (not steps or steps[-1].label != label):
            steps.append(ProgressStep(label=label, at=occurred_at))
    return BookingProgress(booking=booking, steps=tuple(steps))


# --- how long a partner usually takes to confirm --------------------------------------------
CONFIRMATION_TIMES_WINDOW = timedelta(days=7)
CONFIRMATION_TIMES_MIN_SAMPLES = 10
# The latest confirmations only: enough for a stable 90th percentile, a bounded read.
CONFIRMATION_TIMES_MAX_SAMPLES = 500
CONFIRMATION_TIMES_CACHE_S = 60


@dataclass(frozen=True)
class ConfirmationTimes:
    """Time from a booking's request to its confirmation, over a partner's recent bookings."""

    samples: int
    median: timedelta | None = None
    p90: timedelta | None = None
    window: timedelta = CONFIRMATION_TIMES_WINDOW

    @property
    def enough_data(self) -> bool:
        return self.median is not None


def confirmation_times_cache_key(partner_id: int) -> str:
    return f"bookings:confirmation-times:{partner_id}"


def partner_confirmation_times(*, partner_id: int) -> ConfirmationTimes:
    """Our own figures (the `booking.confirmed` timeline rows of the window), shared by every
    process for a minute through the cache."""
    key = confirmation_times_cache_key(partner_id)
    times = cache.get(key)
    if times is None:
        times = _confirmation_times(partner_id)
        cache.set(key, times, CONFIRMATION_TIMES_CACHE_S)
    return times


def _confirmation_times(partner_id: int) -> ConfirmationTimes:
    confirmations = (
        BookingEvent.objects.filter(
            kind="booking.confirmed",
            booking__partner_id=partner_id,
            occurred_at__gte=timezone.now() - CONFIRMATION_TIMES_WINDOW,
        )
        .order_by("-occurred_at")
        .values_list("booking_id", "booking__created_at", "occurred_at")[:CONFIRMATION_TIMES_MAX_SAMPLES]
    )
    # Newest first, so a booking confirmed more than once keeps its first confirmation.
    first_confirmed: dict[UUID, timedelta] = {}
    for booking_id, requested_at, confirmed_at in confirmations:
        first_confirmed[booking_id] = confirmed_at - requested_at
    durations = sorted(first_confirmed.values())
    if len(durations) < CONFIRMATION_TIMES_MIN_SAMPLES:
        return ConfirmationTimes(samples=len(durations))
    return ConfirmationTimes(
        samples=len(durations),
        median=statistics.median(durations),
        # Nearest rank: a duration some booking really took.
        p90=durations[math.ceil(0.9 * len(durations)) - 1],
    )
