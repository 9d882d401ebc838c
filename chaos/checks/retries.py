"""Nothing is tried past its tries: no Dramatiq message is retried more than its actor's
`max_retries` (counted from the workers' logs, where Dramatiq writes each retry), no booking's
partner answers are refused at our edge more than PARTNER_REFUSED_MAX_TRIES times in a row (then
support has it), and no reservation is cancelled more than PARTNER_COMPENSATION_MAX_TRIES times.
"""

from __future__ import annotations

from collections import Counter

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.model import Snapshot


def check_tries_bounded(
    snapshot: Snapshot, *, max_retries: int, refused_max_tries: int, compensation_max_tries: int
) -> CheckResult:
    result = CheckResult(
        name="tries_bounded",
        invariant=f"no message retried more than {max_retries} times, no booking read past "
        f"{refused_max_tries} refused answers in a row, no reservation cancelled more than "
        f"{compensation_max_tries} times",
    )
    by_reference = snapshot.truth_by_reference()
    for message_id, lines in snapshot.retried.items():
        if len(lines) > max_retries:
            result.violations.append(
                Violation(
                    "message_retried_past_its_tries",
                    f"message {message_id} was retried {len(lines)} times (max_retries {max_retries})",
                    evidence={"log": lines[:20]},
                )
            )
    for reference, refused in snapshot.refused_in_a_row.items():
        if refused > refused_max_tries:
            result.violations.append(
                Violation(
                    "read_past_its_refusals",
                    f"{reference}'s partner answers were refused {refused} times in a row "
                    f"(PARTNER_REFUSED_MAX_TRIES {refused_max_tries})",
                    booking=reference,
                    evidence=booking_evidence(
                        snapshot.bookings.get(reference), by_reference.get(reference, [])
                    ),
                )
            )
    for (code, partner_ref), calls in snapshot.cancel_calls.items():
        if calls > compensation_max_tries:
            result.violations.append(
                Violation(
                    "cancelled_past_its_tries",
                    f"{code}:{partner_ref} was cancelled {calls} times "
                    f"(PARTNER_COMPENSATION_MAX_TRIES {compensation_max_tries})",
                )
            )
    retries = Counter(len(lines) for lines in snapshot.retried.values())
    result.figures = {
        "messages_retried": len(snapshot.retried),
        "most_retries_of_a_message": max(retries, default=0),
        "bookings_with_refused_answers": len(snapshot.refused_in_a_row),
        "most_refused_in_a_row": max(snapshot.refused_in_a_row.values(), default=0),
        "most_cancels_of_a_reservation": max(snapshot.cancel_calls.values(), default=0),
        "messages_by_retries": dict(sorted(retries.items())),
    }
    return result
