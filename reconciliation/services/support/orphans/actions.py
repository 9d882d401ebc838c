"""The three orphan actions (cancel at the partner, link to a booking, close with a note) in one
frame (`_orphan_action`): permission, a clean token, the locks (the booking named, or the one
whose stray duplicate the case is; the reservation, the case), once per token, the refusals
checked again under the locks, and a `support.*` row in the case's history (and on a stray
duplicate's booking's timeline); `support_orphan_action_run` runs one by name. A cancel
is a compensation decided in the action's transaction, due for the sweeper from then on, and
queued after commit as a hint: while our Redis is down the operator is told it is not queued yet."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from django.db import transaction

from bookings.models import Actor
from bookings.services import lock_booking
from bookings.timeline import record_event
from config.errors import InvalidTransition, NotFound, ValidationFailed
from partners import messages
from partners.models import (
    OrphanCase,
    OrphanCaseEvent,
    OrphanFinding,
    PartnerAttempt,
    PartnerReservation,
    ReservationRole,
)
from partners.services.observations import (
    reconcile_booking,
    request_compensation,
    request_compensation_again,
)
from partners.services.orphans import orphan_case_cancelling, orphan_case_close, orphan_case_link
from reconciliation.services.support import owed
from reconciliation.services.support.once import Ask, claim_token, clean_token, correction_data, target_key
from reconciliation.services.support.orphans.situation import (
    OrphanActionResult,
    OrphanSituation,
    booking_named,
    orphan_refusal,
)
from reconciliation.services.support.permissions import (
    ORPHAN_ACTIONS,
    ORPHAN_CANCEL,
    ORPHAN_CLOSE,
    ORPHAN_LINK,
    Operator,
)

logger = logging.getLogger(__name__)


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


def _duplicate_of(case_id: int) -> UUID | None:
    """The booking whose stray duplicate the case is about (None for an orphan's): it is locked
    first, and what support does to the case goes on its timeline too."""
    return (
        OrphanCase.objects.filter(pk=case_id, opened_because=OrphanFinding.DUPLICATE)
        .values_list("reservation__booking_id", flat=True)
        .first()
    )


def _on_the_bookings_timeline(situation: OrphanSituation, step: OrphanCaseEvent, summary: str) -> None:
    """Support's step on a stray duplicate's case, on its booking's timeline as well: support
    reading the booking's one timeline sees what was done to its duplicate, by whom, once (the
    row names the case's, which the timeline then does not show again). Not a move of the
    booking: no states on it."""
    booking = situation.duplicate_of
    if booking is None:
        return
    record_event(
        booking,
        step.kind,
        actor=step.actor,
        actor_label=step.actor_label,
        summary=f"Its duplicate's orphan case #{situation.case.pk}: {summary}",
        data={**step.data, "orphan_case": situation.case.pk, "orphan_case_event_id": step.pk},
    )


def _done_before(action: str, case: OrphanCase, token: str) -> OrphanActionResult | None:
    earlier = case.events.filter(kind__startswith="support.", data__action_token=token).order_by("id").first()
    if earlier is None:
        return None
    by = f"by {earlier.actor_label} at {earlier.occurred_at:%H:%M:%S} ({earlier.kind})"
    # A cancel no worker has tried yet may still wait for our queue: the broker says (`owed.told`).
    pending = action == ORPHAN_CANCEL and _cancel_not_taken_up(case.reservation)
    waiting = f"Already requested {by}; its cancel is {owed.NOT_QUEUED} Nothing more was done."
    return OrphanActionResult(
        action=action,
        case=case,
        performed=False,
        from_state=case.state,
        to_state=case.state,
        message=f"Already done {by}; nothing more was done.",
        booking=case.booking,
        hints=(messages.Hint(),) if pending else (),
        if_not_queued=waiting if pending else "",
    )


def _cancel_not_taken_up(reservation: PartnerReservation) -> bool:
    """Whether the cancel decided for `reservation` is unverified and untried since last asked for."""
    asked = reservation.compensation_requested_at
    return (
        asked is not None
        and reservation.compensated_at is None
        and not PartnerAttempt.objects.filter(reservation=reservation, started_at__gte=asked).exists()
    )


def _orphan_action(action: str) -> Callable[[Body], Body]:
    """Run the decorated body as the orphan action `action`: for an operator with its
    permission, with a clean token, on the case locked in one short transaction (after the
    booking named, for a link), only when the checks let it; a token already used for this ask
    returns the earlier result, one used for another ask is refused (`once.claim_token`).
    `batch`: every case the token covers (`#<id>`, a command over several); default, this one."""

    def decorate(body: Body) -> Body:
        @functools.wraps(body)
        def run(
            *,
            case_id: int,
            operator: Operator,
            token: str,
            note: str = "",
            booking_reference: str = "",
            batch: Sequence[str] = (),
            **kwargs: Any,
        ) -> OrphanActionResult:
            operator.require(ORPHAN_ACTIONS[action]["permission"])
            token = clean_token(token)
            named = booking_named(booking_reference) if booking_reference else None
            stray_of = None if named else _duplicate_of(case_id)
            with transaction.atomic():
                booking = lock_booking(named.pk) if named else None  # lock order: booking, reservation, case
                owner = lock_booking(stray_of) if stray_of else None  # the same order: its booking first
                case = _lock_case(case_id)
                asked = {"booking": booking.reference if booking else None}
                claim_token(
                    token, Ask.of(action, target_key(case), operator=operator.label, batch=batch, **asked)
                )
                done = _done_before(action, case, token)
                if done is None:
                    situation = OrphanSituation(
                        case, operator=operator, booking=booking, note=note, duplicate_of=owner
                    )
                    why_not = orphan_refusal(action, situation)
                    if why_not:
                        raise InvalidTransition(why_not)
                    result = body(situation, token=token, **kwargs)
            # Committed (the broker is asked outside the locks): its hints have run, unless a
            # caller's transaction is still open.
            if done is not None:
                return owed.told(done, done.hints)
            result = owed.told(result, result.hints)
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
        hint = request_compensation_again(reservation)  # decided before (stalled, or given up)
    else:
        hint = request_compensation(
            reservation.pk, reason="orphan", booking=None, actor=Actor.SUPPORT, actor_label=operator.label
        )
    summary = (
        f"Cancel of {reservation.partner_ref} at the partner requested{' again' if again else ''} "
        f"by {operator.label}"
    )
    step = orphan_case_cancelling(
        case,
        kind=ORPHAN_ACTIONS[ORPHAN_CANCEL]["kind"],
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        summary=summary,
        data=correction_data(token, situation.note or "", reservation=reservation.partner_ref, again=again),
    )
    _on_the_bookings_timeline(situation, step, summary)
    return OrphanActionResult(
        ORPHAN_CANCEL,
        case,
        True,
        case.state,
        case.state,
        "Cancel queued.",
        hints=(hint,) if hint else (),
        if_not_queued=f"Cancel requested, {owed.NOT_QUEUED}",
    )


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
    summary = f"Closed by {operator.label} ({reservation.partner_ref} {reservation.status}): {note[:200]}"
    step = orphan_case_close(
        case,
        kind=ORPHAN_ACTIONS[ORPHAN_CLOSE]["kind"],
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        note=note,
        summary=summary,
        data=correction_data(token, note, reservation=reservation.partner_ref, status=reservation.status),
    )
    _on_the_bookings_timeline(situation, step, summary)
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
    batch: Sequence[str] = (),
) -> OrphanActionResult:
    """Run the orphan action named `action` (the console's and the commands' one entry)."""
    if action not in _RUNS:
        raise ValidationFailed(f"Unknown orphan action {action!r}; known: {', '.join(_RUNS)}.")
    kwargs: dict[str, Any] = {
        "case_id": case_id,
        "operator": operator,
        "token": token,
        "note": note,
        "batch": batch,
    }
    if action == ORPHAN_LINK:
        kwargs.update(booking_reference=booking_reference, expected_live=expected_live)
    return _RUNS[action](**kwargs)
