"""The invariants of docs/design.md, checked over a run's snapshot. Pure: no database, no network."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chaos.checks.base import CheckResult, Violation
from chaos.checks.consistency import check_confirmed_matches_partner
from chaos.checks.customer import (
    check_confirmed_after_partner,
    check_ended_when_released,
    check_last_shown_final,
    check_never_backwards,
)
from chaos.checks.disagreements import check_partner_disagreements
from chaos.checks.ending import check_everything_ends
from chaos.checks.latency import check_latency
from chaos.checks.lost import check_no_booking_lost
from chaos.checks.mail import check_one_mail_per_change
from chaos.checks.money import money_checks
from chaos.checks.orphans import check_orphan_cases
from chaos.checks.reservations import check_partner_reservations
from chaos.checks.retries import check_tries_bounded
from chaos.checks.timelines import allowed_transitions, check_observations, check_timelines
from chaos.model import Snapshot

__all__ = ["CheckResult", "Limits", "Violation", "allowed_transitions", "run_all"]


@dataclass(frozen=True)
class Limits:
    """What the run's settings promise, for the checks to hold it to."""

    allowance_s: float  # invariant 7: at rest within deadline + this
    detection_window_s: float  # invariant 6: a partner's disagreement handed over within this
    max_retries: int  # every actor's Dramatiq max_retries
    refused_max_tries: int
    compensation_max_tries: int


def run_all(
    snapshot: Snapshot,
    *,
    allowed: frozenset[tuple[str, str]],
    limits: Limits,
    checked_at: datetime,
) -> list[CheckResult]:
    return [
        check_no_booking_lost(snapshot),
        check_partner_reservations(snapshot),
        check_orphan_cases(snapshot),
        check_confirmed_matches_partner(snapshot),
        check_partner_disagreements(snapshot, window_s=limits.detection_window_s, checked_at=checked_at),
        check_timelines(snapshot, allowed=allowed),
        check_observations(snapshot),
        check_everything_ends(snapshot, allowance_s=limits.allowance_s, checked_at=checked_at),
        check_tries_bounded(
            snapshot,
            max_retries=limits.max_retries,
            refused_max_tries=limits.refused_max_tries,
            compensation_max_tries=limits.compensation_max_tries,
        ),
        check_confirmed_after_partner(snapshot),
        check_ended_when_released(snapshot),
        check_never_backwards(snapshot),
        check_last_shown_final(snapshot),
        check_one_mail_per_change(snapshot),
        check_latency(snapshot),
        *money_checks(snapshot),
    ]
