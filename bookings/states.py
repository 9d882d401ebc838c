"""Booking states (docs/design.md) and what a customer is told about each.

The customer-facing status and message are derived from the state here and nowhere else.
"""

from __future__ import annotations

from django.db import models


class BookingState(models.TextChoices):
    REQUESTED = "requested", "Requested"
    SUBMITTING = "submitting", "Submitting"
    PENDING_PARTNER = "pending_partner", "Pending at partner"
    UNKNOWN = "unknown", "Outcome unknown"
    CONFIRMED = "confirmed", "Confirmed"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"
    CANCEL_REQUESTED = "cancel_requested", "Cancel requested"
    CANCELLED = "cancelled", "Cancelled"
    NEEDS_ATTENTION = "needs_attention", "Needs attention"


class CustomerStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    CONFIRMED = "confirmed", "Confirmed"
    FAILED = "failed", "Failed"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"


S = BookingState

TERMINAL_STATES = frozenset({S.REJECTED, S.FAILED, S.EXPIRED, S.CANCELLED})
# States in which automation still owes the booking an outcome (the sweeper watches these).
OPEN_STATES = frozenset({S.REQUESTED, S.SUBMITTING, S.PENDING_PARTNER, S.UNKNOWN, S.CANCEL_REQUESTED})
# States from which the customer's cancel is accepted.
CANCELLABLE_STATES = frozenset(
    {S.REQUESTED, S.SUBMITTING, S.PENDING_PARTNER, S.UNKNOWN, S.CONFIRMED, S.NEEDS_ATTENTION}
)

_CUSTOMER_VIEW: dict[str, tuple[CustomerStatus, str]] = {
    S.REQUESTED: (
        CustomerStatus.PENDING,
        "We received your booking and are sending it to the partner.",
    ),
    S.SUBMITTING: (CustomerStatus.PENDING, "We are placing your booking with the partner."),
    S.PENDING_PARTNER: (CustomerStatus.PENDING, "The partner is confirming your booking."),
    S.UNKNOWN: (CustomerStatus.PENDING, "We are checking your booking with the partner."),
    S.CONFIRMED: (CustomerStatus.CONFIRMED, "Your booking is confirmed."),
    S.REJECTED: (CustomerStatus.FAILED, "The partner could not accept this booking."),
    S.FAILED: (
        CustomerStatus.FAILED,
        "We could not complete this booking. You have not been charged.",
    ),
    S.EXPIRED: (
        CustomerStatus.FAILED,
        "The partner did not confirm in time. You have not been charged.",
    ),
    S.CANCEL_REQUESTED: (
        CustomerStatus.CANCELLING,
        "We are cancelling your booking with the partner.",
    ),
    S.CANCELLED: (CustomerStatus.CANCELLED, "Your booking is cancelled."),
    S.NEEDS_ATTENTION: (
        CustomerStatus.PENDING,
        "Our support team is reviewing your booking; we will update you shortly.",
    ),
}


def customer_view(state: str) -> tuple[CustomerStatus, str]:
    return _CUSTOMER_VIEW[state]


def states_for_customer_status(status: str) -> list[str]:
    return [state for state, (shown, _) in _CUSTOMER_VIEW.items() if shown == status]
