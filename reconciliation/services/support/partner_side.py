"""What the partner holds for a booking, asked live for a preview, beside what we hold.

A live answer is only shown: it enters our records through the one door when the action (or a
sync) runs. Asked outside any transaction, through the partner's connector and guard (its
timeouts and circuit breaker); when the partner cannot be asked, the last state it told us is
shown with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from django.utils import timezone

from bookings.models import Booking
from partners import guard
from partners.connectors import connector_for
from partners.connectors.base import CallResult, ReservationSnapshot
from partners.models import Capability, PartnerReservation

logger = logging.getLogger(__name__)

MAX_LIVE_GETS = 5  # a preview asks about at most this many known reservations one by one


@dataclass
class PartnerSide:
    """The partner's view of a booking's reservations."""

    live: bool  # True: asked just now; False: the last state it told us
    method: str  # lookup / get / none
    reservations: list[dict[str, Any]]
    checked_at: datetime
    note: str = ""  # why it is not live, or what the lookup could not cover


@dataclass
class ReservationPair:
    partner_ref: str
    ours: str  # what we hold ('' when we do not know of it)
    theirs: str  # what the partner says ('' when it does not list it)
    role: str = ""
    compensation: str = ""
    version_ours: int | None = None
    version_theirs: int | None = None

    @property
    def mismatch(self) -> bool:
        return self.ours != self.theirs


def _snapshot_dict(snapshot: ReservationSnapshot) -> dict[str, Any]:
    return {
        "partner_ref": snapshot.partner_ref,
        "client_reference": snapshot.client_reference,
        "status": str(snapshot.status),
        "version": snapshot.version,
        "modified_at": snapshot.modified_at.isoformat() if snapshot.modified_at else None,
        "reason": snapshot.reason,
    }


def _held_dict(reservation: PartnerReservation) -> dict[str, Any]:
    return {
        "partner_ref": reservation.partner_ref,
        "client_reference": reservation.client_reference,
        "status": reservation.status,
        "version": reservation.version,
        "modified_at": (
            reservation.partner_modified_at.isoformat() if reservation.partner_modified_at else None
        ),
        "reason": reservation.reason,
    }


def last_known(held: list[PartnerReservation], *, note: str = "") -> PartnerSide:
    """What the partner told us last, without asking it."""
    return PartnerSide(
        live=False,
        method="none",
        reservations=[_held_dict(r) for r in held],
        checked_at=timezone.now(),
        note=note,
    )


def _failure(result: CallResult) -> str:
    detail = result.error_code or result.error[:200] or str(result.outcome)
    status = f" (HTTP {result.http_status})" if result.http_status else ""
    return f"Live lookup failed, {result.outcome}{status}: {detail}. Showing the last known state."


# Our Redis holds the partner's concurrency cap and circuit breaker (partners.guard): without it
# no call is made, and the partner is not the one to blame.
OUR_REDIS_DOWN = (
    "Not asked: our Redis (the queue and the partner guard) is not answering, so the partner was "
    "not called. Showing the last known state."
)


def partner_side(booking: Booking, held: list[PartnerReservation]) -> PartnerSide:
    """Ask the partner what it holds for `booking` (never inside a transaction: the caller is a
    view or a command); on any failure, the last known state with the reason."""
    partner = booking.partner
    try:
        connector = connector_for(partner)
        if partner.has(Capability.LOOKUP_BY_REFERENCE):
            result = guard.guarded_call(
                partner, lambda: connector.lookup(booking.reference), operation="lookup"
            )
            if not result.ok:
                return last_known(held, note=_failure(result))
            return PartnerSide(
                live=True,
                method="lookup",
                reservations=[_snapshot_dict(s) for s in result.reservations],
                checked_at=timezone.now(),
            )
        if not held:
            return last_known(
                held,
                note=f"{partner.code} cannot be asked by our reference (no lookup) and we know of no "
                "reservation there; a sync searches its change listing.",
            )
        answers: list[dict[str, Any]] = []
        for reservation in held[:MAX_LIVE_GETS]:
            result = guard.guarded_call(
                partner, lambda ref=reservation.partner_ref: connector.get(ref), operation="get"
            )
            if not result.ok:
                return last_known(held, note=_failure(result))
            if result.reservation is not None:
                answers.append(_snapshot_dict(result.reservation))
            else:
                answers.append({**_held_dict(reservation), "status": "not_found"})
        side = PartnerSide(live=True, method="get", reservations=answers, checked_at=timezone.now())
        if len(held) > MAX_LIVE_GETS:
            side.note = f"Asked about the first {MAX_LIVE_GETS} of {len(held)} reservations."
        return side
    except redis.RedisError:
        logger.warning("support preview: our Redis down", extra={"booking": booking.reference}, exc_info=True)
        return last_known(held, note=OUR_REDIS_DOWN)
    except Exception as exc:
        logger.warning("support preview lookup failed", extra={"booking": booking.reference}, exc_info=True)
        return last_known(
            held, note=f"Live lookup failed ({type(exc).__name__}: {exc}). Showing the last known state."
        )


def reservation_side(reservation: PartnerReservation) -> PartnerSide:
    """Ask the partner what it holds under one reservation id (an orphan has no booking to look
    up by); on any failure, the last known state with the reason."""
    partner = reservation.partner
    try:
        connector = connector_for(partner)
        result = guard.guarded_call(partner, lambda: connector.get(reservation.partner_ref), operation="get")
        if not result.ok:
            return last_known([reservation], note=_failure(result))
        answer = (
            _snapshot_dict(result.reservation)
            if result.reservation is not None
            else {**_held_dict(reservation), "status": "not_found"}
        )
        return PartnerSide(live=True, method="get", reservations=[answer], checked_at=timezone.now())
    except redis.RedisError:
        logger.warning(
            "support preview: our Redis down", extra={"partner_ref": reservation.partner_ref}, exc_info=True
        )
        return last_known([reservation], note=OUR_REDIS_DOWN)
    except Exception as exc:
        logger.warning(
            "support preview lookup failed", extra={"partner_ref": reservation.partner_ref}, exc_info=True
        )
        return last_known(
            [reservation],
            note=f"Live lookup failed ({type(exc).__name__}: {exc}). Showing the last known state.",
        )


def pair_up(held: list[PartnerReservation], side: PartnerSide) -> list[ReservationPair]:
    pairs: dict[str, ReservationPair] = {}
    for reservation in held:
        pairs[reservation.partner_ref] = ReservationPair(
            partner_ref=reservation.partner_ref,
            ours=reservation.status,
            theirs="",
            role=reservation.role,
            compensation=(
                "verified"
                if reservation.compensated_at
                else ("requested" if reservation.compensation_requested_at else "")
            ),
            version_ours=reservation.version,
        )
    for entry in side.reservations:
        pair = pairs.setdefault(
            entry["partner_ref"], ReservationPair(entry["partner_ref"], ours="", theirs="")
        )
        pair.theirs = entry["status"]
        pair.version_theirs = entry.get("version")
    return list(pairs.values())
