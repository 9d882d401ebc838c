"""Support actions (invariant 10): the same services and actors as automation, permission-checked,
idempotent, audited, and previewed before they run.

Every action has two halves:
- `preview_<action>` (or `preview(action, ...)`) says what the action will do, with our state
  beside the partner's. The partner's side is looked up live through its connector, outside any
  transaction and within the partner's timeouts and circuit breaker; when it cannot be asked,
  the last state it told us is shown and the preview says so. A live answer is only shown: it
  enters our records through the one door when the action (or a sync) runs.
- `support_<action>` performs it: checks the operator's permission, locks the booking,
  re-checks its state, skips a token it has already seen (a double submit does nothing extra),
  acts through the usual services, and writes one named correction (`support.*`) on the
  timeline with the operator and the old and new state. Partner work is queued after commit.
"""

from __future__ import annotations

import getpass
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from bookings.models import Actor, Booking, BookingEvent
from bookings.services import apply_transition, booking_request_cancel, lock_booking
from bookings.states import CANCEL_ACCEPTED, CREATE_UNANSWERED, TERMINAL_STATES, BookingState
from bookings.timeline import record_event
from config.errors import ApplicationError, InvalidTransition, NotFound, ValidationFailed
from config.logging import log_context
from partners import messages
from partners.connectors import connector_for
from partners.connectors.base import CallResult
from partners.models import (
    LIVE_RESERVATION_STATUSES,
    Capability,
    InboundEvent,
    PartnerReservation,
    ReservationStatus,
)
from partners.services.observations import is_fenced, reconcile_booking

logger = logging.getLogger(__name__)

SYNC, RETRY, COMPENSATE, CANCEL, RESOLVE = "sync", "retry", "compensate", "cancel", "resolve"
ACTIONS: dict[str, dict[str, str]] = {
    SYNC: {
        "title": "Force a partner sync",
        "permission": "bookings.sync_booking",
        "kind": "support.sync_requested",
    },
    RETRY: {
        "title": "Retry the submission",
        "permission": "bookings.retry_booking",
        "kind": "support.retry_requested",
    },
    COMPENSATE: {
        "title": "Compensate: cancel at the partner and fail",
        "permission": "bookings.compensate_booking",
        "kind": "support.compensated",
    },
    CANCEL: {
        "title": "Cancel on the customer's behalf",
        "permission": "bookings.cancel_booking_support",
        "kind": "support.cancel_requested",
    },
    RESOLVE: {
        "title": "Mark resolved",
        "permission": "bookings.resolve_booking",
        "kind": "support.resolved",
    },
}
REPLAY_PERMISSION = "partners.replay_inboundevent"
# Outcomes support may resolve a needs_attention booking to, with the transition each runs: the
# state machine's own transitions from needs_attention to an outcome.
RESOLUTIONS = {
    transition.target: transition.name
    for transition in Booking._meta.get_field("status").get_all_transitions(Booking)
    if transition.source == BookingState.NEEDS_ATTENTION
    and (transition.target == BookingState.CONFIRMED or transition.target in TERMINAL_STATES)
}
MAX_LIVE_GETS = 5  # a preview asks about at most this many known reservations one by one


class SupportActionDenied(ApplicationError):
    code = "permission_denied"
    http_status = 403


class AlreadyDone(ApplicationError):
    code = "already_done"


# --- who acts ----------------------------------------------------------------
@dataclass(frozen=True)
class Operator:
    """Who performs a support action. `user` None means a shell operator (ops at the server),
    who is trusted; console users are checked against their permissions."""

    label: str
    user: Any = None

    @classmethod
    def for_user(cls, user: Any) -> Operator:
        return cls(label=user.get_username(), user=user)

    @classmethod
    def shell(cls, username: str | None = None) -> Operator:
        """`ops:<os user>`, or the named console user (`--as USER`), checked like in the console."""
        if username:
            from django.contrib.auth import get_user_model

            user = get_user_model().objects.filter(username=username, is_active=True).first()
            if user is None:
                raise NotFound(f"No active user {username!r}.")
            return cls.for_user(user)
        try:
            os_user = getpass.getuser()
        except (KeyError, OSError):
            os_user = "unknown"
        return cls(label=f"ops:{os_user}")

    def can(self, permission: str) -> bool:
        return self.user is None or self.user.has_perm(permission)

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise SupportActionDenied(f"{self.label} lacks the permission {permission}.")


