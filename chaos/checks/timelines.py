"""No regression: every booking's timeline is an unbroken walk over allowed transitions ending in
its current state, and the one door for partner truth never applied an older observation
(invariants 1 and 8)."""

from __future__ import annotations

import itertools
from collections import Counter

from chaos.checks.base import CheckResult, Violation, booking_evidence, timeline
from chaos.model import ObservationRow, Snapshot, TruthReservation

RANK = {"pending": 0, "confirmed": 1, "rejected": 2, "cancelled": 2, "lost": 2}
CREATED = ("", "requested")
# A booking that pays is created awaiting its payment, and requested once the hold is made.
CREATED_PAYING = ("", "awaiting_payment")


def allowed_transitions() -> frozenset[tuple[str, str]]:
    """(from, to) of every transition the booking state machine declares, plus the creation."""
    from bookings.models import status_edges

    pairs = {(source, target) for _, source, target in status_edges()}
    return frozenset(pairs | {CREATED, CREATED_PAYING})


def check_timelines(snapshot: Snapshot, *, allowed: frozenset[tuple[str, str]]) -> CheckResult:
    result = CheckResult(
        name="timelines",
        invariant="no state regression: each timeline is a chain of allowed transitions ending in "
        "the booking's state",
    )
    figures: Counter[str] = Counter()
    for reference, booking in snapshot.bookings.items():
        moves = [e for e in booking.events if e.is_transition]
        figures["transitions"] += len(moves)
        if not moves or (moves[0].from_state, moves[0].to_state) not in (CREATED, CREATED_PAYING):
            result.violations.append(
                Violation(
                    "no_creation_event",
                    f"{reference}'s timeline does not start with its creation",
                    booking=reference,
                    evidence={"timeline": timeline(booking)},
                )
            )
        for previous, move in itertools.pairwise(moves):
            if move.from_state != previous.to_state:
                result.violations.append(
                    Violation(
                        "broken_chain",
                        f"{reference}: event #{move.id} moves from {move.from_state} but the booking "
                        f"was {previous.to_state} (#{previous.id})",
                        booking=reference,
                        evidence={"timeline": timeline(booking)},
                    )
                )
            if (move.from_state, move.to_state) not in allowed:
                result.violations.append(
                    Violation(
                        "transition_not_allowed",
                        f"{reference}: #{move.id} {move.from_state} -> {move.to_state} is not a "
                        "declared transition",
                        booking=reference,
                        evidence={"timeline": timeline(booking)},
                    )
                )
        if moves and moves[-1].to_state != booking.status:
            result.violations.append(
                Violation(
                    "state_not_on_timeline",
                    f"{reference} is {booking.status} but its timeline ends in {moves[-1].to_state}",
                    booking=reference,
                    evidence={"timeline": timeline(booking)},
                )
            )
    result.figures = dict(figures)
    return result


def check_observations(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="observations_monotonic",
        invariant="the one door never applied an observation older than what it held, and every "
        "applied observation is what the partner really had",
    )
    truth = {(t.partner_code, t.partner_ref): t for t in snapshot.truth}
    by_reservation: dict[tuple[str, str], list[ObservationRow]] = {}
    for row in snapshot.observations:
        by_reservation.setdefault((row.partner_code, row.partner_ref), []).append(row)
    figures: Counter[str] = Counter(f"{row.source}_{row.result}" for row in snapshot.observations)
    by_reference = snapshot.truth_by_reference()

    for key, rows in by_reservation.items():
        applied = [r for r in rows if r.result == "applied"]
        at_partner = truth.get(key)
        for previous, row in itertools.pairwise(applied):
            problem = _regression(previous, row)
            if problem:
                result.violations.append(
                    _observation_violation(snapshot, by_reference, key, "applied_older", problem, rows)
                )
        if at_partner is None:
            continue
        history = {h.version: h.status for h in at_partner.history}
        for row in applied:
            if row.status == "lost":
                if at_partner.vanished_at is None:  # concluded from two 404s: true only if it vanished
                    problem = "applied lost, yet the partner never lost it"
                    result.violations.append(
                        _observation_violation(snapshot, by_reference, key, "applied_untrue", problem, rows)
                    )
            elif row.version is not None and history.get(row.version) not in (None, row.status):
                problem = (
                    f"applied v{row.version} {row.status}; the partner's v{row.version} is "
                    f"{history[row.version]}"
                )
                result.violations.append(
                    _observation_violation(snapshot, by_reference, key, "applied_untrue", problem, rows)
                )
            elif row.version is None and row.status not in history.values():
                problem = f"applied {row.status}, a status the partner never gave it"
                result.violations.append(
                    _observation_violation(snapshot, by_reference, key, "applied_untrue", problem, rows)
                )
    result.figures = dict(sorted(figures.items()))
    return result


def _regression(previous: ObservationRow, row: ObservationRow) -> str:
    if previous.version is not None and row.version is not None and row.version <= previous.version:
        return f"applied v{row.version} after v{previous.version}"
    if RANK[row.status] < RANK[previous.status]:
        return f"applied {row.status} after {previous.status}"
    if (
        previous.partner_modified_at is not None
        and row.partner_modified_at is not None
        and row.partner_modified_at < previous.partner_modified_at
    ):
        return f"applied a change of {row.partner_modified_at} after one of {previous.partner_modified_at}"
    return ""


def _observation_violation(
    snapshot: Snapshot,
    by_reference: dict[str, list[TruthReservation]],
    key: tuple[str, str],
    kind: str,
    problem: str,
    rows: list[ObservationRow],
) -> Violation:
    partner_code, partner_ref = key
    truth = next((t for t in snapshot.truth if (t.partner_code, t.partner_ref) == key), None)
    booking = snapshot.bookings.get(truth.client_reference) if truth else None
    evidence = booking_evidence(booking, by_reference.get(truth.client_reference, []) if truth else [])
    evidence["observations"] = [
        f"#{r.id} {r.source} {r.status} v{r.version} modified={r.partner_modified_at} -> {r.result}"
        for r in rows
    ]
    return Violation(
        kind,
        f"{partner_code}:{partner_ref}: {problem}",
        booking=booking.reference if booking else None,
        evidence=evidence,
    )
