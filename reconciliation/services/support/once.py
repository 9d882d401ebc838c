"""Each support action runs once per action token: a double submit (a second click, a re-run
command with the same `--token`) finds the correction the first one wrote and does nothing more.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from bookings.models import Booking, BookingEvent
from bookings.services import lock_booking
from config.errors import ValidationFailed


@dataclass(frozen=True)
class ActionResult:
    action: str
    booking: Booking
    performed: bool  # False: a double submit (token already seen); nothing was done
    from_state: str
    to_state: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "booking": self.booking.reference,
            "performed": self.performed,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "message": self.message,
        }


def new_token() -> str:
    return uuid.uuid4().hex


def clean_token(token: str) -> str:
    token = (token or "").strip()
    if not token or len(token) > 64:
        raise ValidationFailed("A support action needs an action token (up to 64 characters).")
    return token


def lock_unless_done(action: str, booking_id: UUID, token: str) -> tuple[Booking, ActionResult | None]:
    """Lock the booking (inside the caller's transaction); when the token was already used, also
    the earlier result, and the caller does nothing more."""
    booking = lock_booking(booking_id)
    earlier = (
        BookingEvent.objects.filter(booking=booking, kind__startswith="support.", data__action_token=token)
        .order_by("id")
        .first()
    )
    if earlier is None:
        return booking, None
    return booking, ActionResult(
        action=action,
        booking=booking,
        performed=False,
        from_state=earlier.from_state,
        to_state=earlier.to_state,
        message=(
            f"Already done by {earlier.actor_label} at {earlier.occurred_at:%H:%M:%S} "
            f"({earlier.kind}); nothing more was done."
        ),
    )


def correction_data(token: str, note: str, **extra: Any) -> dict[str, Any]:
    """The data of an action's named correction on the timeline: its token, the note, and more."""
    return {"action_token": token, "note": note[:2000], **extra}