def allowed_actions(operator: Operator) -> list[str]:
    return [name for name, spec in ACTIONS.items() if operator.can(spec["permission"])]


def new_token() -> str:
    return uuid.uuid4().hex


def booking_by_reference(reference: str) -> Booking:
    booking = (
        Booking.objects.select_related("partner", "offer", "customer")
        .filter(reference=reference.strip().upper())
        .first()
    )
    if booking is None:
        raise NotFound(f"No booking {reference!r}.")
    return booking


# --- what the partner holds, live ----------------------------------------------------------------
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


def _snapshot_dict(snapshot) -> dict[str, Any]:
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


def _failure(result: CallResult) -> str:
    detail = result.error_code or result.error[:200] or str(result.outcome)
    status = f" (HTTP {result.http_status})" if result.http_status else ""
    return f"{result.outcome}{status}: {detail}"


def partner_side(booking: Booking, held: list[PartnerReservation]) -> PartnerSide:
    """Ask the partner what it holds for `booking`, through its connector and guard.

    Never inside a transaction (the caller is a view or a command); on any failure the last
    known partner state is returned with the reason.
    """
    from partners import guard

    partner = booking.partner
    now = timezone.now()
    last_known = PartnerSide(
        live=False, method="none", reservations=[_held_dict(r) for r in held], checked_at=now
    )
    try:
        connector = connector_for(partner)
        if partner.has(Capability.LOOKUP_BY_REFERENCE):
            result = guard.guarded_call(partner, lambda: connector.lookup(booking.reference))
            if not result.ok:
                last_known.note = f"Live lookup failed, {_failure(result)}. Showing the last known state."
                return last_known
            return PartnerSide(
                live=True,
                method="lookup",
                reservations=[_snapshot_dict(s) for s in result.reservations],
                checked_at=timezone.now(),
            )
        if not held:
            last_known.note = (
                f"{partner.code} cannot be asked by our reference (no lookup) and we know of no "
                "reservation there; a sync searches its change listing."
            )
            return last_known
        answers: list[dict[str, Any]] = []
        for reservation in held[:MAX_LIVE_GETS]:
            result = guard.guarded_call(partner, lambda ref=reservation.partner_ref: connector.get(ref))
            if not result.ok:
                last_known.note = f"Live lookup failed, {_failure(result)}. Showing the last known state."
                return last_known
            if result.reservation is not None:
                answers.append(_snapshot_dict(result.reservation))
            else:
                answers.append({**_held_dict(reservation), "status": "not_found"})
        side = PartnerSide(live=True, method="get", reservations=answers, checked_at=timezone.now())
        if len(held) > MAX_LIVE_GETS:
            side.note = f"Asked about the first {MAX_LIVE_GETS} of {len(held)} reservations."
        return side
    except Exception as exc:
        logger.warning("support preview lookup failed", extra={"booking": booking.reference}, exc_info=True)
        last_known.note = f"Live lookup failed ({type(exc).__name__}: {exc}). Showing the last known state."
        return last_known


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


# --- previews ----------------------------------------------------------------
@dataclass
class Preview:
    action: str
    title: str
    booking: Booking
    allowed: bool
    refusal: str
    effects: list[str]
    pairs: list[ReservationPair]
    partner: PartnerSide
    fenced: bool
    token: str
    needs_note: bool = False
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # (value, label, refusal)

    @property
    def ours(self) -> dict[str, Any]:
        return {
            "status": self.booking.status,
            "customer_status": str(self.booking.customer_status),
            "attention_reason": self.booking.attention_reason,
            "deadline": self.booking.deadline,
            "fenced": self.fenced,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "title": self.title,
            "booking": self.booking.reference,
            "allowed": self.allowed,
            "refusal": self.refusal,
            "effects": self.effects,
            "ours": {**self.ours, "deadline": self.booking.deadline.isoformat()},
            "partner": {
                "live": self.partner.live,
                "method": self.partner.method,
                "checked_at": self.partner.checked_at.isoformat(),
                "note": self.partner.note,
                "reservations": self.partner.reservations,
            },
            "reservations": [
                {
                    "partner_ref": p.partner_ref,
                    "ours": p.ours,
                    "theirs": p.theirs,
                    "version_ours": p.version_ours,
                    "version_theirs": p.version_theirs,
                    "role": p.role,
                    "compensation": p.compensation,
                    "mismatch": p.mismatch,
                }
                for p in self.partner_pairs
            ],
            "outcomes": [{"value": v, "label": lbl, "refusal": r} for v, lbl, r in self.outcomes],
            "token": self.token,
        }

    @property
    def partner_pairs(self) -> list[ReservationPair]:
        return self.pairs


