"""Orphan cases: every live partner reservation that no booking wants is a case for support.

The one door opens the case when it finds such a reservation live (whether or not automation
cancels it: PARTNER_COMPENSATE_ORPHANS); the compensation closes it when the cancel is verified,
or flags it when its tries are exhausted (support owns it from then on); the partner letting it
go, with no cancel of ours under way, closes it too. A booking's duplicate whose cancel gave up
while its booking keeps a reservation of its own (`decisions.stray_left_to_a_case`) is such a
reservation too: its case is opened flagged then, and the booking is left as it is; once the
booking no longer keeps its own (a cancel, an end, a move to support), the move takes the stray up
again and the case closes (`orphan_case_taken_up`); should its cancel give up again once the
booking keeps its own again, the case opens again (`_reopen`). Every step is
a row of the case's own history. Each function runs in the caller's transaction, after the
reservation's lock (lock order: booking, reservation, case).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.timeline import record_event
from partners.models import (
    OrphanAutomation,
    OrphanCase,
    OrphanCaseEvent,
    OrphanCaseState,
    OrphanClosing,
    OrphanFinding,
    PartnerReservation,
)
from partners.timeline import compensation_summary

_CASE_FIELDS = ["state", "automation", "booking", "closed_at", "closed_because", "closed_by", "closed_note"]


def record_case_event(
    case: OrphanCase,
    kind: str,
    *,
    actor: Actor | str,
    actor_label: str = "",
    summary: str = "",
    data: dict[str, Any] | None = None,
) -> OrphanCaseEvent:
    """Write a row of the case's history now (in the caller's transaction)."""
    event = OrphanCaseEvent(
        case=case,
        kind=kind,
        actor=actor,
        actor_label=actor_label[:150],
        summary=summary[:300],
        data=data or {},
    )
    event.save(force_insert=True)
    return event


def _locked_case(reservation: PartnerReservation) -> OrphanCase | None:
    return OrphanCase.objects.select_for_update().filter(reservation=reservation).first()


def _finding(reservation: PartnerReservation) -> str:
    if reservation.booking_id is not None:
        return OrphanFinding.DUPLICATE
    return OrphanFinding.UNKNOWN_REFERENCE if reservation.client_reference else OrphanFinding.NO_REFERENCE


def _found(reservation: PartnerReservation) -> str:
    if reservation.booking_id is not None:
        booking = reservation.booking
        return f"a duplicate of {booking.reference}'s reservation ({booking.reference} keeps its own)"
    if reservation.client_reference:
        return f"its client reference {reservation.client_reference} names no booking of ours"
    return "it carries no client reference"


def orphan_case_open(
    reservation: PartnerReservation, *, cancelling: bool, actor: Actor | str, actor_label: str = ""
) -> OrphanCase:
    """The case of a live orphan, opened the first time it is found live (of a booking's
    duplicate, when its cancel gives up)."""
    case = _locked_case(reservation)
    if case is not None:
        return case
    automation = OrphanAutomation.CANCELLING if cancelling else OrphanAutomation.LEFT_TO_SUPPORT
    case = OrphanCase.objects.create(
        reservation=reservation, opened_because=_finding(reservation), automation=automation
    )
    step = "cancelling it at the partner" if cancelling else "left to support (orphans are not cancelled)"
    record_case_event(
        case,
        "orphan.opened",
        actor=actor,
        actor_label=actor_label,
        summary=(
            f"{reservation.partner_ref} ({reservation.status}, from the {reservation.learned_from}): "
            f"{_found(reservation)}; {step}"
        ),
        data={"reservation": reservation.partner_ref, "automation": automation},
    )
    return case


def _close(
    case: OrphanCase,
    because: str,
    *,
    by: str,
    note: str = "",
    automation: str | None = None,
    booking: Booking | None = None,
) -> None:
    case.state, case.closed_at, case.closed_because = OrphanCaseState.CLOSED, timezone.now(), because
    case.closed_by, case.closed_note = by[:150], note
    case.automation = automation or case.automation
    case.booking = booking or case.booking
    case.save(update_fields=_CASE_FIELDS)


def orphan_case_cancel_verified(
    reservation: PartnerReservation, *, actor: Actor | str, actor_label: str = "", not_found: str = ""
) -> None:
    """The partner says the orphan is no longer live after our cancel: the case closes itself.
    `not_found`: how it said it holds nothing at all (a 404), when it did."""
    case = _locked_case(reservation)
    if case is None or not case.is_open:
        return
    _close(
        case,
        OrphanClosing.CANCEL_VERIFIED,
        by=actor_label or str(actor),
        automation=OrphanAutomation.CANCEL_VERIFIED,
    )
    record_case_event(
        case,
        "orphan.cancel_verified",
        actor=actor,
        actor_label=actor_label,
        summary=f"{compensation_summary(reservation, 'verified', not_found=not_found)}; case closed",
        data={"reservation": reservation.partner_ref, "status": reservation.status, "not_found": not_found},
    )


def orphan_case_settled(
    reservation: PartnerReservation, *, actor: Actor | str, actor_label: str = ""
) -> None:
    """The partner no longer holds the orphan live and no cancel of ours is under way (it
    cancelled or rejected it itself): nothing is left to do, the case closes itself."""
    case = _locked_case(reservation)
    if case is None or not case.is_open:
        return
    _close(case, OrphanClosing.PARTNER_SETTLED, by=actor_label or str(actor))
    record_case_event(
        case,
        "orphan.settled",
        actor=actor,
        actor_label=actor_label,
        summary=f"The partner reports {reservation.partner_ref} {reservation.status}; case closed",
        data={"reservation": reservation.partner_ref, "status": reservation.status},
    )


def orphan_case_cancel_failed(
    reservation: PartnerReservation, *, tries: int, error: str
) -> OrphanCase | None:
    """The orphan's (or a booking's stray duplicate's) cancel gave up after its tries: its case
    stays open, flagged for support (opened now if it had none, opened again if its booking had
    taken it up: `_reopen`), and automation leaves it to them. The case when it is flagged now;
    None when support closed it, or knows already."""
    with transaction.atomic():
        locked = PartnerReservation.objects.select_for_update(no_key=True).get(pk=reservation.pk)
        case = _locked_case(locked) or orphan_case_open(locked, cancelling=True, actor=Actor.WORKER)
        if case.closed_because == OrphanClosing.TAKEN_UP:
            _reopen(case, locked)
        if not case.is_open or case.flagged:
            return None  # support closed it, or knows already
        case.automation = OrphanAutomation.CANCEL_FAILED
        case.save(update_fields=["automation"])
        record_case_event(
            case,
            "orphan.cancel_failed",
            actor=Actor.WORKER,
            summary=(
                f"Could not cancel {locked.partner_ref} at the partner after {tries} tries: {error}; "
                "flagged for support"
            ),
            data={"reservation": locked.partner_ref, "tries": tries, "error": error},
        )
        return case


def _reopen(case: OrphanCase, reservation: PartnerReservation) -> None:
    """A duplicate's case its booking took up (`orphan_case_taken_up`), whose cancel gave up
    again while the booking keeps its own once more (support resolved it back to `confirmed`, say):
    automation closed it, not a person, and the stray is support's alone again, so the case opens
    again (one case per reservation: its history goes on) for the caller to flag. Left closed,
    nobody had the stray: the booking goes on as it is, and no case was open."""
    booking = reservation.booking
    case.state, case.closed_at, case.closed_because = OrphanCaseState.OPEN, None, ""
    case.closed_by, case.closed_note, case.automation = "", "", OrphanAutomation.CANCELLING
    case.save(update_fields=_CASE_FIELDS)
    record_case_event(
        case,
        "orphan.reopened",
        actor=Actor.WORKER,
        summary=(
            f"{booking.reference} is {booking.status} again, keeping its own reservation: "
            f"{reservation.partner_ref} is support's case again"
        ),
        data={"reservation": reservation.partner_ref, "booking": booking.reference, "status": booking.status},
    )


def orphan_case_taken_up(
    reservation: PartnerReservation, booking: Booking, *, actor: Actor | str, actor_label: str = ""
) -> bool:
    """A duplicate's case whose booking no longer keeps its own reservation: the stray holds
    the booking up again (its cancel cannot complete, its end leaves it live, support has it), so
    the booking's move takes it up and the case closes, for support to have one item, not two.
    True if it closed now (the caller asks the stray's cancel again)."""
    locked = PartnerReservation.objects.select_for_update(no_key=True).get(pk=reservation.pk)
    case = _locked_case(locked)
    if case is None or not case.is_open or case.opened_because != OrphanFinding.DUPLICATE:
        return False
    _close(case, OrphanClosing.TAKEN_UP, by=actor_label or str(actor), automation=OrphanAutomation.CANCELLING)
    record_case_event(
        case,
        "orphan.taken_up",
        actor=actor,
        actor_label=actor_label,
        summary=(
            f"{booking.reference} is {booking.status}, no longer going ahead: it takes "
            f"{locked.partner_ref} up, asking the partner to cancel it again; case closed"
        ),
        data={"reservation": locked.partner_ref, "booking": booking.reference, "status": booking.status},
    )
    return True


def orphan_case_link(
    reservation: PartnerReservation,
    booking: Booking,
    *,
    kind: str,
    actor: Actor | str,
    actor_label: str = "",
    note: str = "",
    data: dict[str, Any] | None = None,
    cancel_withdrawn: bool = False,
) -> OrphanCaseEvent | None:
    """The orphan is `booking`'s reservation from now on: its case closes as linked (the
    caller reconciles the booking). `cancel_withdrawn`: the cancel decided for it was withdrawn
    before any was sent (`observations.orphan_cancel_withdrawn`). None when it had no case."""
    case = _locked_case(reservation)
    if case is None:
        return None
    _close(case, OrphanClosing.LINKED, by=actor_label or str(actor), note=note, booking=booking)
    withdrawn = "; its cancel, not sent yet, withdrawn" if cancel_withdrawn else ""
    extra = {"cancel_withdrawn": True} if cancel_withdrawn else {}
    return record_case_event(
        case,
        kind,
        actor=actor,
        actor_label=actor_label,
        summary=f"{reservation.partner_ref} linked to {booking.reference}{withdrawn}; case closed",
        data={"reservation": reservation.partner_ref, "booking": booking.reference, **extra, **(data or {})},
    )


NOT_LINKED = "orphan.not_linked"


def orphan_case_not_linked(
    reservation: PartnerReservation, booking: Booking, *, actor: Actor | str, actor_label: str = ""
) -> None:
    """The partner names `booking` for the orphan, but its cancel was sent (or verified) before:
    it stays an orphan, its cancel goes on, and the booking follows what the partner holds. Said
    once, on the booking's timeline and in the case's history."""
    if booking.events.filter(kind=NOT_LINKED, data__reservation=reservation.partner_ref).exists():
        return
    summary = (
        f"The partner answers {reservation.partner_ref} for {booking.reference}, but it was found an "
        f"orphan and its cancel was already sent: not linked, {booking.reference} follows what the "
        "partner holds"
    )
    data = {"reservation": reservation.partner_ref, "booking": booking.reference}
    record_event(booking, NOT_LINKED, actor=actor, actor_label=actor_label, summary=summary, data=data)
    case = _locked_case(reservation)
    if case is not None:
        record_case_event(case, NOT_LINKED, actor=actor, actor_label=actor_label, summary=summary, data=data)


def orphan_case_cancelling(
    case: OrphanCase,
    *,
    kind: str,
    actor: Actor | str,
    actor_label: str = "",
    summary: str,
    data: dict[str, Any] | None = None,
) -> OrphanCaseEvent:
    """Someone asked for the orphan to be cancelled at the partner: automation is on it (again)."""
    case.automation = OrphanAutomation.CANCELLING
    case.save(update_fields=["automation"])
    return record_case_event(case, kind, actor=actor, actor_label=actor_label, summary=summary, data=data)


def orphan_case_close(
    case: OrphanCase,
    *,
    kind: str,
    actor: Actor | str,
    actor_label: str,
    note: str,
    summary: str,
    data: dict[str, Any] | None = None,
) -> OrphanCaseEvent:
    """Support closes the case with a note (the caller checked that it may)."""
    _close(case, OrphanClosing.SUPPORT, by=actor_label, note=note)
    return record_case_event(case, kind, actor=actor, actor_label=actor_label, summary=summary, data=data)
