"""The recovery rules as pure functions: easy to read, table-tested, no I/O.

- `order_observation`: is a piece of partner truth newer than what we hold? (invariant 1)
- `reconcile`: given a booking's state and what its partner holds, what must happen next?
  (invariants 4, 5, 6)
- `stray_left_to_a_case`: does a duplicate whose cancel gave up go to support alone, or with
  its booking? (invariant 5)
- `terms_differences` and `on_mismatch`: do the partner's terms differ from the booking's, and
  what follows? (invariant 6)
- `lost_verdict`: is a reservation the partner answers 404 for gone, or must it be read again?
- `after_repeated_failures`: when do refused answers or a worker's give-ups hand a booking to support?
- `after_create` and `ambiguity_strategy`: what a create's outcome leads to, by capability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from bookings.states import AWAITING_PARTNER, GOING_AHEAD, TERMINAL_STATES, UNACKNOWLEDGED, BookingState
from partners.connectors.base import TERM_FIELDS, Terms
from partners.models import (
    LIVE_RESERVATION_STATUSES,
    Capability,
    ObservationResult,
    Outcome,
    ReservationRole,
    ReservationStatus,
)

# Why the partner side hands a booking to support (`Booking.attention_reason`).
PARTNER_CANCELLED_CONFIRMED = "partner_cancelled_confirmed"
PARTNER_LOST_RESERVATION = "partner_lost_reservation"
PARTNER_MISMATCH = "partner_mismatch"
PARTNER_DATA_REFUSED = "partner_data_refused"

# Partner statuses only move forward: pending -> confirmed | rejected | cancelled, confirmed ->
# cancelled. A reservation found lost has ended too, whatever an older read said.
_RANK = {
    ReservationStatus.PENDING: 0,
    ReservationStatus.CONFIRMED: 1,
    ReservationStatus.REJECTED: 2,
    ReservationStatus.CANCELLED: 2,
    ReservationStatus.LOST: 2,
}
# Ended at the partner without our asking: the booking cannot keep it.
_GONE = (ReservationStatus.CANCELLED, ReservationStatus.LOST)


@dataclass(frozen=True)
class Held:
    """What we hold about a reservation (or what a new observation says)."""

    status: str
    version: int | None
    modified_at: datetime | None


def order_observation(current: Held | None, incoming: Held) -> ObservationResult:
    """Monotonic by version; lacking versions, a status further on (`_RANK`) applies whatever its
    partner time, else by partner modified time, then receipt order."""
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
    if _RANK[incoming.status] > _RANK[current.status]:
        # The partner's status cannot move back, so one further on is news whatever its time says:
        # a wall time read in the hour repeated when clocks go back, or a partner clock stepped back.
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


def reconcile(
    state: str,
    reservations: list[ReservationView],
    *,
    fenced: bool,
    ended_as: str = "",
    may_hold: bool = True,
) -> Reconciliation:
    """Decide the booking's next step from the partner's truth about all its reservations.

    `fenced` is True while a create attempt's outcome is unknown: then nothing is concluded
    from the absence of a live reservation (another may exist that we have not seen).
    `ended_as`: the end a booking support has had reached before (`Booking.ended_as`), '' for any
    other; `may_hold`: whether anything may still be held for it at the partner (a fence, or a
    reservation live or whose cancel is not verified: `observations.may_hold`), asked
    only for such a booking.

    - terminal: every live reservation is cancelled at the partner (compensated);
    - an end support has for what the partner still holds (`ended_as`): the same, and once
      nothing may be held it returns to that end, and to no other state (`return_to_end`);
    - cancel_requested: the same (a live one lifting a create's fence), and once nothing is live
      (and nothing unknown) it is cancelled;
    - confirmed: stays so only while a confirmed reservation is live, else support decides
      (invariant 6);
    - needs_attention: support decides; automation only cancels clear duplicates;
    - open: the live reservation (confirmed first, else the oldest) is the booking's, extras
      are duplicates to cancel; without a live one, the last settled one decides.
    """
    plan = Reconciliation()
    live = [r for r in reservations if r.status in LIVE_RESERVATION_STATUSES and not r.compensating]

    if state in TERMINAL_STATES or ended_as:
        for r in live:
            plan.compensate[r.id] = f"booking_{ended_as or state}"
        if ended_as and live:
            # A live one is the partner's answer to our create: it lifts a create's fence (as the
            # open path's does), or nothing else might (a partner we cannot ask), and the booking
            # would wait with support for good.
            plan.primary = _primary(live).id
        if ended_as and not live and not may_hold:
            plan.transition, plan.reason = "return_to_end", "nothing_held_at_partner"
        return plan

    if state == BookingState.CANCEL_REQUESTED:
        for r in live:
            plan.compensate[r.id] = "cancel_requested"
        if live:
            # As for an end: a live one answers a create's fence, which would hold the cancel.
            plan.primary = _primary(live).id
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
        lost = any(r.status == ReservationStatus.LOST and not r.compensating for r in reservations)
        plan.transition = "flag_for_attention"
        plan.reason = PARTNER_LOST_RESERVATION if lost else PARTNER_CANCELLED_CONFIRMED
        return plan

    if live:
        primary = _primary(live)
        extras = [r for r in live if r is not primary]
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
    elif final.status in _GONE and state != BookingState.REQUESTED:
        plan.transition = "fail"
        plan.reason = (
            "partner_cancelled" if final.status == ReservationStatus.CANCELLED else PARTNER_LOST_RESERVATION
        )
    return plan


def _primary(live: list[ReservationView]) -> ReservationView:
    """The live reservation that is the booking's: confirmed first, else the oldest."""
    return min(live, key=lambda r: (r.status != ReservationStatus.CONFIRMED, r.linked_order))


def stray_left_to_a_case(state: str, role: str) -> bool:
    """Whether a booking's reservation whose cancel gave up after its tries is support's as a
    case of its own (`OrphanCase`), the booking left as it is.

    A duplicate of a booking that keeps its own reservation holds nothing of the customer's up:
    their booking is what it was (confirmed, or on its way), so it is not handed to support, shown
    disrupted, or made free to cancel; only the stray is left to cancel by hand. Anything else (a
    cancel under way, an end, a booking already with support) is what the stray holds up, so
    support gets the booking (`compensation_failed`); and a case opened while the booking kept
    its own closes once it no longer does, the stray's cancel asked again
    (`observations.take_up_strays`)."""
    return role == ReservationRole.DUPLICATE and state in GOING_AHEAD


@dataclass(frozen=True)
class TermsDifference:
    field: str
    ours: date | int | Decimal | str
    partner: date | int | Decimal | str


def terms_differences(ours: Terms, partner: Terms) -> tuple[TermsDifference, ...]:
    """Every term the partner states that differs from ours, exactly: dates as dates, money as
    Decimal ("360.0" is "360.00"), currency codes as upper-case text. A term the partner's answer
    did not carry differs from nothing."""
    differences = []
    for name in TERM_FIELDS:
        theirs = getattr(partner, name)
        if theirs is None or theirs == "":
            continue
        if theirs != getattr(ours, name):
            differences.append(TermsDifference(name, getattr(ours, name), theirs))
    return tuple(differences)


class MismatchStep(StrEnum):
    HAND_OVER = "hand_over"  # to support: the booking no longer says what the partner holds
    RECORD = "record"  # already with support for another reason: put the diff on its timeline
    NONE = "none"  # the reservation is being let go, or support already knows


def on_mismatch(state: str, attention_reason: str) -> MismatchStep:
    """What the partner's different terms for a booking's own live reservation lead to.

    A cancelled or cancelling booking is letting the reservation go: its terms no longer
    matter. A booking only just requested cannot be handed over (the one door has moved any
    booking the partner holds something for before this is asked)."""
    if state in TERMINAL_STATES or state in (BookingState.CANCEL_REQUESTED, BookingState.REQUESTED):
        return MismatchStep.NONE
    if state == BookingState.NEEDS_ATTENTION:
        return MismatchStep.NONE if attention_reason == PARTNER_MISMATCH else MismatchStep.RECORD
    return MismatchStep.HAND_OVER


@dataclass(frozen=True)
class LostVerdict:
    lost: bool
    read_again_in: timedelta | None = None  # not proven yet: read it again then


def lost_verdict(
    *,
    not_found_at: datetime,
    earlier_not_found_at: datetime | None,
    last_seen_at: datetime,
    read_apart: timedelta,
) -> LostVerdict:
    """A reservation the partner answered 404 for is lost only when a second, separate read at
    least `read_apart` after the first finds nothing either, and neither came before the last
    time we saw it (a partner's glitch, or a replica behind, is not a loss)."""
    first = earlier_not_found_at
    if first is None or first <= last_seen_at:
        return LostVerdict(lost=False, read_again_in=read_apart)
    waited = not_found_at - first
    if waited < read_apart:
        return LostVerdict(lost=False, read_again_in=read_apart - waited)
    return LostVerdict(lost=True)


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


def after_failed_read(outcome: str, *, http_status: int | None = None) -> NextStep:
    """A read (lookup, listing, GET) that failed: try again later, unless the partner refused it
    for good. A bad key is not for good (it is rotated back); a 4xx about the request is: the
    same request gets the same answer, so support must find out what the partner holds."""
    if outcome == Outcome.PERMANENT and http_status not in (401, 403):
        return NextStep.NEEDS_ATTENTION
    return NextStep.RETRY_LATER


def after_repeated_failures(failures: int, *, max_tries: int) -> NextStep:
    """The same failure again and again (a partner's answers refused at our edge, a worker that
    exhausts its retries): try again within the tries; then support decides, since what keeps
    failing that way is not cured by asking once more."""
    return NextStep.NEEDS_ATTENTION if failures >= max_tries else NextStep.RETRY_LATER


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