def _live(held: list[PartnerReservation]) -> list[PartnerReservation]:
    return [r for r in held if r.status in LIVE_RESERVATION_STATUSES]


def _uncompensated_live(held: list[PartnerReservation]) -> list[PartnerReservation]:
    return [r for r in _live(held) if r.compensation_requested_at is None]


def _stalled_compensations(held: list[PartnerReservation]) -> list[PartnerReservation]:
    """Live reservations we decided to cancel earlier whose cancel was never verified."""
    return [r for r in _live(held) if r.compensation_requested_at is not None and r.compensated_at is None]


def _refusal(action: str, booking: Booking, held: list[PartnerReservation], fenced: bool) -> str:
    """Why `action` cannot run on the booking as it is now ('' when it can). Shared by the
    preview and the locked re-check of the action itself."""
    status = booking.status
    if action == SYNC:
        return ""
    if action == RETRY:
        if fenced or status in CREATE_UNANSWERED:
            return (
                "The outcome of an earlier create is not known yet: never a blind second create. "
                "Force a sync first."
            )
        if status == BookingState.REQUESTED:
            return ""
        if not can_proceed(booking.requeue_submission):
            return f"Only a requested or needs-attention booking can be submitted again (it is {status})."
        if _live(held):
            refs = ", ".join(r.partner_ref for r in _live(held))
            return (
                f"The partner holds {refs} for it: a new create would duplicate it. Sync or resolve instead."
            )
        if booking.deadline <= timezone.now():
            return (
                f"Its confirmation deadline passed ({booking.deadline:%Y-%m-%d %H:%M} UTC); "
                "a worker would only expire it. Resolve or cancel it instead."
            )
        return ""
    if action == COMPENSATE:
        if not can_proceed(booking.fail):
            hint = " Use cancel for a confirmed booking." if status == BookingState.CONFIRMED else ""
            return f"A {status} booking cannot be failed.{hint}"
        return ""
    if action == CANCEL:
        if status in CANCEL_ACCEPTED:
            return f"It is already {status}."
        if not can_proceed(booking.request_cancel):
            return f"A {status} booking can no longer be cancelled."
        return ""
    if action == RESOLVE:
        if status != BookingState.NEEDS_ATTENTION:
            return f"Only a booking that needs attention can be resolved (it is {status})."
        return ""
    raise ValidationFailed(f"Unknown support action {action!r}.")


def _outcome_refusal(outcome: str, held: list[PartnerReservation], fenced: bool) -> str:
    if outcome not in RESOLUTIONS:
        return f"Unknown outcome {outcome!r}; choose one of {', '.join(RESOLUTIONS)}."
    if outcome == BookingState.CONFIRMED:
        if not any(r.status == ReservationStatus.CONFIRMED for r in _uncompensated_live(held)):
            return "We hold no confirmed reservation from the partner: sync first, or choose another outcome."
        return ""
    if fenced:
        return "An earlier create's outcome is unknown: the partner may hold a reservation. Sync first."
    if _live(held):
        refs = ", ".join(r.partner_ref for r in _live(held))
        return f"The partner still holds {refs}: compensate instead (cancel at the partner and fail)."
    return ""


