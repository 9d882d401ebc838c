"""The invariants of docs/design.md, checked over a run's snapshot. Pure: no database, no network."""

from __future__ import annotations

from datetime import datetime

from chaos.checks.base import CheckResult, Violation
from chaos.checks.consistency import check_confirmed_matches_partner
from chaos.checks.ending import check_everything_ends
from chaos.checks.latency import check_latency
from chaos.checks.lost import check_no_booking_lost
from chaos.checks.orphans import check_orphan_cases
from chaos.checks.reservations import check_partner_reservations
from chaos.checks.timelines import allowed_transitions, check_observations, check_timelines
from chaos.model import Snapshot

__all__ = ["CheckResult", "Violation", "allowed_transitions", "run_all"]


def run_all(
    snapshot: Snapshot,
    *,
    allowed: frozenset[tuple[str, str]],
    allowance_s: float,
    checked_at: datetime,
) -> list[CheckResult]:
    return [
        check_no_booking_lost(snapshot),
        check_partner_reservations(snapshot),
        check_orphan_cases(snapshot),
        check_confirmed_matches_partner(snapshot),
        check_timelines(snapshot, allowed=allowed),
        check_observations(snapshot),
        check_everything_ends(snapshot, allowance_s=allowance_s, checked_at=checked_at),
        check_latency(snapshot),
    ]
