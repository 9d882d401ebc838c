"""How the partner side's facts read on a booking's timeline: an attempt, an observation, a
compensation. The services write their rows with these; reconciliation's timeline reader builds
the rows of facts no event describes with the same ones, so a fact reads one way wherever it shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from partners.models import ObservationResult, PartnerAttempt, PartnerObservation, PartnerReservation

if TYPE_CHECKING:
    from partners.decisions import TermsDifference


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def attempt_summary(attempt: PartnerAttempt) -> str:
    status = f" HTTP {attempt.http_status}" if attempt.http_status else ""
    latency = f" in {attempt.latency_ms} ms" if attempt.latency_ms is not None else ""
    error = f": {attempt.error[:120]}" if attempt.error else ""
    return f"{attempt.operation} {attempt.outcome}{status}{latency}{error}"


def attempt_data(attempt: PartnerAttempt) -> dict[str, Any]:
    return {
        "attempt_id": attempt.pk,
        "request_id": str(attempt.request_id),
        "operation": attempt.operation,
        "idempotency_key": attempt.idempotency_key,
        "outcome": attempt.outcome,
        "http_status": attempt.http_status,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
        "partner_time": _iso(attempt.partner_time),
        "resolved_at": _iso(attempt.resolved_at),
        "resolution": attempt.resolution,
    }


def observation_summary(observation: PartnerObservation) -> str:
    version = f" v{observation.version}" if observation.version is not None else ""
    ignored = f" ignored ({observation.result})" if observation.result != ObservationResult.APPLIED else ""
    return (
        f"{observation.source}: {observation.reservation.partner_ref} {observation.status}{version}{ignored}"
    )


def observation_data(observation: PartnerObservation) -> dict[str, Any]:
    return {
        "observation_id": observation.pk,
        "reservation": observation.reservation.partner_ref,
        "source": observation.source,
        "status": observation.status,
        "version": observation.version,
        "result": observation.result,
        "partner_modified_at": _iso(observation.partner_modified_at),
    }


def compensation_summary(reservation: PartnerReservation, step: str, *, not_found: str = "") -> str:
    """`step`: requested (we decided to cancel it at the partner) or verified (it is gone there);
    `not_found`: how the partner said it holds nothing at all (a 404), when it did."""
    if step == "verified":
        if not_found:
            return f"{reservation.partner_ref}: the partner holds nothing live ({not_found})"
        return f"{reservation.partner_ref} verified {reservation.status} at the partner"
    return f"Cancel {reservation.partner_ref} at the partner ({reservation.compensation_reason})"


def compensation_data(reservation: PartnerReservation) -> dict[str, Any]:
    return {
        "reservation": reservation.partner_ref,
        "reason": reservation.compensation_reason,
        "status": reservation.status,
    }


def _term(value: date | int | Decimal | str) -> str:
    if isinstance(value, date):
        return value.isoformat()
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def mismatch_summary(reservation: PartnerReservation, differences: Sequence[TermsDifference]) -> str:
    changes = "; ".join(f"{d.field} ours {_term(d.ours)}, partner {_term(d.partner)}" for d in differences)
    return f"The partner's terms for {reservation.partner_ref} differ from the booking's: {changes}"


def mismatch_data(
    reservation: PartnerReservation, observation: PartnerObservation, differences: Sequence[TermsDifference]
) -> dict[str, Any]:
    return {
        "reservation": reservation.partner_ref,
        "observation_id": observation.pk,
        "differences": {d.field: {"ours": _term(d.ours), "partner": _term(d.partner)} for d in differences},
    }