def _effects(action: str, booking: Booking, held: list[PartnerReservation], fenced: bool) -> list[str]:
    queue = booking.partner.queue_name
    live = _uncompensated_live(held)
    if action == SYNC:
        return [
            f"Queue a partner sync on {queue}: ask {booking.partner.code} what it holds for "
            f"{booking.reference} and apply it through the one door.",
            "The booking moves only if the partner's answer says so (e.g. confirmed, rejected, cancelled).",
        ]
    if action == RETRY:
        steps = []
        if booking.status == BookingState.NEEDS_ATTENTION:
            steps.append("needs_attention → requested (the attention reason is cleared).")
        steps.append(
            f"Queue a submission on {queue}: one create with our key {booking.partner_key}, "
            "recorded before the call."
        )
        return steps
    if action == COMPENSATE:
        steps = [f"{booking.status} → failed."]
        steps += [
            f"Cancel {r.partner_ref} ({r.status}) at the partner, then verify by a lookup." for r in live
        ]
        stalled = _stalled_compensations(held)
        steps += [
            f"Cancel {r.partner_ref} ({r.status}) again: the cancel decided "
            f"{r.compensation_requested_at:%Y-%m-%d %H:%M} UTC ({r.compensation_reason}) was never verified."
            for r in stalled
        ]
        if not live and not stalled:
            steps.append("We know of no live reservation at the partner: nothing to cancel there.")
        if fenced:
            steps.append(
                "An earlier create's outcome is unknown: queue a sync; whatever it finds is cancelled too."
            )
        return steps
    if action == CANCEL:
        steps = [f"{booking.status} → cancel_requested (the customer sees 'cancelling')."]
        steps += [f"Queue the cancellation: cancel {r.partner_ref} at the partner and verify." for r in live]
        steps.append("→ cancelled once the partner holds nothing live for it.")
        return steps
    if action == RESOLVE:
        return [
            "needs_attention → the outcome you choose, with your note on the timeline.",
            "confirmed: only when the partner confirmed the reservation we hold.",
            "failed / cancelled: only when the partner holds nothing live for it.",
        ]
    return []


def _held(booking: Booking) -> list[PartnerReservation]:
    return list(booking.partner_reservations.order_by("first_seen_at", "id"))


def preview(action: str, booking: Booking, *, live: bool = True, token: str | None = None) -> Preview:
    """What `action` will do to `booking`: our state beside the partner's (asked live)."""
    if action not in ACTIONS:
        raise ValidationFailed(f"Unknown support action {action!r}; known: {', '.join(ACTIONS)}.")
    booking = Booking.objects.select_related("partner").get(pk=booking.pk)
    held = _held(booking)
    fenced = is_fenced(booking)
    side = (
        partner_side(booking, held)
        if live
        else PartnerSide(
            live=False,
            method="none",
            reservations=[_held_dict(r) for r in held],
            checked_at=timezone.now(),
            note="Not asked live; showing the last known state.",
        )
    )
    result = Preview(
        action=action,
        title=ACTIONS[action]["title"],
        booking=booking,
        allowed=False,
        refusal=_refusal(action, booking, held, fenced),
        effects=_effects(action, booking, held, fenced),
        pairs=pair_up(held, side),
        partner=side,
        fenced=fenced,
        token=token or new_token(),
        needs_note=action == RESOLVE,
    )
    result.allowed = not result.refusal
    if action == RESOLVE:
        result.outcomes = [
            (value, BookingState(value).label, _outcome_refusal(value, held, fenced)) for value in RESOLUTIONS
        ]
        if result.allowed and all(refusal for _, _, refusal in result.outcomes):
            result.allowed = False
            result.refusal = "No outcome fits what the partner holds yet: " + result.outcomes[0][2]
    if side.live:
        unknown = [p.partner_ref for p in result.pairs if p.theirs and not p.ours]
        if unknown:
            result.effects.append(
                f"The partner holds {', '.join(unknown)} that we have not recorded yet: a sync records it "
                "(and cancels it when it is an extra)."
            )
    return result


# --- the actions ----------------------------------------------------------------
@dataclass(frozen=True)
class ActionResult:
    action: str
    booking: Booking
    performed: bool  # False: a double submit (token already seen); nothing was done
    from_state: str
    to_state: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "booking": self.booking.reference,
            "performed": self.performed,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "message": self.message,
        }


def _seen(booking: Booking, token: str) -> BookingEvent | None:
    return (
        BookingEvent.objects.filter(booking=booking, kind__startswith="support.", data__action_token=token)
        .order_by("id")
        .first()
    )


