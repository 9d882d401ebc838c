"""Booking states (docs/design.md), the named sets of them, and what a customer is told about each.

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


# The named state sets: the transitions in bookings/models.py take their sources from these, and
# every other module asks for a set by name (or asks the machine, `can_proceed`), never spells
# one out. tests/bookings/test_state_graph.py checks each against the graph.

# Partner truth can still settle these: the partner confirms or refuses, or the deadline passes.
AWAITING_PARTNER = frozenset(
    {BookingState.REQUESTED, BookingState.SUBMITTING, BookingState.UNKNOWN, BookingState.PENDING_PARTNER}
)
# Not acknowledged by the partner yet: a pending reservation moves these to pending_partner.
UNACKNOWLEDGED = AWAITING_PARTNER - {BookingState.PENDING_PARTNER}
# A create may be out with no answer: a worker holds the submission, or its outcome is unknown.
CREATE_UNANSWERED = frozenset({BookingState.SUBMITTING, BookingState.UNKNOWN})
# Settled by the partner's truth or by support: confirmed or failed from here.
SETTLEABLE = AWAITING_PARTNER | {BookingState.NEEDS_ATTENTION}
# States from which the customer's cancel is accepted.
CANCELLABLE_STATES = SETTLEABLE | {BookingState.CONFIRMED}
# A cancel was accepted: under way, or done.
CANCEL_ACCEPTED = frozenset({BookingState.CANCEL_REQUESTED, BookingState.CANCELLED})
# Automation still owes these an outcome (the sweeper watches them).
OPEN_STATES = AWAITING_PARTNER | {BookingState.CANCEL_REQUESTED}
# Outcomes: only support moves a booking out of these again.
TERMINAL_STATES = frozenset(
    {BookingState.REJECTED, BookingState.FAILED, BookingState.EXPIRED, BookingState.CANCELLED}
)

_CUSTOMER_VIEW: dict[str, tuple[CustomerStatus, str]] = {
    BookingState.REQUESTED: (
        CustomerStatus.PENDING,
        "We received your booking and are sending it to the partner.",
    ),
    BookingState.SUBMITTING: (CustomerStatus.PENDING, "We are placing your booking with the partner."),
    BookingState.PENDING_PARTNER: (CustomerStatus.PENDING, "The partner is confirming your booking."),
    BookingState.UNKNOWN: (CustomerStatus.PENDING, "We are checking your booking with the partner."),
    BookingState.CONFIRMED: (CustomerStatus.CONFIRMED, "Your booking is confirmed."),
    BookingState.REJECTED: (CustomerStatus.FAILED, "The partner could not accept this booking."),
    BookingState.FAILED: (
        CustomerStatus.FAILED,
        "We could not complete this booking. You have not been charged.",
    ),
    BookingState.EXPIRED: (
        CustomerStatus.FAILED,
        "The partner did not confirm in time. You have not been charged.",
    ),
    BookingState.CANCEL_REQUESTED: (
        CustomerStatus.CANCELLING,
        "We are cancelling your booking with the partner.",
    ),
    BookingState.CANCELLED: (CustomerStatus.CANCELLED, "Your booking is cancelled."),
    BookingState.NEEDS_ATTENTION: (
        CustomerStatus.PENDING,
        "Our support team is reviewing your booking; we will update you shortly.",
    ),
}


def customer_view(state: str) -> tuple[CustomerStatus, str]:
    return _CUSTOMER_VIEW[state]


def states_for_customer_status(status: str) -> list[str]:
    return [state for state, (shown, _) in _CUSTOMER_VIEW.items() if shown == status]
