"""Partner reservations at rest (invariants 4 and 5), judged by the partner's own store.

- never a blind second create: the partner holds one reservation per booking reference (each
  duplicate is a violation, even when compensated; the figures say how many were left live);
- at most one live reservation per booking at the partner, apart from a stray support has in an
  open case (a duplicate whose cancel the partner refused through every try, its booking left as
  it is: invariant 5's hand-over), counted apart;
- every reservation the partner holds is linked to the booking it was made for, or is no
  longer live (cancelled by compensation, or rejected);
- no live reservation for a booking that does not want it (failed, expired, rejected,
  cancelled); one for a booking in needs_attention is a support case, counted apart;
- duplicates: how many were created, how many were left live (and, of those, with support).
"""

from __future__ import annotations

from collections import Counter

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.model import OurReservation, Snapshot, TruthReservation

UNWANTED = frozenset({"rejected", "failed", "expired", "cancelled"})


def check_partner_reservations(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="partner_reservations",
        invariant="never a second create while the partner holds one; at most one live partner "
        "reservation per booking; every partner reservation is linked to its booking or was "
        "cancelled by compensation",
    )
    ours = snapshot.ours_by_key()
    by_reference = snapshot.truth_by_reference()
    truth_keys = {(t.partner_code, t.partner_ref) for t in snapshot.truth}
    figures: Counter[str] = Counter()

    for reservation in snapshot.truth:
        figures[f"at_partner_{reservation.status}"] += 1
        booking = snapshot.bookings.get(reservation.client_reference)
        known = ours.get((reservation.partner_code, reservation.partner_ref))
        evidence = booking_evidence(booking, by_reference.get(reservation.client_reference, []))
        if booking is None:
            if reservation.live:
                result.violations.append(
                    Violation(
                        "live_for_no_booking",
                        f"{reservation.partner_code}:{reservation.partner_ref} is live for unknown "
                        f"reference {reservation.client_reference}",
                        evidence=evidence,
                    )
                )
            continue
        if known is None:
            figures["unknown_to_us"] += 1
            if reservation.live:
                result.violations.append(
                    Violation(
                        "live_unknown_to_us",
                        f"the partner holds live {reservation.partner_ref} ({reservation.status}) for "
                        f"{booking.reference} ({booking.status}); we never learned of it",
                        booking=booking.reference,
                        evidence=evidence,
                    )
                )
            continue
        if known.compensation_requested_at is not None:
            figures["compensation_requested"] += 1
            if not reservation.live:
                figures["cancelled_by_compensation"] += 1
        if known.booking_reference not in (None, booking.reference):
            result.violations.append(
                Violation(
                    "linked_to_wrong_booking",
                    f"{reservation.partner_ref} was made for {booking.reference} but we linked it to "
                    f"{known.booking_reference}",
                    booking=booking.reference,
                    evidence=evidence,
                )
            )
        if not reservation.live:
            continue
        if known.booking_reference is None:
            result.violations.append(
                Violation(
                    "orphan_left_live",
                    f"{reservation.partner_ref} ({reservation.status}) is held as an orphan and still live",
                    booking=booking.reference,
                    evidence=evidence,
                )
            )
        elif booking.status in UNWANTED:
            result.violations.append(
                Violation(
                    "live_for_unwanting_booking",
                    f"{reservation.partner_ref} is {reservation.status} at the partner but booking "
                    f"{booking.reference} is {booking.status} ({_compensation(known)})",
                    booking=booking.reference,
                    evidence=evidence,
                )
            )
        elif booking.status == "needs_attention":
            figures["live_for_needs_attention"] += 1

    for reference, reservations in by_reference.items():
        duplicates = _created_beside_another(reservations)
        if duplicates:
            figures["bookings_with_duplicates"] += 1
            figures["duplicates_created"] += duplicates
            result.violations.append(
                Violation(
                    "duplicate_created",
                    f"booking {reference} was created {len(reservations)} times at the partner: "
                    + ", ".join(f"{r.partner_ref} ({r.status})" for r in reservations),
                    booking=reference,
                    evidence=booking_evidence(snapshot.bookings.get(reference), reservations),
                )
            )
        figures["created_again_after_the_partner_lost_it"] += len(reservations) - 1 - duplicates
        live = [r for r in reservations if r.live]
        if len(live) > 1:
            figures["duplicates_left_live"] += len(live) - 1
            with_support = [r for r in live if _in_open_case(ours.get((r.partner_code, r.partner_ref)))]
            figures["duplicates_left_with_support"] += len(with_support)
            if len(live) - len(with_support) <= 1:
                continue
            result.violations.append(
                Violation(
                    "more_than_one_live",
                    f"booking {reference} has {len(live)} live reservations at the partner: "
                    + ", ".join(f"{r.partner_ref} ({r.status})" for r in live),
                    booking=reference,
                    evidence=booking_evidence(snapshot.bookings.get(reference), reservations),
                )
            )

    for known in snapshot.reservations:
        if (known.partner_code, known.partner_ref) not in truth_keys:
            result.violations.append(
                Violation(
                    "phantom_reservation",
                    f"we hold {known.partner_code}:{known.partner_ref} ({known.status}), which the "
                    "partner never had",
                    booking=known.booking_reference,
                )
            )
    for key in (
        "duplicates_created",
        "duplicates_left_live",
        "duplicates_left_with_support",
        "bookings_with_duplicates",
    ):
        figures.setdefault(key, 0)
    result.figures = dict(sorted(figures.items()))
    result.figures["our_roles"] = dict(Counter(r.role for r in snapshot.reservations))
    return result


def _created_beside_another(reservations: list[TruthReservation]) -> int:
    """How many were created while the partner still knew an earlier one for the booking. One
    made after the partner lost every earlier one is no blind second create: a complete lookup
    found nothing (a lost reservation's idempotency key is forgotten too)."""
    made = sorted(reservations, key=lambda r: r.history[0].at if r.history else r.vanished_at)
    return sum(
        1
        for index, reservation in enumerate(made)
        if reservation.history
        and any(
            earlier.vanished_at is None or earlier.vanished_at > reservation.history[0].at
            for earlier in made[:index]
        )
    )


def _in_open_case(known: OurReservation | None) -> bool:
    """A stray of a booking that support has in an open case (`OrphanCase`): handed over."""
    return known is not None and known.booking_reference is not None and known.case_state == "open"


def _compensation(known: OurReservation) -> str:
    if known.compensation_requested_at is None:
        return "no compensation decided"
    decided = known.compensation_requested_at.isoformat(timespec="seconds")
    done = (
        f"done {known.compensated_at.isoformat(timespec='seconds')}" if known.compensated_at else "not done"
    )
    return f"compensation ({known.compensation_reason}) decided {decided}, {done}"