def _clean_token(token: str) -> str:
    token = (token or "").strip()
    if not token or len(token) > 64:
        raise ValidationFailed("A support action needs an action token (up to 64 characters).")
    return token


def _begin(
    action: str, booking_id: UUID, operator: Operator, token: str
) -> tuple[Booking, ActionResult | None]:
    """Lock the booking; if the token was already used, the earlier result (do nothing)."""
    booking = lock_booking(booking_id)
    earlier = _seen(booking, token)
    if earlier is not None:
        return booking, ActionResult(
            action=action,
            booking=booking,
            performed=False,
            from_state=earlier.from_state,
            to_state=earlier.to_state,
            message=(
                f"Already done by {earlier.actor_label} at {earlier.occurred_at:%H:%M:%S} "
                f"({earlier.kind}); nothing more was done."
            ),
        )
    return booking, None


def _correction_data(token: str, note: str, **extra: Any) -> dict[str, Any]:
    return {"action_token": token, "note": note[:2000], **extra}


def _queue_after_commit(actor_name: str, booking_id: UUID) -> None:
    transaction.on_commit(lambda: messages.send_for_booking(actor_name, booking_id))


def support_sync(
    *, booking_id: UUID, operator: Operator, token: str, note: str = "", inline: bool = False
) -> ActionResult:
    """Run the same sync automation runs; the booking moves when the partner's answer does.

    Queued for a worker by default; `inline` (ops commands) runs it in this process, outside
    any transaction, and queues only its follow-ups.
    """
    operator.require(ACTIONS[SYNC]["permission"])
    token = _clean_token(token)
    with transaction.atomic():
        booking, done = _begin(SYNC, booking_id, operator, token)
        if done:
            return done
        record_event(
            booking,
            ACTIONS[SYNC]["kind"],
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            summary=f"Sync with {booking.partner.code} requested by {operator.label}",
            from_state=booking.status,
            to_state=booking.status,
            data=_correction_data(token, note, queue=booking.partner.queue_name, inline=inline),
        )
        if not inline:
            _queue_after_commit(messages.SYNC_BOOKING, booking.pk)
    old = booking.status
    _log(SYNC, booking, operator)
    if not inline:
        return ActionResult(SYNC, booking, True, old, booking.status, "Sync queued.")
    from partners.services.sync import booking_sync

    follow_up = booking_sync(booking.pk, actor=Actor.SUPPORT, actor_label=operator.label)
    messages.send_follow_up(booking.pk, follow_up)
    booking.refresh_from_db()
    last = booking.events.filter(kind__startswith="sync.").order_by("-occurred_at", "-id").first()
    return ActionResult(
        SYNC, booking, True, old, booking.status, f"Synced: {last.summary if last else 'no result recorded'}."
    )


def support_retry(*, booking_id: UUID, operator: Operator, token: str, note: str = "") -> ActionResult:
    """Submit again: a lost submission message, or a needs-attention booking that holds nothing."""
    operator.require(ACTIONS[RETRY]["permission"])
    token = _clean_token(token)
    with transaction.atomic():
        booking, done = _begin(RETRY, booking_id, operator, token)
        if done:
            return done
        refusal = _refusal(RETRY, booking, _held(booking), is_fenced(booking))
        if refusal:
            raise InvalidTransition(refusal)
        old = booking.status
        booking.next_check_at = timezone.now() + settings.BOOKING_SUBMIT_GRACE
        data = _correction_data(token, note, queue=booking.partner.queue_name)
        if old == BookingState.NEEDS_ATTENTION:
            data["attention_reason"] = booking.attention_reason
            apply_transition(
                booking,
                "requeue_submission",
                actor=Actor.SUPPORT,
                actor_label=operator.label,
                kind=ACTIONS[RETRY]["kind"],
                summary=f"Submission retried by {operator.label} (was: {data['attention_reason'] or '-'})",
                data=data,
                extra_fields=("next_check_at",),
            )
        else:
            booking.save(update_fields=["next_check_at", "updated_at"])
            record_event(
                booking,
                ACTIONS[RETRY]["kind"],
                actor=Actor.SUPPORT,
                actor_label=operator.label,
                summary=f"Submission re-queued by {operator.label}",
                from_state=old,
                to_state=booking.status,
                data=data,
            )
        _queue_after_commit(messages.SUBMIT_BOOKING, booking.pk)
    _log(RETRY, booking, operator)
    return ActionResult(RETRY, booking, True, old, booking.status, "Submission queued.")


