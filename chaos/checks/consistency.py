"""Confirmed means confirmed (invariant 6): a booking is confirmed here exactly when the partner
confirmed the reservation linked to it.

A partner-confirmed reservation for a booking that does not want it (failed, expired, ...) is
judged by the reservations check; one for a booking in needs_attention is a support case.
"""

from __future__ import annotations

from collections import Counter

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.model import Snapshot

OPEN = frozenset({"requested", "submitting", "pending_partner", "unknown", "cancel_requested"})


def check_confirmed_matches_partner(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="confirmed_matches_partner",
        invariant="confirmed locally <=> confirmed at the partner (for the linked reservation)",
    )
    by_reference = snapshot.truth_by_reference()
    truth_by_key = {(t.partner_code, t.partner_ref): t for t in snapshot.truth}
    linked: dict[str, list] = {}
    for reservation in snapshot.reservations:
        if reservation.booking_reference:
            linked.setdefault(reservation.booking_reference, []).append(reservation)
    figures: Counter[str] = Counter()

    for reference, booking in snapshot.bookings.items():
        truth = by_reference.get(reference, [])
        evidence = booking_evidence(booking, truth)
        primaries = [
            r
            for r in linked.get(reference, [])
            if r.role == "primary"
            and r.compensation_requested_at is None
            and r.status in ("pending", "confirmed")
        ]
        for ours in linked.get(reference, []):
            at_partner = truth_by_key.get((ours.partner_code, ours.partner_ref))
            if at_partner is not None and at_partner.status != ours.status:
                figures["our_view_behind_partner"] += 1
        partner_confirmed = [t for t in truth if t.status == "confirmed" and t.live]

        if booking.status == "confirmed":
            figures["confirmed"] += 1
            if len(primaries) != 1:
                result.violations.append(
                    Violation(
                        "confirmed_without_one_linked",
                        f"{reference} is confirmed with {len(primaries)} live linked reservations",
                        booking=reference,
                        evidence=evidence,
                    )
                )
                continue
            at_partner = truth_by_key.get((primaries[0].partner_code, primaries[0].partner_ref))
            if at_partner is None or not at_partner.live or at_partner.status != "confirmed":
                held = (
                    "missing"
                    if at_partner is None
                    else "lost"
                    if at_partner.vanished_at
                    else at_partner.status
                )
                result.violations.append(
                    Violation(
                        "confirmed_but_not_at_partner",
                        f"{reference} is confirmed but its reservation {primaries[0].partner_ref} is "
                        f"{held} at the partner",
                        booking=reference,
                        evidence=evidence,
                    )
                )
        elif partner_confirmed:
            if booking.status == "needs_attention":
                figures["partner_confirmed_needs_attention"] += 1
            elif booking.status in OPEN:
                result.violations.append(
                    Violation(
                        "partner_confirmed_not_reflected",
                        f"the partner confirmed {partner_confirmed[0].partner_ref} but {reference} is "
                        f"still {booking.status}",
                        booking=reference,
                        evidence=evidence,
                    )
                )
    result.figures = dict(sorted(figures.items()))
    return result
