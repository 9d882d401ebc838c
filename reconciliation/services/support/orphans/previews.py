"""What an orphan action will do, shown before it runs (`OrphanPreview`): our record of the case
beside the partner's (asked live), whether the action may run now and why not (the refusals of
`situation`), and its effects step by step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from bookings.models import Booking
from config.errors import ValidationFailed
from partners.models import OrphanAutomation, OrphanCase, PartnerReservation
from reconciliation.services.support.once import new_token
from reconciliation.services.support.orphans.situation import (
    OrphanSituation,
    booking_named,
    link_candidate,
    orphan_case_by_id,
    orphan_refusal,
)
from reconciliation.services.support.partner_side import (
    PartnerSide,
    ReservationPair,
    last_known,
    pair_up,
    reservation_side,
)
from reconciliation.services.support.permissions import (
    ORPHAN_ACTIONS,
    ORPHAN_CANCEL,
    ORPHAN_CLOSE,
    ORPHAN_LINK,
    Operator,
)


@dataclass
class OrphanPreview:
    action: str
    title: str
    case: OrphanCase
    allowed: bool
    refusal: str
    effects: list[str]
    pairs: list[ReservationPair]
    partner: PartnerSide
    token: str
    needs_note: bool
    booking: Booking | None = None
    booking_live: list[str] = field(default_factory=list)  # what the confirmation carries (link)

    @property
    def reservation(self) -> PartnerReservation:
        return self.case.reservation

    def as_dict(self) -> dict[str, Any]:
        reservation = self.reservation
        return {
            "action": self.action,
            "title": self.title,
            "case": self.case.pk,
            "allowed": self.allowed,
            "refusal": self.refusal,
            "effects": self.effects,
            "needs_note": self.needs_note,
            "ours": {
                "case_state": self.case.state,
                "automation": self.case.automation,
                "partner_ref": reservation.partner_ref,
                "client_reference": reservation.client_reference,
                "status": reservation.status,
                "version": reservation.version,
                "compensation_requested_at": (
                    reservation.compensation_requested_at.isoformat()
                    if reservation.compensation_requested_at
                    else None
                ),
            },
            "partner": {
                "live": self.partner.live,
                "method": self.partner.method,
                "checked_at": self.partner.checked_at.isoformat(),
                "note": self.partner.note,
                "reservations": self.partner.reservations,
            },
            "reservations": [
                {"partner_ref": p.partner_ref, "ours": p.ours, "theirs": p.theirs, "mismatch": p.mismatch}
                for p in self.pairs
            ],
            "booking": (
                {
                    "reference": self.booking.reference,
                    "status": self.booking.status,
                    "live": self.booking_live,
                }
                if self.booking
                else None
            ),
            "token": self.token,
        }


def _cancel_effects(situation: OrphanSituation) -> list[str]:
    reservation, case = situation.reservation, situation.case
    ref, queue = reservation.partner_ref, reservation.partner.queue_name
    if case.automation == OrphanAutomation.CANCEL_FAILED:
        tries = settings.PARTNER_COMPENSATION_MAX_TRIES
        first = (
            f"Cancel {ref} at the partner again, with a fresh budget of {tries} tries (automation "
            f"gave up), on {queue}; then verify by a lookup."
        )
    elif reservation.compensation_requested_at is not None:
        first = (
            f"Drive the cancel decided {reservation.compensation_requested_at:%Y-%m-%d %H:%M} UTC again, "
            f"on {queue}: cancel {ref} at the partner, then verify by a lookup."
        )
    else:
        first = f"Cancel {ref} ({reservation.status}) at the partner on {queue}, then verify by a lookup."
    return [
        first,
        "The case closes itself once the partner says it is no longer live; if the cancel keeps "
        "failing, the case is flagged again.",
    ]


def _target(booking: Booking, transition: str) -> str:
    return next(t.target for t in booking.get_available_status_transitions() if t.name == transition)


def _link_effects(situation: OrphanSituation) -> list[str]:
    booking, reservation = situation.booking, situation.reservation
    steps = [
        f"{reservation.partner_ref} ({reservation.status}) becomes {booking.reference}'s reservation; "
        "the case closes as linked, and the link and the case's history show on the booking's timeline."
    ]
    if reservation.client_reference != booking.reference:
        steps.append(
            f"Its client reference names {reservation.client_reference or 'no booking'}: a note saying "
            f"why it is {booking.reference}'s is required."
        )
    if situation.booking_live:
        steps.append(
            f"{booking.reference} already holds {', '.join(situation.booking_live)} live: it would hold two "
            "live reservations, and the one door keeps one of them (the confirmed one, else the oldest)."
        )
    held = {r.pk: r.partner_ref for r in situation.booking_held}
    plan = situation.link_plan()
    for reservation_id, reason in plan.compensate.items():
        steps.append(f"Cancel {held[reservation_id]} at the partner ({reason}), then verify by a lookup.")
    if plan.transition:
        steps.append(f"{booking.status} → {_target(booking, plan.transition)} ({plan.reason}).")
    elif not plan.compensate:
        steps.append(f"{booking.reference} stays {booking.status}.")
    return steps


def _close_effects(situation: OrphanSituation) -> list[str]:
    reservation = situation.reservation
    steps = ["The case closes with your note (required); nothing is asked of the partner."]
    if reservation.is_live:
        steps.append(
            f"{reservation.partner_ref} stays {reservation.status} at the partner: nobody cancels it "
            "(automation leaves a closed case alone)."
        )
    return steps


_EFFECTS: dict[str, Callable[[OrphanSituation], list[str]]] = {
    ORPHAN_CANCEL: _cancel_effects,
    ORPHAN_LINK: _link_effects,
    ORPHAN_CLOSE: _close_effects,
}


def orphan_preview(
    action: str,
    case: OrphanCase,
    *,
    operator: Operator,
    booking_reference: str = "",
    note: str | None = None,
    live: bool = True,
    token: str | None = None,
) -> OrphanPreview:
    """What `action` will do to the case: our record beside the partner's (asked live). For a
    link, the booking named (default: the one the client reference names). `note`: the one the
    action will be given, when it is known already (a command's --note), so that a link the note
    must explain is refused here as the action refuses it; None before one is typed (the console)."""
    if action not in ORPHAN_ACTIONS:
        raise ValidationFailed(f"Unknown orphan action {action!r}; known: {', '.join(ORPHAN_ACTIONS)}.")
    case = orphan_case_by_id(case.pk)
    booking = None
    if action == ORPHAN_LINK:
        booking = booking_named(booking_reference) if booking_reference else link_candidate(case)
    situation = OrphanSituation(case, operator=operator, booking=booking, note=note)
    side = (
        reservation_side(case.reservation)
        if live
        else last_known([case.reservation], note="Not asked live; showing the last known state.")
    )
    why_not = orphan_refusal(action, situation)
    return OrphanPreview(
        action=action,
        title=ORPHAN_ACTIONS[action]["title"],
        case=case,
        allowed=not why_not,
        refusal=why_not,
        effects=[] if why_not else _EFFECTS[action](situation),
        pairs=pair_up([case.reservation], side),
        partner=side,
        token=token or new_token(),
        needs_note=action == ORPHAN_CLOSE
        or (booking is not None and case.reservation.client_reference != booking.reference),
        booking=booking,
        booking_live=situation.booking_live,
    )
