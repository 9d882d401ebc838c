"""What a check returns: its violations (each with evidence) and its figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chaos.model import BookingRow, EventRow, TruthReservation

EXAMPLES_KEPT = 20  # violations kept in full per kind; the rest are counted


@dataclass(frozen=True)
class Violation:
    kind: str
    message: str
    booking: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "booking": self.booking,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass
class CheckResult:
    name: str
    invariant: str
    violations: list[Violation] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations

    def violation_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for v in self.violations:
            counts[v.kind] = counts.get(v.kind, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        kept: list[dict[str, Any]] = []
        seen: dict[str, int] = {}
        for v in self.violations:
            seen[v.kind] = seen.get(v.kind, 0) + 1
            if seen[v.kind] <= EXAMPLES_KEPT:
                kept.append(v.as_dict())
        return {
            "name": self.name,
            "invariant": self.invariant,
            "passed": self.passed,
            "violations": len(self.violations),
            "violations_by_kind": self.violation_counts(),
            "examples": kept,
            "figures": self.figures,
            "notes": self.notes,
        }


# Routine rows that repeat while a booking waits; left out of evidence unless nothing else is left.
ROUTINE = frozenset({"partner.observation.duplicate", "sync.completed", "webhook.duplicate"})
ROUTINE_OPERATIONS = frozenset({"get", "lookup", "list"})
HEAD, TAIL = 12, 28


def _routine(event: EventRow) -> bool:
    if event.kind in ROUTINE:
        return True
    return event.kind.startswith("partner.attempt.") and event.data.get("operation") in ROUTINE_OPERATIONS


def timeline(booking: BookingRow | None) -> list[str]:
    """The booking's timeline as evidence: every transition and decision, routine polling left out."""
    if booking is None:
        return []
    events = [e for e in booking.events if not _routine(e)]
    lines = [e.excerpt() for e in events]
    if len(lines) > HEAD + TAIL:
        lines = [*lines[:HEAD], f"... {len(lines) - HEAD - TAIL} rows ...", *lines[-TAIL:]]
    left_out = len(booking.events) - len(events)
    if left_out:
        lines.append(f"({left_out} routine rows left out: duplicate observations, syncs, lookups)")
    return lines


def truth_lines(reservations: list[TruthReservation]) -> list[str]:
    return [r.excerpt() for r in reservations]


def booking_evidence(booking: BookingRow | None, truth: list[TruthReservation]) -> dict[str, Any]:
    evidence: dict[str, Any] = {"timeline": timeline(booking), "partner_truth": truth_lines(truth)}
    if booking is not None:
        evidence["state"] = booking.status
        if booking.attention_reason:
            evidence["attention"] = f"{booking.attention_reason}: {booking.attention_detail[:300]}"
    return evidence