def support_compensate(*, booking_id: UUID, operator: Operator, token: str, note: str = "") -> ActionResult:
    """Fail the booking and cancel whatever live reservation the partner holds for it."""
    operator.require(ACTIONS[COMPENSATE]["permission"])
    token = _clean_token(token)
    with transaction.atomic():
        booking, done = _begin(COMPENSATE, booking_id, operator, token)
        if done:
            return done
        held = _held(booking)
        fenced = is_fenced(booking)
        refusal = _refusal(COMPENSATE, booking, held, fenced)
        if refusal:
            raise InvalidTransition(refusal)
        old = booking.status
        live = [r.partner_ref for r in _live(held) if r.compensated_at is None]
        apply_transition(
            booking,
            "fail",
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            kind=ACTIONS[COMPENSATE]["kind"],
            summary=(
                f"Compensated by {operator.label}: failed"
                + (
                    f", cancelling {', '.join(live)} at the partner"
                    if live
                    else ", nothing live at the partner"
                )
            ),
            data=_correction_data(token, note, cancel=live, fenced=fenced),
        )
        # The same rule automation applies to a failed booking: cancel what is live, verified.
        reconcile_booking(booking, actor=Actor.SUPPORT, actor_label=operator.label)
        # A cancel decided earlier that never got verified (it failed, or its message was lost)
        # is driven again: the compensation actor is idempotent and verifies by a lookup.
        for reservation in _stalled_compensations(held):
            transaction.on_commit(
                lambda r=reservation: messages.send_for_partner(
                    messages.COMPENSATE_RESERVATION, booking.partner, r.pk
                )
            )
        if fenced:
            _queue_after_commit(messages.SYNC_BOOKING, booking.pk)
    _log(COMPENSATE, booking, operator)
    message = (
        f"Failed; cancelling {', '.join(live)} at the partner." if live else "Failed; nothing to cancel."
    )
    return ActionResult(COMPENSATE, booking, True, old, booking.status, message)


def support_cancel(*, booking_id: UUID, operator: Operator, token: str, note: str = "") -> ActionResult:
    """Cancel on the customer's behalf: the customer's own cancellation service, then its worker."""
    operator.require(ACTIONS[CANCEL]["permission"])
    token = _clean_token(token)
    with transaction.atomic():
        booking, done = _begin(CANCEL, booking_id, operator, token)
        if done:
            return done
        refusal = _refusal(CANCEL, booking, _held(booking), is_fenced(booking))
        if refusal:
            raise InvalidTransition(refusal)
        old = booking.status
        booking = booking_request_cancel(
            booking_id=booking.pk, actor=Actor.SUPPORT, actor_label=operator.label
        )
        record_event(
            booking,
            ACTIONS[CANCEL]["kind"],
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            summary=f"Cancelled on the customer's behalf by {operator.label}",
            from_state=old,
            to_state=booking.status,
            data=_correction_data(token, note),
        )
    _log(CANCEL, booking, operator)
    return ActionResult(CANCEL, booking, True, old, booking.status, "Cancellation requested.")


def support_resolve(
    *, booking_id: UUID, operator: Operator, token: str, outcome: str, note: str
) -> ActionResult:
    """Settle a needs-attention booking to confirmed, failed or cancelled, with a note."""
    operator.require(ACTIONS[RESOLVE]["permission"])
    token = _clean_token(token)
    note = (note or "").strip()
    if not note:
        raise ValidationFailed(
            "A note is required to mark a booking resolved.", fields={"note": ["Required."]}
        )
    with transaction.atomic():
        booking, done = _begin(RESOLVE, booking_id, operator, token)
        if done:
            return done
        held = _held(booking)
        fenced = is_fenced(booking)
        refusal = _refusal(RESOLVE, booking, held, fenced) or _outcome_refusal(outcome, held, fenced)
        if refusal:
            raise InvalidTransition(refusal)
        old = booking.status
        reason = booking.attention_reason
        apply_transition(
            booking,
            RESOLUTIONS[outcome],
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            kind=ACTIONS[RESOLVE]["kind"],
            summary=f"Resolved as {outcome} by {operator.label}: {note[:200]}",
            data=_correction_data(token, note, outcome=outcome, attention_reason=reason),
        )
        reconcile_booking(booking, actor=Actor.SUPPORT, actor_label=operator.label)  # e.g. extras
    _log(RESOLVE, booking, operator)
    return ActionResult(RESOLVE, booking, True, old, booking.status, f"Resolved as {outcome}.")


