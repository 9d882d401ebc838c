"""Partner disagreements are detected and handed over (invariant 6): no booking stays confirmed
for a reservation its partner cancelled, lost or changed, beyond the detection window.

Judged by each partner's own history: for every booking that was confirmed, the first thing the
partner did to the booking's reservation on its own (`partner_cancel`, `vanish`, `amend`). From
then (or from our confirmation, if later) the booking must leave `confirmed` within the window:
to support (`needs_attention`, with the reason the kind calls for), or by the customer's cancel.
A booking still confirmed when the window has not yet passed at the end of the run is counted,
not judged (the run waits the window out after its load, so there should be none).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime, timedelta

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.model import INITIATIVES, BookingRow, EventRow, OurReservation, Snapshot
from chaos.stats import summary

# The reason support sees for each kind of disagreement.
REASONS = {
    "cancelled": "partner_cancelled_confirmed",
    "lost": "partner_lost_reservation",
    "changed": "partner_mismatch",
}


def check_partner_disagreements(snapshot: Snapshot, *, window_s: float, checked_at: datetime) -> CheckResult:
    result = CheckResult(
        name="partner_disagreements",
        invariant=f"no booking stays confirmed more than {window_s:g}s after its partner cancelled, lost "
        "or changed its reservation: each is handed over (needs_attention with the reason)",
    )
    window = timedelta(seconds=window_s)
    by_reference = snapshot.truth_by_reference()
    ours = snapshot.ours_by_key()
    figures: Counter[str] = Counter()
    seconds: dict[str, list[float]] = defaultdict(list)
    reasons: dict[str, Counter[str]] = defaultdict(Counter)

    for reference, booking in snapshot.bookings.items():
        confirmed = booking.first_reached({"confirmed"})
        if confirmed is None:
            continue  # never confirmed: the other checks judge what became of it
        for reservation in by_reference.get(reference, []):
            if not _kept_by(ours.get((reservation.partner_code, reservation.partner_ref)), reference):
                continue
            initiative = reservation.initiatives()
            if not initiative:
                continue
            kind = INITIATIVES[initiative[0].cause]
            figures[f"partner_{kind}"] += 1
            since = max(snapshot.real_time(reservation.partner_code, initiative[0].at), confirmed.occurred_at)
            left = _left_confirmed(booking, after=confirmed.occurred_at)
            evidence = booking_evidence(booking, by_reference.get(reference, []))
            if left is None:
                if booking.status != "confirmed":
                    continue  # the timeline check reports a state no transition reached
                if checked_at <= since + window:
                    figures["still_within_window_at_end"] += 1
                    continue
                waited = (checked_at - since).total_seconds()
                result.violations.append(
                    Violation(
                        f"confirmed_but_partner_{kind}",
                        f"{reference} is still confirmed {waited:.0f}s after the partner {kind} "
                        f"{reservation.partner_ref} (window {window_s:g}s)",
                        booking=reference,
                        evidence=evidence,
                    )
                )
                continue
            took = (left.occurred_at - since).total_seconds()
            seconds[kind].append(took)
            if left.to_state == "needs_attention":
                reasons[kind][booking.attention_reason or "(none)"] += 1
            else:
                figures[f"left_confirmed_for_{left.to_state}"] += 1
            if left.occurred_at > since + window:
                result.violations.append(
                    Violation(
                        "handed_over_too_late",
                        f"{reference} left confirmed {took:.0f}s after the partner {kind} "
                        f"{reservation.partner_ref} (window {window_s:g}s)",
                        booking=reference,
                        evidence=evidence,
                    )
                )
            elif left.to_state == "needs_attention" and booking.attention_reason != REASONS[kind]:
                figures["handed_over_for_another_reason"] += 1

    result.figures = {
        "window_s": round(window_s, 1),
        **{key: figures[key] for key in ("partner_cancelled", "partner_lost", "partner_changed")},
        **dict(sorted((k, v) for k, v in figures.items() if not k.startswith("partner_"))),
        "seconds_to_hand_over": {kind: summary(values) for kind, values in sorted(seconds.items())},
        "reasons": {kind: dict(counts) for kind, counts in sorted(reasons.items())},
    }
    return result


def _kept_by(known: OurReservation | None, reference: str) -> bool:
    """Is it the reservation the booking keeps (not one we were letting go, nor one unknown)?"""
    return (
        known is not None
        and known.booking_reference == reference
        and known.role == "primary"
        and known.compensation_requested_at is None
    )


def _left_confirmed(booking: BookingRow, *, after: datetime) -> EventRow | None:
    """The first move out of `confirmed` since the booking was confirmed."""
    return next(
        (
            e
            for e in booking.events
            if e.is_transition and e.from_state == "confirmed" and e.occurred_at >= after
        ),
        None,
    )
