"""Support actions on an orphan case (a partner reservation no booking wants), in the frame of
the booking actions: permission, a preview with our record beside the partner's live answer,
the same checks re-run under the locks, once per token, and a `support.*` row in the case's
history (and on the booking's timeline when it is linked to one).

- cancel at the partner: the compensation actor cancels and verifies it (a cancel decided
  before is driven again, with a fresh budget of tries); the case closes itself once verified;
- link to a booking of the same partner: the reservation becomes the booking's and the one door
  reconciles the booking (a second live reservation becomes a duplicate that is cancelled, a
  failed booking has it cancelled, an open one may be confirmed by it);
- close with a note: refused while a cancel is under way, and while the partner holds it live
  unless the operator may also close live orphans.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.services import lock_booking
from bookings.timeline import record_event
from config.errors import InvalidTransition, NotFound, ValidationFailed
from partners import decisions, messages
from partners.models import (
    OrphanAutomation,
    OrphanCase,
    PartnerReservation,
    ReservationRole,
)
from partners.services.observations import is_fenced, reconcile_booking, request_compensation
from partners.services.orphans import orphan_case_cancelling, orphan_case_close, orphan_case_link
from reconciliation.services.support.once import clean_token, correction_data, new_token
from reconciliation.services.support.partner_side import (
    PartnerSide,
    ReservationPair,
    last_known,
    pair_up,
    reservation_side,
)
from reconciliation.services.support.permissions import (
    CLOSE_LIVE_ORPHAN_PERMISSION,
    ORPHAN_ACTIONS,
    ORPHAN_CANCEL,
    ORPHAN_CLOSE,
    ORPHAN_LINK,
    Operator,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrphanActionResult:
    action: str
    case: OrphanCase
    performed: bool  # False: a double submit (token already seen); nothing was done
    from_state: str
    to_state: str
    message: str
    booking: Booking | None = None

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
    ) -> None:
        self.case = case
        self.reservation = case.reservation
        self.operator = operator
        self.booking = booking
        self.note = note

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


# --- previews ---------------------------------------------------------------------------------


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


def orphan_case_by_id(case_id: int | str) -> OrphanCase:
    case = (
        OrphanCase.objects.select_related("reservation__partner", "booking").filter(pk=case_id).first()
        if str(case_id).isdigit()
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


def _booking_named(reference: str) -> Booking:
    booking = Booking.objects.select_related("partner").filter(reference=reference.strip().upper()).first()
    if booking is None:
        raise NotFound(f"No booking {reference!r}.")
    return booking


def orphan_preview(
    action: str,
    case: OrphanCase,
    *,
    operator: Operator,
    booking_reference: str = "",
    live: bool = True,
    token: str | None = None,
) -> OrphanPreview:
    """What `action` will do to the case: our record beside the partner's (asked live). For a
    link, the booking named (default: the one the client reference names)."""
    if action not in ORPHAN_ACTIONS:
        raise ValidationFailed(f"Unknown orphan action {action!r}; known: {', '.join(ORPHAN_ACTIONS)}.")
    case = orphan_case_by_id(case.pk)
    booking = None
    if action == ORPHAN_LINK:
        booking = _booking_named(booking_reference) if booking_reference else link_candidate(case)
    situation = OrphanSituation(case, operator=operator, booking=booking)
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


# --- actions ------------------------------------------------------------------------------------

Body = Callable[..., OrphanActionResult]


def _lock_case(case_id: int) -> OrphanCase:
    """Lock the case's reservation, then the case (the one door's order: reservation, case)."""
    reservation_id = OrphanCase.objects.filter(pk=case_id).values_list("reservation_id", flat=True).first()
    if reservation_id is None:
        raise NotFound(f"No orphan case {case_id!r}.")
    reservation = (
        PartnerReservation.objects.select_for_update(no_key=True)
        .select_related("partner")
        .get(pk=reservation_id)
    )
    case = OrphanCase.objects.select_for_update().get(pk=case_id)
    case.reservation = reservation
    return case


def _done_before(action: str, case: OrphanCase, token: str) -> OrphanActionResult | None:
    earlier = case.events.filter(kind__startswith="support.", data__action_token=token).order_by("id").first()
    if earlier is None:
        return None
    return OrphanActionResult(
        action=action,
        case=case,
        performed=False,
        from_state=case.state,
        to_state=case.state,
        message=(
            f"Already done by {earlier.actor_label} at {earlier.occurred_at:%H:%M:%S} "
            f"({earlier.kind}); nothing more was done."
        ),
        booking=case.booking,
    )


def _orphan_action(action: str) -> Callable[[Body], Body]:
    """Run the decorated body as the orphan action `action`: for an operator with its
    permission, with a clean token, on the case locked in one short transaction (after the
    booking named, for a link), only when the checks let it; a token already used returns the
    earlier result."""

    def decorate(body: Body) -> Body:
        @functools.wraps(body)
        def run(
            *,
            case_id: int,
            operator: Operator,
            token: str,
            note: str = "",
            booking_reference: str = "",
            **kwargs: Any,
        ) -> OrphanActionResult:
            operator.require(ORPHAN_ACTIONS[action]["permission"])
            token = clean_token(token)
            named = _booking_named(booking_reference) if booking_reference else None
            with transaction.atomic():
                booking = lock_booking(named.pk) if named else None  # lock order: booking, reservation, case
                case = _lock_case(case_id)
                done = _done_before(action, case, token)
                if done:
                    return done
                situation = OrphanSituation(case, operator=operator, booking=booking, note=note)
                why_not = orphan_refusal(action, situation)
                if why_not:
                    raise InvalidTransition(why_not)
                result = body(situation, token=token, **kwargs)
            logger.info(
                "support orphan action",
                extra={
                    "action": action,
                    "by": operator.label,
                    "partner_ref": case.reservation.partner_ref,
                    "booking": booking.reference if booking else None,
                },
            )
            return result

        return run

    return decorate


@_orphan_action(ORPHAN_CANCEL)
def support_orphan_cancel(situation: OrphanSituation, *, token: str) -> OrphanActionResult:
    """Cancel the orphan at the partner through the compensation actor, verified by a lookup."""
    case, reservation, operator = situation.case, situation.reservation, situation.operator
    again = reservation.compensation_requested_at is not None
    if again:
        # Decided before (stalled, or given up): its tries count from now, and it is sent again.
        PartnerReservation.objects.filter(pk=reservation.pk).update(compensation_requested_at=timezone.now())
        transaction.on_commit(
            lambda: messages.send_for_partner(
                messages.COMPENSATE_RESERVATION, reservation.partner, reservation.pk
            )
        )
    else:
        request_compensation(
            reservation.pk, reason="orphan", booking=None, actor=Actor.SUPPORT, actor_label=operator.label
        )
    orphan_case_cancelling(
        case,
        kind=ORPHAN_ACTIONS[ORPHAN_CANCEL]["kind"],
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        summary=f"Cancel of {reservation.partner_ref} at the partner requested{' again' if again else ''} "
        f"by {operator.label}",
        data=correction_data(token, situation.note or "", reservation=reservation.partner_ref, again=again),
    )
    return OrphanActionResult(ORPHAN_CANCEL, case, True, case.state, case.state, "Cancel queued.")


@_orphan_action(ORPHAN_LINK)
def support_orphan_link(
    situation: OrphanSituation, *, token: str, expected_live: Sequence[str] = ()
) -> OrphanActionResult:
    """Make the orphan the booking's reservation and let the one door reconcile the booking.

    `expected_live`: the booking's live reservations the confirmed preview showed; a booking that
    holds others now would get a second live reservation nobody was told of, and is refused.
    """
    case, reservation, booking, operator = (
        situation.case,
        situation.reservation,
        situation.booking,
        situation.operator,
    )
    unseen = sorted(set(situation.booking_live) - set(expected_live))
    if unseen:
        raise InvalidTransition(
            f"{booking.reference} holds {', '.join(unseen)} live, which the preview you confirmed did not "
            "show: it would get a second live reservation. Preview again."
        )
    note = (situation.note or "").strip()
    old = case.state
    reservation.booking, reservation.role = booking, ReservationRole.PRIMARY
    reservation.save(update_fields=["booking", "role"])
    kind = ORPHAN_ACTIONS[ORPHAN_LINK]["kind"]
    data = correction_data(token, note, reservation=reservation.partner_ref, status=reservation.status)
    linked = orphan_case_link(
        reservation, booking, kind=kind, actor=Actor.SUPPORT, actor_label=operator.label, note=note, data=data
    )
    record_event(
        booking,
        kind,
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        summary=f"Orphan {reservation.partner_ref} ({reservation.status}) linked by {operator.label}"
        + (f": {note[:200]}" if note else ""),
        from_state=booking.status,
        to_state=booking.status,
        data={**data, "orphan_case": case.pk, "orphan_case_event_id": linked.pk if linked else None},
    )
    old_status = booking.status
    reconcile_booking(booking, actor=Actor.SUPPORT, actor_label=operator.label)
    moved = f" ({old_status} → {booking.status})" if booking.status != old_status else ""
    case.refresh_from_db(fields=["state"])
    return OrphanActionResult(
        ORPHAN_LINK, case, True, old, case.state, f"Linked to {booking.reference}{moved}.", booking=booking
    )


@_orphan_action(ORPHAN_CLOSE)
def support_orphan_close(situation: OrphanSituation, *, token: str) -> OrphanActionResult:
    """Close the case with a note; nothing is asked of the partner."""
    note = (situation.note or "").strip()
    if not note:
        raise ValidationFailed("A note is required to close an orphan case.", fields={"note": ["Required."]})
    case, reservation, operator = situation.case, situation.reservation, situation.operator
    old = case.state
    orphan_case_close(
        case,
        kind=ORPHAN_ACTIONS[ORPHAN_CLOSE]["kind"],
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        note=note,
        summary=f"Closed by {operator.label} ({reservation.partner_ref} {reservation.status}): {note[:200]}",
        data=correction_data(token, note, reservation=reservation.partner_ref, status=reservation.status),
    )
    return OrphanActionResult(ORPHAN_CLOSE, case, True, old, case.state, "Case closed.")


_RUNS: dict[str, Body] = {
    ORPHAN_CANCEL: support_orphan_cancel,
    ORPHAN_LINK: support_orphan_link,
    ORPHAN_CLOSE: support_orphan_close,
}


def support_orphan_action_run(
    action: str,
    *,
    case_id: int,
    operator: Operator,
    token: str,
    note: str = "",
    booking_reference: str = "",
    expected_live: Sequence[str] = (),
) -> OrphanActionResult:
    """Run the orphan action named `action` (the console's and the commands' one entry)."""
    if action not in _RUNS:
        raise ValidationFailed(f"Unknown orphan action {action!r}; known: {', '.join(_RUNS)}.")
    kwargs: dict[str, Any] = {"case_id": case_id, "operator": operator, "token": token, "note": note}
    if action == ORPHAN_LINK:
        kwargs.update(booking_reference=booking_reference, expected_live=expected_live)
    return _RUNS[action](**kwargs)
