"""Reads of the payments app for the sweeper (reconciliation) and support."""

from __future__ import annotations

from datetime import datetime

from payments.models import EventState, Payment, PaymentEvent


def due_payments(*, now: datetime, partner=None, limit: int) -> list[tuple[object, str]]:
    """(booking id, partner code) of payments whose check is due: not at rest (a hold to decide
    on before it lapses, an operation to ask again) and no run has looked since (its message
    lost, its worker gone). The partial index `payment_due`."""
    rows = Payment.objects.filter(next_check_at__lte=now)
    if partner is not None:
        rows = rows.filter(booking__partner=partner)
    return list(rows.order_by("next_check_at").values_list("booking_id", "booking__partner__code")[:limit])


def stale_events(*, before: datetime, partner=None, limit: int) -> list[tuple[int, str]]:
    """(event id, partner code) of webhook deliveries stored but never processed before
    `before` (their message lost). The partial index `payment_event_unprocessed`."""
    rows = PaymentEvent.objects.filter(state=EventState.RECEIVED, received_at__lte=before)
    if partner is not None:
        rows = rows.filter(payment__booking__partner=partner)
    return list(
        rows.order_by("received_at", "id").values_list("id", "payment__booking__partner__code")[:limit]
    )
