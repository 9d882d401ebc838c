"""An orphan case as a support action finds it (`OrphanSituation`: its reservation, the booking
it would be linked to, who acts, the note), why each action cannot run on it now (the refusals the
preview shows and the action checks again under the locks), the look-ups of a case and of the
booking it would be linked to, and what an action returns (`OrphanActionResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from bookings.models import Booking
from config.errors import NotFound
from config.ids import row_id
from partners import decisions
from partners.models import OrphanAutomation, OrphanCase, PartnerReservation
from partners.services.observations import is_fenced
from reconciliation.services.support.permissions import (
    CLOSE_LIVE_ORPHAN_PERMISSION,
    ORPHAN_CANCEL,
    ORPHAN_CLOSE,
    ORPHAN_LINK,
    Operator,
)


@dataclass(frozen=True)
class OrphanActionResult:
    action: str
    case: OrphanCase
    performed: bool  # False: a double submit (token already seen); nothing was done
    from_state: str
    to_state: str
    message: str
    booking: Booking | None = None
    # The hints of the partner work it asked for (`messages.Hint`; a double submit's, not known
    # here: None), and what to say instead of `message` when one is not on the queue (our Redis
    # down): the work is committed and due for the sweeper, not queued yet.
    hints: tuple = field(default=(), compare=False, repr=False)
    if_not_queued: str = field(default="", compare=False, repr=False)
    queued: bool = True  # False: something it asked for waits for our queue (sent by the sweeper)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "case": self.case.pk,
            "partner_ref": self.case.reservation.partner_ref,
            "performed": self.performed,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "booking": self.booking.reference if self.booking else None,
            "message": self.message,
            "queued": self.queued,
        }


class OrphanSituation:
    """An orphan case as an action finds it: its reservation, the booking it would be linked to
    (link only), who acts, and the note given (None in a preview, before one is typed)."""

    def __init__(
        self,
        case: OrphanCase,
        *,
        operator: Operator,
        booking: Booking | None = None,
        note: str | None = None,
        duplicate_of: Booking | None = None,
    ) -> None:
        self.case = case
        self.reservation = case.reservation
        self.operator = operator
        self.booking = booking
        self.note = note
        # A stray duplicate's case: its booking, locked by the action (what it does goes on the
        # booking's timeline too); None in a preview, and for an orphan's case.
        self.duplicate_of = duplicate_of

    @property
    def cancel_under_way(self) -> bool:
        """Automation is cancelling it: decided, not verified, not given up."""
        r = self.reservation
        return (
            r.is_live
            and r.compensation_requested_at is not None
            and r.compensated_at is None
            and self.case.automation == OrphanAutomation.CANCELLING
        )

    @cached_property
    def booking_held(self) -> list[PartnerReservation]:
        """The booking's reservations with this one among them, oldest first (as the one door
        orders them)."""
        if self.booking is None:
            return []
        others = [r for r in self.booking.partner_reservations.all() if r.pk != self.reservation.pk]
        return sorted([*others, self.reservation], key=lambda r: (r.first_seen_at, r.pk))

    @property
    def booking_live(self) -> list[str]:
        """The live reservations the booking holds already (the references)."""
        return sorted(r.partner_ref for r in self.booking_held if r.pk != self.reservation.pk and r.is_live)

    def link_plan(self) -> decisions.Reconciliation:
        """What the one door will do to the booking once this reservation is its own."""
        views = [
            decisions.ReservationView(
                id=r.pk, status=r.status, linked_order=i, compensating=r.compensation_requested_at is not None
            )
            for i, r in enumerate(self.booking_held)
        ]
        return decisions.reconcile(self.booking.status, views, fenced=is_fenced(self.booking))


def _closed(situation: OrphanSituation) -> str:
    case = situation.case
    if case.is_open:
        return ""
    return f"The case is closed ({case.get_closed_because_display().lower()}, by {case.closed_by or '-'})."


def _cancel_refusal(situation: OrphanSituation) -> str:
    reservation = situation.reservation
    if not reservation.is_live:
        return f"We hold {reservation.partner_ref} as {reservation.status}: there is nothing to cancel."
    return ""


def _link_refusal(situation: OrphanSituation) -> str:
    reservation, booking = situation.reservation, situation.booking
    if situation.case.of_duplicate:
        return (
            f"{reservation.partner_ref} is {reservation.booking.reference}'s already (a duplicate of its "
            "reservation): there is nothing to link. Cancel it at the partner, or close the case."
        )
    if booking is None:
        return "Name the booking to link it to (its client reference names none of ours at this partner)."
    if booking.partner_id != reservation.partner_id:
        return (
            f"{booking.reference} is a booking at {booking.partner.code}, not at {reservation.partner.code}."
        )
    if reservation.is_live and reservation.compensation_requested_at and not reservation.compensated_at:
        return (
            f"A cancel of {reservation.partner_ref} was decided "
            f"{reservation.compensation_requested_at:%Y-%m-%d %H:%M} UTC and never verified: "
            "it cannot be a booking's reservation now."
        )
    named = reservation.client_reference == booking.reference
    if not named and situation.note is not None and not situation.note.strip():
        return (
            f"Its client reference names {reservation.client_reference or 'no booking'}, not "
            f"{booking.reference}: say in the note why it is {booking.reference}'s."
        )
    return ""


def _close_refusal(situation: OrphanSituation) -> str:
    reservation = situation.reservation
    if situation.cancel_under_way:
        return (
            f"A cancel of {reservation.partner_ref} is under way: the case closes itself once the "
            "partner says it is no longer live."
        )
    if reservation.is_live and not situation.operator.can(CLOSE_LIVE_ORPHAN_PERMISSION):
        return (
            f"The partner still holds {reservation.partner_ref} ({reservation.status}): closing it as it "
            f"is needs the permission {CLOSE_LIVE_ORPHAN_PERMISSION}, and a note saying why."
        )
    return ""


_REFUSALS: dict[str, Callable[[OrphanSituation], str]] = {
    ORPHAN_CANCEL: _cancel_refusal,
    ORPHAN_LINK: _link_refusal,
    ORPHAN_CLOSE: _close_refusal,
}


def orphan_refusal(action: str, situation: OrphanSituation) -> str:
    """Why `action` cannot run on the case as it is now ('' when it can)."""
    return _closed(situation) or _REFUSALS[action](situation)


def orphan_case_by_id(case_id: int | str) -> OrphanCase:
    pk = row_id(case_id)  # None past our ids' range: the database would overflow, not miss
    case = (
        OrphanCase.objects.select_related("reservation__partner", "reservation__booking", "booking")
        .filter(pk=pk)
        .first()
        if pk is not None
        else None
    )
    if case is None:
        raise NotFound(f"No orphan case {case_id!r}.")
    return case


def link_candidate(case: OrphanCase) -> Booking | None:
    """The booking of the same partner that the reservation's client reference names, if any."""
    reference = case.reservation.client_reference
    if not reference:
        return None
    return (
        Booking.objects.select_related("partner")
        .filter(partner_id=case.reservation.partner_id, reference=reference)
        .first()
    )


def booking_named(reference: str) -> Booking:
    booking = Booking.objects.select_related("partner").with_reference(reference).first()
    if booking is None:
        raise NotFound(f"No booking {reference!r}.")
    return booking
