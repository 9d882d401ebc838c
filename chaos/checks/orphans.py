"""Orphans are cases (invariant 5's hand-over), judged by the partner's own store: no reservation
that no booking wants is left live at the partner without someone on it.

- `orphan_live_without_case`: the partner holds live a reservation we hold as nobody's, and it
  has neither an open case nor a verified cancel;
- `orphan_seen_live_without_case`: we saw an orphan live and never opened its case (whatever
  became of it since);
- figures: orphans held, seen live, their cases open / flagged (automation gave up) / closed, and
  how the closed ones closed.
"""

from __future__ import annotations

from collections import Counter

from chaos.checks.base import CheckResult, Violation, truth_lines
from chaos.model import LIVE, Snapshot


def check_orphan_cases(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="orphan_cases",
        invariant="every reservation no booking wants is a case for support while the partner holds it "
        "live: an open case, or a verified cancel",
    )
    truth = {(t.partner_code, t.partner_ref): t for t in snapshot.truth}
    seen_live = {
        (o.partner_code, o.partner_ref)
        for o in snapshot.observations
        if o.status in LIVE and o.result == "applied"
    }
    figures: Counter[str] = Counter()
    for ours in snapshot.reservations:
        if ours.booking_reference is not None:
            continue  # a booking's (perhaps an orphan linked since): partner_reservations judges it
        key = (ours.partner_code, ours.partner_ref)
        figures["orphans_held"] += 1
        figures[f"cases_{ours.case_state or 'none'}"] += 1
        if ours.case_state == "open" and ours.case_automation == "cancel_failed":
            figures["cases_flagged"] += 1
        at_partner = truth.get(key)
        evidence = {
            "ours": f"{ours.partner_code}:{ours.partner_ref} {ours.status}, case {ours.case_state or 'none'}"
            f" ({ours.case_automation or '-'}), compensation {ours.compensation_reason or '-'} "
            f"{'verified' if ours.compensated_at else 'not verified'}",
            "partner_truth": truth_lines([at_partner] if at_partner else []),
        }
        if key in seen_live:
            figures["orphans_seen_live"] += 1
            if not ours.case_state:
                result.violations.append(
                    Violation(
                        "orphan_seen_live_without_case",
                        f"we saw orphan {ours.partner_code}:{ours.partner_ref} live and opened no case",
                        evidence=evidence,
                    )
                )
        if at_partner is not None and at_partner.live:
            figures["orphans_live_at_partner"] += 1
            if ours.case_state != "open" and ours.compensated_at is None:
                result.violations.append(
                    Violation(
                        "orphan_live_without_case",
                        f"the partner holds orphan {ours.partner_code}:{ours.partner_ref} "
                        f"({at_partner.status}) and nobody is on it: case {ours.case_state or 'none'}, "
                        "no verified cancel",
                        evidence=evidence,
                    )
                )
    for key in (
        "orphans_held",
        "orphans_seen_live",
        "orphans_live_at_partner",
        "cases_open",
        "cases_flagged",
    ):
        figures.setdefault(key, 0)
    result.figures = dict(sorted(figures.items()))
    return result
