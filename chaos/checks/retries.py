"""Nothing is tried past its tries: no Dramatiq message is retried more than its actor's
`max_retries` (counted from the workers' logs, where Dramatiq writes each retry), no booking's
partner answers are refused at our edge more than PARTNER_REFUSED_MAX_TRIES times in a row (then
support has it), and no reservation is cancelled more than PARTNER_COMPENSATION_MAX_TRIES times.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.model import OurReservation, Snapshot, TruthReservation

# The causes in a partner's history that cancelled the reservation (ours, or its own).
CANCEL_CAUSES = frozenset({"cancel", "partner_cancel"})


def check_tries_bounded(
    snapshot: Snapshot, *, max_retries: int, refused_max_tries: int, compensation_max_tries: int
) -> CheckResult:
    result = CheckResult(
        name="tries_bounded",
        invariant=f"no message retried more than {max_retries} times, no booking read past "
        f"{refused_max_tries} refused answers in a row, no reservation cancelled more than "
        f"{compensation_max_tries} times",
    )
    by_reference = snapshot.truth_by_reference()
    for message_id, lines in snapshot.retried.items():
        if len(lines) > max_retries:
            result.violations.append(
                Violation(
                    "message_retried_past_its_tries",
                    f"message {message_id} was retried {len(lines)} times (max_retries {max_retries})",
                    evidence={"log": lines[:20]},
                )
            )
    for reference, refused in snapshot.refused_in_a_row.items():
        if refused > refused_max_tries:
            result.violations.append(
                Violation(
                    "read_past_its_refusals",
                    f"{reference}'s partner answers were refused {refused} times in a row "
                    f"(PARTNER_REFUSED_MAX_TRIES {refused_max_tries})",
                    booking=reference,
                    evidence=booking_evidence(
                        snapshot.bookings.get(reference), by_reference.get(reference, [])
                    ),
                )
            )
    ours = snapshot.ours_by_key()
    held = {(r.partner_code, r.partner_ref): r for r in snapshot.truth}
    for (code, partner_ref), calls in snapshot.cancel_calls.items():
        if calls > compensation_max_tries:
            reservation = ours.get((code, partner_ref))
            reference = reservation.booking_reference if reservation else None
            result.violations.append(
                Violation(
                    "cancelled_past_its_tries",
                    f"{code}:{partner_ref} ({reference or 'no booking'}) was cancelled {calls} times "
                    f"(PARTNER_COMPENSATION_MAX_TRIES {compensation_max_tries})",
                    booking=reference,
                    evidence=_cancel_evidence(
                        snapshot, by_reference, reservation, held.get((code, partner_ref))
                    ),
                )
            )
    retries = Counter(len(lines) for lines in snapshot.retried.values())
    result.figures = {
        "messages_retried": len(snapshot.retried),
        "most_retries_of_a_message": max(retries, default=0),
        "bookings_with_refused_answers": len(snapshot.refused_in_a_row),
        "most_refused_in_a_row": max(snapshot.refused_in_a_row.values(), default=0),
        "most_cancels_of_a_reservation": max(snapshot.cancel_calls.values(), default=0),
        "messages_by_retries": dict(sorted(retries.items())),
    }
    return result


def _cancel_evidence(
    snapshot: Snapshot,
    by_reference: dict[str, list[TruthReservation]],
    reservation: OurReservation | None,
    truth: TruthReservation | None,
) -> dict[str, Any]:
    """The booking the reservation belongs to (its timeline, where the compensation's tries and
    hand-over are), our record of the compensation, and what the partner recorded of it: when
    a cancel (ours, or its own) took effect."""
    reference = reservation.booking_reference if reservation else None
    evidence: dict[str, Any] = (
        booking_evidence(snapshot.bookings.get(reference), by_reference.get(reference, []))
        if reference
        else {}
    )
    if reservation is not None:
        evidence["ours"] = {
            "role": reservation.role,
            "status": reservation.status,
            "compensation_reason": reservation.compensation_reason,
            "compensation_requested_at": _iso(reservation.compensation_requested_at),
            "compensated_at": _iso(reservation.compensated_at),
        }
        if reservation.case_state:
            evidence["ours"]["orphan_case"] = reservation.case_state
            evidence["ours"]["orphan_automation"] = reservation.case_automation
    if truth is not None:
        evidence["partner_reservation"] = truth.excerpt()
        evidence["partner_cancels"] = [
            f"v{h.version} {h.status} @{h.at.isoformat(timespec='milliseconds')} ({h.cause})"
            for h in truth.history
            if h.cause in CANCEL_CAUSES
        ]
    return evidence


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds") if moment else None
