"""Writing the booking timeline. Every service writes its rows through `record_event`, or builds
one with `new_event` to insert it together with its booking."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bookings.models import Actor, Booking, BookingEvent


def new_event(
    booking: Booking,
    kind: str,
    *,
    actor: Actor | str,
    actor_label: str = "",
    summary: str = "",
    from_state: str = "",
    to_state: str = "",
    partner_time: datetime | None = None,
    skew_ms: int | None = None,
    data: dict[str, Any] | None = None,
) -> BookingEvent:
    """A timeline row, not yet saved: for a caller that inserts it together with its booking."""
    return BookingEvent(
        booking=booking,
        kind=kind,
        actor=actor,
        actor_label=actor_label[:150],
        summary=summary[:300],
        from_state=from_state,
        to_state=to_state,
        partner_time=partner_time,
        skew_ms=skew_ms,
        data=data or {},
    )


def record_event(booking: Booking, kind: str, **fields: Any) -> BookingEvent:
    """Write a timeline row now (in the caller's transaction); `fields` as for `new_event`."""
    event = new_event(booking, kind, **fields)
    event.save(force_insert=True)
    return event
