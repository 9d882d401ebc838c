"""Everything ends (invariant 7): every booking is at rest (confirmed, terminal or needs_attention)
and got there within its deadline plus one sweep interval; needs_attention always carries a
reason. The reasons are listed with what the partner held, to judge whether a person was needed.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.config import SETTLED_STATES
from chaos.model import Snapshot, TruthReservation
from chaos.stats import summary


def check_everything_ends(snapshot: Snapshot, *, allowance_s: float, checked_at: datetime) -> CheckResult:
    result = CheckResult(
        name="everything_ends",
        invariant=f"every booking terminal or needs_attention within deadline + {allowance_s:g}s "
        "(one sweep interval + slack); needs_attention only with a reason",
    )
    allowance = timedelta(seconds=allowance_s)
    by_reference = snapshot.truth_by_reference()
    to_rest: list[float] = []
    lateness: list[float] = []
    reasons: dict[str, Counter[str]] = {}

    for reference, booking in snapshot.bookings.items():
        truth = by_reference.get(reference, [])
        if booking.status not in SETTLED_STATES:
            waited = "past" if checked_at > booking.deadline + allowance else "not yet past"
            result.violations.append(
                Violation(
                    "not_at_rest",
                    f"{reference} is still {booking.status} at the end of the run (deadline + allowance "
                    f"{waited})",
                    booking=reference,
                    evidence=booking_evidence(booking, truth),
                )
            )
            continue
        rested = booking.first_reached(SETTLED_STATES)
        if rested is None:
            continue  # no transition recorded: the timeline check reports it
        to_rest.append((rested.occurred_at - booking.created_at).total_seconds())
        late_s = (rested.occurred_at - booking.deadline).total_seconds()
        lateness.append(late_s)
        if rested.occurred_at > booking.deadline + allowance:
            result.violations.append(
                Violation(
                    "at_rest_too_late",
                    f"{reference} reached {rested.to_state} {late_s:.1f}s after its deadline "
                    f"(allowed {allowance_s:g}s)",
                    booking=reference,
                    evidence=booking_evidence(booking, truth),
                )
            )
        if booking.status == "needs_attention":
            if not booking.attention_reason:
                result.violations.append(
                    Violation(
                        "needs_attention_without_reason",
                        f"{reference} needs attention but says not why",
                        booking=reference,
                        evidence=booking_evidence(booking, truth),
                    )
                )
            reasons.setdefault(booking.attention_reason or "(none)", Counter())[_partner_view(truth)] += 1

    result.figures = {
        "final_states": dict(Counter(b.status for b in snapshot.bookings.values()).most_common()),
        "seconds_to_rest": summary(to_rest),
        "seconds_past_deadline_when_at_rest": summary(lateness),
        "needs_attention": {
            reason: {"count": sum(views.values()), "partner_holds": dict(views)}
            for reason, views in sorted(reasons.items())
        },
    }
    return result


def _partner_view(truth: list[TruthReservation]) -> str:
    """What the partner holds for a booking, in a few words."""
    if not truth:
        return "nothing"
    counts = Counter("lost" if r.vanished_at else r.status for r in truth)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