PERFORMERS = {
    SYNC: support_sync,
    RETRY: support_retry,
    COMPENSATE: support_compensate,
    CANCEL: support_cancel,
    RESOLVE: support_resolve,
}


def perform(
    action: str, *, booking_id: UUID, operator: Operator, token: str, note: str = "", outcome: str = ""
) -> ActionResult:
    if action not in PERFORMERS:
        raise ValidationFailed(f"Unknown support action {action!r}; known: {', '.join(PERFORMERS)}.")
    kwargs: dict[str, Any] = {"booking_id": booking_id, "operator": operator, "token": token, "note": note}
    if action == RESOLVE:
        kwargs["outcome"] = outcome
    return PERFORMERS[action](**kwargs)


def _log(action: str, booking: Booking, operator: Operator) -> None:
    with log_context(booking=booking.reference, partner_key=booking.partner_key):
        logger.info(
            "support action", extra={"action": action, "by": operator.label, "status": booking.status}
        )


# --- stored webhooks ----------------------------------------------------------------
@dataclass(frozen=True)
class ReplayResult:
    event: InboundEvent
    performed: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "inbound_event": self.event.pk,
            "event_id": self.event.event_id,
            "performed": self.performed,
            "state": self.event.state,
            "result": self.event.result,
            "booking": self.event.booking.reference if self.event.booking_id else None,
            "message": self.message,
        }


def inbound_event_reverify(event: InboundEvent) -> bool:
    """Does the stored delivery's signature still verify with the partner's secret (age ignored)?"""
    from partners.services.webhooks import signature_matches

    return signature_matches(event.partner, bytes(event.raw_body), event.headers or {})


def _claim_token(scope: str, token: str) -> bool:
    """Claim a one-time token in the shared cache; False when it was claimed before."""
    from django.core.cache import cache

    return cache.add(f"support-token:{scope}:{token}", "1", timeout=7 * 24 * 3600)


def support_replay_inbound(*, event_id: int, operator: Operator, token: str) -> ReplayResult:
    """Re-verify a stored webhook and process it again through the one door (which drops what it
    already holds). The token makes a double submit do nothing extra."""
    from partners.services.webhooks import inbound_event_replay

    operator.require(REPLAY_PERMISSION)
    token = _clean_token(token)
    event = InboundEvent.objects.select_related("partner", "booking").filter(pk=event_id).first()
    if event is None:
        raise NotFound(f"No inbound event {event_id}.")
    if not _claim_token(f"replay:{event_id}", token):
        return ReplayResult(event, False, "Already replayed with this confirmation; nothing more was done.")
    try:
        replayed = inbound_event_replay(event.pk, actor_label=operator.label)
    except PermissionError as exc:
        raise SupportActionDenied(str(exc)) from exc
    replayed = InboundEvent.objects.select_related("partner", "booking").get(pk=event.pk)
    if replayed.booking_id:
        with transaction.atomic():
            booking = lock_booking(replayed.booking_id)
            record_event(
                booking,
                "support.webhook_replayed",
                actor=Actor.SUPPORT,
                actor_label=operator.label,
                summary=f"Webhook {replayed.event_id} replayed by {operator.label}: {replayed.result}",
                from_state=booking.status,
                to_state=booking.status,
                partner_time=replayed.partner_timestamp,
                data={"action_token": token, "inbound_event_id": replayed.pk, "result": replayed.result},
            )
    return ReplayResult(
        replayed, True, f"Replayed: {replayed.get_state_display()}, {replayed.result or '-'}."
    )
