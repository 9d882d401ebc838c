"""The support console's queue: bookings waiting for a person."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from bookings.models import Booking
from bookings.states import BookingState
from partners.models import Partner


def needs_attention_queue(*, partner: Partner | None = None) -> QuerySet[Booking]:
    """Bookings waiting for a person, oldest first."""
    rows = Booking.objects.filter(status=BookingState.NEEDS_ATTENTION).select_related("partner", "customer")
    if partner is not None:
        rows = rows.filter(partner=partner)
    return rows.order_by("status_changed_at", "id")


def needs_attention_summary() -> dict[str, list[tuple[str, int]]]:
    base = Booking.objects.filter(status=BookingState.NEEDS_ATTENTION)
    by_reason = (
        base.values_list("attention_reason").annotate(n=Count("id")).order_by("-n", "attention_reason")
    )
    by_partner = base.values_list("partner__code").annotate(n=Count("id")).order_by("-n", "partner__code")
    return {"reasons": list(by_reason), "partners": list(by_partner)}
