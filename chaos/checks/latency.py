"""How long our state takes to reflect a partner change.

For each booking that ended confirmed or rejected by its partner: from the moment the partner
made the change (its ground-truth history, moved onto our clock by the configured clock skew)
to the timeline event in which the booking took the matching state. Split by partner profile and
by who carried the news (worker: the call's response or a lookup; webhook; sweeper: a listing).
Also, for every applied observation, from the partner's change to our receipt of it.
"""

from __future__ import annotations

from collections import defaultdict

from chaos.checks.base import CheckResult
from chaos.model import Snapshot
from chaos.stats import summary

REFLECTED = {"confirmed": "confirmed", "rejected": "rejected"}  # partner status -> booking state


def check_latency(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="partner_to_us_latency",
        invariant="time from a partner change to our state reflecting it (figures, not a pass/fail)",
    )
    primary = {
        r.booking_reference: r
        for r in snapshot.reservations
        if r.booking_reference and r.role == "primary" and r.compensation_requested_at is None
    }
    truth = {(t.partner_code, t.partner_ref): t for t in snapshot.truth}
    samples: dict[str, list[float]] = defaultdict(list)
    negative = 0

    for reference, booking in snapshot.bookings.items():
        wanted = REFLECTED.get(booking.status)
        ours = primary.get(reference)
        if wanted is None or ours is None:
            continue
        at_partner = truth.get((ours.partner_code, ours.partner_ref))
        change = at_partner.first(wanted) if at_partner else None
        event = booking.first_reached({wanted})
        if change is None or event is None:
            continue
        seconds = (event.occurred_at - snapshot.real_time(ours.partner_code, change.at)).total_seconds()
        negative += int(seconds < -0.5)
        profile = snapshot.profiles.get(ours.partner_code, "?")
        for key in ("all", f"{profile}", f"{profile} {wanted}", f"{profile} via {event.actor}"):
            samples[key].append(seconds)

    observed: dict[str, list[float]] = defaultdict(list)
    for row in snapshot.observations:
        at_partner = truth.get((row.partner_code, row.partner_ref))
        if row.result != "applied" or at_partner is None:
            continue
        change = next((h for h in at_partner.history if h.version == row.version), None) or at_partner.first(
            row.status
        )
        if change is None:
            continue
        seconds = (row.received_at - snapshot.real_time(row.partner_code, change.at)).total_seconds()
        observed[f"{snapshot.profiles.get(row.partner_code, '?')} via {row.source}"].append(seconds)

    result.figures = {
        "booking_state": {key: summary(values) for key, values in sorted(samples.items())},
        "observation_received": {key: summary(values) for key, values in sorted(observed.items())},
    }
    if negative:
        result.notes.append(
            f"{negative} samples were negative by more than 0.5 s: the configured clock skew does not "
            "describe the partner's clock (or our clock jumped)"
        )
    return result
