"""No booking lost: every accepted request (202) has exactly one booking, and the same key always
gave the same booking (invariants 3 and 11; the customer API's idempotency contract)."""

from __future__ import annotations

from collections import Counter

from chaos.checks.base import CheckResult, Violation, timeline
from chaos.model import Snapshot


def check_no_booking_lost(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="no_booking_lost",
        invariant="every accepted API request has exactly one booking; same key -> same reference",
    )
    stored = {(row.customer, row.key): row.booking_reference for row in snapshot.idempotency}
    keys_per_booking = Counter(row.booking_reference for row in snapshot.idempotency)
    sent = {(c.customer, c.key) for c in snapshot.clients}
    outcomes = Counter(c.outcome for c in snapshot.clients)

    for client in snapshot.clients:
        booked = stored.get((client.customer, client.key))
        references = sorted(set(client.references))
        if client.outcome == "accepted":
            if len(references) > 1:
                result.violations.append(
                    Violation(
                        "same_key_different_bookings",
                        f"key {client.key} was answered 202 with {len(references)} references",
                        evidence={"responses": list(client.responses), "references": references},
                    )
                )
            if booked is None:
                result.violations.append(
                    Violation(
                        "accepted_but_lost",
                        f"key {client.key} was accepted ({references[0]}) but no booking holds it",
                        booking=references[0],
                        evidence={"responses": list(client.responses)},
                    )
                )
            elif booked not in references:
                result.violations.append(
                    Violation(
                        "reference_mismatch",
                        f"key {client.key} was answered {references} but is stored for {booked}",
                        booking=booked,
                        evidence={"responses": list(client.responses)},
                    )
                )
        elif client.outcome == "refused" and booked is not None:
            result.violations.append(
                Violation(
                    "refused_but_stored",
                    f"key {client.key} was refused ({client.refusal}) yet booking {booked} was stored",
                    booking=booked,
                    evidence={"responses": list(client.responses)},
                )
            )

    for reference, booking in snapshot.bookings.items():
        count = keys_per_booking.get(reference, 0)
        if count != 1:
            result.violations.append(
                Violation(
                    "booking_without_one_key",
                    f"booking {reference} is held by {count} idempotency keys (want exactly 1)",
                    booking=reference,
                    evidence={"timeline": timeline(booking)},
                )
            )
    for (customer, key), reference in stored.items():
        if (customer, key) not in sent:
            result.violations.append(
                Violation(
                    "booking_from_unknown_request",
                    f"booking {reference} was made with key {key}, which no client sent",
                    booking=reference,
                )
            )
        if reference not in snapshot.bookings:
            result.violations.append(
                Violation("key_without_booking", f"key {key} points at a missing booking {reference}")
            )

    gave_up_booked = sum(
        1 for c in snapshot.clients if c.outcome == "gave_up" and (c.customer, c.key) in stored
    )
    result.figures = {
        "keys_sent": len(snapshot.clients),
        "accepted": outcomes.get("accepted", 0),
        "refused": outcomes.get("refused", 0),
        "gave_up": outcomes.get("gave_up", 0),
        "gave_up_but_booked": gave_up_booked,
        "bookings": len(snapshot.bookings),
        "keys_answered_202_more_than_once": sum(1 for c in snapshot.clients if len(c.references) > 1),
        "keys_sent_more_than_once": sum(1 for c in snapshot.clients if len(c.responses) > 1),
    }
    refusals = Counter(c.refusal for c in snapshot.clients if c.outcome == "refused")
    if refusals:
        result.notes.append("refusals: " + ", ".join(f"{k or '?'} x{n}" for k, n in refusals.most_common()))
    return result
