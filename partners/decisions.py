"""The recovery rules as pure functions: easy to read, table-tested, no I/O.

- `order_observation`: is a piece of partner truth newer than what we hold? (invariant 1)
- `reconcile`: given a booking's state and what its partner holds, what must happen next?
  (invariants 4, 5, 6)
- `after_create` and `ambiguity_strategy`: what a create's outcome leads to, by capability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bookings.states import AWAITING_PARTNER, TERMINAL_STATES, UNACKNOWLEDGED, BookingState
from partners.models import (
    LIVE_RESERVATION_STATUSES,
    Capability,
    ObservationResult,
    Outcome,
    ReservationStatus,
)

# Partner statuses only move forward: pending -> confirmed | rejected | cancelled, confirmed -> cancelled.
_RANK = {
    ReservationStatus.PENDING: 0,
    ReservationStatus.CONFIRMED: 1,
    ReservationStatus.REJECTED: 2,
    ReservationStatus.CANCELLED: 2,
}


@dataclass(frozen=True)
class Held:
    """What we hold about a reservation (or what a new observation says)."""

    status: str
    version: int | None
    modified_at: datetime | None


def order_observation(current: Held | None, incoming: Held) -> ObservationResult:
    """Monotonic by version; lacking versions by partner modified time, then receipt order."""
    if current is None:
        return ObservationResult.APPLIED
    if _RANK[incoming.status] < _RANK[current.status]:
        return ObservationResult.STALE  # never regress, whatever the clocks say
    if current.version is not None and incoming.version is not None:
        if incoming.version < current.version:
            return ObservationResult.STALE
        if incoming.version == current.version:
            return ObservationResult.DUPLICATE
        return ObservationResult.APPLIED
    if (
        current.modified_at is not None
        and incoming.modified_at is not None
        and incoming.modified_at < current.modified_at
    ):
        return ObservationResult.STALE
    if incoming.status == current.status:
        return ObservationResult.DUPLICATE
    return ObservationResult.APPLIED  # same or unknown time, new status: receipt order decides


@dataclass(frozen=True)
class ReservationView:
    id: int
    status: str
    linked_order: int  # lower = learned of earlier (oldest)
    compensating: bool  # we already decided to cancel it


@dataclass
class Reconciliation:
    transition: str | None = None
    reason: str = ""
    primary: int | None = None
    compensate: dict[int, str] = field(default_factory=dict)  # reservation id -> reason


def reconcile(state: str, reservations: list[ReservationView], *, fenced: bool) -> Reconciliation:
    """Decide the booking's next step from the partner's truth about all its reservations.

    `fenced` is True while a create attempt's outcome is unknown: then nothing is concluded
    from the absence of a live reservation (another may exist that we have not seen).

    - terminal: every live reservation is cancelled at the partner (compensated);
    - cancel_requested: the same, and once nothing is live (and nothing unknown) it is cancelled;
    - confirmed: stays so only while a confirmed reservation is live, else support decides
      (invariant 6);
    - needs_attention: support decides; automation only cancels clear duplicates;
    - open: the live reservation (confirmed first, else the oldest) is the booking's, extras
      are duplicates to cancel; without a live one, the last settled one decides.
    """
    plan = Reconciliation()
    live = [r for r in reservations if r.status in LIVE_RESERVATION_STATUSES and not r.compensating]

    if state in TERMINAL_STATES:
        for r in live:
            plan.compensate[r.id] = f"booking_{state}"
        return plan

    if state == BookingState.CANCEL_REQUESTED:
        for r in live:
            plan.compensate[r.id] = "cancel_requested"
        still_live = [r for r in reservations if r.status in LIVE_RESERVATION_STATUSES]
        if not still_live and not fenced:
            plan.transition, plan.reason = "mark_cancelled", "nothing_live_at_partner"
        return plan

    if (
        state == BookingState.CONFIRMED
        and reservations
        and not any(r.status == ReservationStatus.CONFIRMED for r in live)
    ):
        # The reservation that made it confirmed is gone at the partner: never silently confirmed.
        plan.transition, plan.reason = "flag_for_attention", "partner_cancelled_confirmed"
        return plan

    if live:
        ordered = sorted(live, key=lambda r: (r.status != ReservationStatus.CONFIRMED, r.linked_order))
        primary, extras = ordered[0], ordered[1:]
        plan.primary = primary.id
        for r in extras:
            plan.compensate[r.id] = "duplicate"
        if primary.status == ReservationStatus.CONFIRMED and state in AWAITING_PARTNER:
            plan.transition, plan.reason = "confirm", "partner_confirmed"
        elif primary.status == ReservationStatus.PENDING and state in UNACKNOWLEDGED:
            plan.transition, plan.reason = "mark_partner_pending", "partner_pending"
        return plan

    if fenced or not reservations or state not in AWAITING_PARTNER:
        return plan
    settled = sorted(reservations, key=lambda r: r.linked_order)
    last = [r for r in settled if not r.compensating] or settled
    final = last[-1]
    if final.status == ReservationStatus.REJECTED:
        plan.transition, plan.reason = "reject", "partner_rejected"
    elif final.status == ReservationStatus.CANCELLED and state != BookingState.REQUESTED:
        plan.transition, plan.reason = "fail", "partner_cancelled"
    return plan


class NextStep(StrEnum):
    APPLY_RESPONSE = "apply_response"  # we know what the partner holds
    RETRY_LATER = "retry_later"  # nothing happened at the partner: submit again after a backoff
    RESOLVE_AMBIGUITY = "resolve_ambiguity"  # fence the booking, then find out (see strategy)
    REJECT = "reject"  # the partner refused this request for good
    NEEDS_ATTENTION = "needs_attention"  # our configuration or the protocol is broken


def after_create(outcome: str, *, error_code: str = "", http_status: int | None = None) -> NextStep:
    if outcome in (Outcome.OK, Outcome.REJECTED):
        return NextStep.APPLY_RESPONSE
    if outcome == Outcome.TRANSIENT:
        return NextStep.RETRY_LATER
    if outcome == Outcome.AMBIGUOUS:
        return NextStep.RESOLVE_AMBIGUITY
    if http_status in (401, 403) or error_code == "idempotency_key_reused":
        return NextStep.NEEDS_ATTENTION
    return NextStep.REJECT


class Strategy(StrEnum):
    LOOKUP_BY_REFERENCE = "lookup_by_reference"
    REPLAY_IDEMPOTENT_CREATE = "replay_idempotent_create"
    SEARCH_CHANGE_LISTING = "search_change_listing"
    ASK_SUPPORT = "ask_support"


def ambiguity_strategy(capabilities: list[str] | set[str]) -> Strategy:
    """How to learn what the partner holds after an ambiguous create (by capability only)."""
    if Capability.LOOKUP_BY_REFERENCE in capabilities:
        return Strategy.LOOKUP_BY_REFERENCE
    if Capability.IDEMPOTENCY_KEYS in capabilities:
        return Strategy.REPLAY_IDEMPOTENT_CREATE
    if Capability.CHANGE_LISTING in capabilities:
        return Strategy.SEARCH_CHANGE_LISTING
    return Strategy.ASK_SUPPORT
