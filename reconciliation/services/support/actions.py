"""The five support actions: the same services and actors as automation, permission-checked,
once per token, re-checked under the booking's lock, and audited as one named correction
(`support.*`) on the timeline with the operator and the old and new state. Partner work is
queued after commit."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.services import apply_transition, booking_request_cancel
from bookings.states import BookingState
from bookings.timeline import record_event
from config.errors import InvalidTransition, ValidationFailed
from config.logging import log_context
from partners import messages
from partners.services.observations import reconcile_booking
from partners.services.sync import booking_sync
from reconciliation.services.support.checks import RESOLUTIONS, Situation, outcome_refusal, refusal
from reconciliation.services.support.once import ActionResult, clean_token, correction_data, lock_unless_done
from reconciliation.services.support.permissions import (
    ACTIONS,
    CANCEL,
    COMPENSATE,
    RESOLVE,
    RETRY,
    SYNC,
    Operator,
)

logger = logging.getLogger(__name__)


def _checked(action: str, booking: Booking) -> Situation:
    """The locked booking's situation, once `action` may run on it."""
    situation = Situation.of(booking)
    why_not = refusal(action, situation)
    if why_not:
        raise InvalidTransition(why_not)
    return situation


def _send_after_commit(actor_name: str, booking_id: UUID) -> None:
    transaction.on_commit(lambda: messages.send_for_booking(actor_name, booking_id))


def _log(action: str, booking: Booking, operator: Operator) -> None:
    with log_context(booking=booking.reference, partner_key=booking.partner_key):
        logger.info(
            "support action", extra={"action": action, "by": operator.label, "status": booking.status}
        )


def support_sync(
    *, booking_id: UUID, operator: Operator, token: str, note: str = "", inline: bool = False
) -> ActionResult:
    """Run the same sync automation runs; the booking moves when the partner's answer does.

    Queued for a worker by default; `inline` (ops commands) runs it in this process, outside
    any transaction, and queues only its follow-ups.
    """
    operator.require(ACTIONS[SYNC]["permission"])
    token = clean_token(token)
    with transaction.atomic():
        booking, done = lock_unless_done(SYNC, booking_id, token)
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
            data=correction_data(token, note, queue=booking.partner.queue_name, inline=inline),
        )
        if not inline:
            _send_after_commit(messages.SYNC_BOOKING, booking.pk)
    old = booking.status
    _log(SYNC, booking, operator)
    if not inline:
        return ActionResult(SYNC, booking, True, old, booking.status, "Sync queued.")
    messages.send_follow_up(
        booking.pk, booking_sync(booking.pk, actor=Actor.SUPPORT, actor_label=operator.label)
    )
    booking.refresh_from_db()
    last = booking.events.filter(kind__startswith="sync.").order_by("-occurred_at", "-id").first()
    return ActionResult(
        SYNC, booking, True, old, booking.status, f"Synced: {last.summary if last else 'no result recorded'}."
    )


def support_retry(*, booking_id: UUID, operator: Operator, token: str, note: str = "") -> ActionResult:
    """Submit again: a lost submission message, or a needs-attention booking that holds nothing."""
    operator.require(ACTIONS[RETRY]["permission"])
    token = clean_token(token)
    with transaction.atomic():
        booking, done = lock_unless_done(RETRY, booking_id, token)
        if done:
            return done
        _checked(RETRY, booking)
        old = booking.status
        booking.next_check_at = timezone.now() + settings.BOOKING_SUBMIT_GRACE
        data = correction_data(token, note, queue=booking.partner.queue_name)
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
        _send_after_commit(messages.SUBMIT_BOOKING, booking.pk)
    _log(RETRY, booking, operator)
    return ActionResult(RETRY, booking, True, old, booking.status, "Submission queued.")


def support_compensate(*, booking_id: UUID, operator: Operator, token: str, note: str = "") -> ActionResult:
    """Fail the booking and cancel whatever live reservation the partner holds for it."""
    operator.require(ACTIONS[COMPENSATE]["permission"])
    token = clean_token(token)
    with transaction.atomic():
        booking, done = lock_unless_done(COMPENSATE, booking_id, token)
        if done:
            return done
        situation = _checked(COMPENSATE, booking)
        old = booking.status
        live = [r.partner_ref for r in situation.live if r.compensated_at is None]
        cancelling = (
            f", cancelling {', '.join(live)} at the partner" if live else ", nothing live at the partner"
        )
        apply_transition(
            booking,
            "fail",
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            kind=ACTIONS[COMPENSATE]["kind"],
            summary=f"Compensated by {operator.label}: failed{cancelling}",
            data=correction_data(token, note, cancel=live, fenced=situation.fenced),
        )
        # The same rule automation applies to a failed booking: cancel what is live, verified.
        reconcile_booking(booking, actor=Actor.SUPPORT, actor_label=operator.label)
        # A cancel decided earlier that never got verified (it failed, or its message was lost)
        # is driven again: the compensation actor is idempotent and verifies by a lookup.
        for reservation in situation.stalled_compensations:
            transaction.on_commit(
                lambda r=reservation: messages.send_for_partner(
                    messages.COMPENSATE_RESERVATION, booking.partner, r.pk
                )
            )
        if situation.fenced:
            _send_after_commit(messages.SYNC_BOOKING, booking.pk)
    _log(COMPENSATE, booking, operator)
    message = (
        f"Failed; cancelling {', '.join(live)} at the partner." if live else "Failed; nothing to cancel."
    )
    return ActionResult(COMPENSATE, booking, True, old, booking.status, message)


def support_cancel(*, booking_id: UUID, operator: Operator, token: str, note: str = "") -> ActionResult:
    """Cancel on the customer's behalf: the customer's own cancellation service, then its worker."""
    operator.require(ACTIONS[CANCEL]["permission"])
    token = clean_token(token)
    with transaction.atomic():
        booking, done = lock_unless_done(CANCEL, booking_id, token)
        if done:
            return done
        _checked(CANCEL, booking)
        old = booking.status
        booking = booking_request_cancel(
            booking_id=booking.pk,
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            kind=ACTIONS[CANCEL]["kind"],
            summary=f"Cancelled on the customer's behalf by {operator.label}",
            data=correction_data(token, note),
        )
    _log(CANCEL, booking, operator)
    return ActionResult(CANCEL, booking, True, old, booking.status, "Cancellation requested.")


def support_resolve(
    *, booking_id: UUID, operator: Operator, token: str, outcome: str, note: str
) -> ActionResult:
    """Settle a needs-attention booking to confirmed, failed or cancelled, with a note."""
    operator.require(ACTIONS[RESOLVE]["permission"])
    token = clean_token(token)
    note = (note or "").strip()
    if not note:
        raise ValidationFailed(
            "A note is required to mark a booking resolved.", fields={"note": ["Required."]}
        )
    with transaction.atomic():
        booking, done = lock_unless_done(RESOLVE, booking_id, token)
        if done:
            return done
        why_not = outcome_refusal(outcome, _checked(RESOLVE, booking))
        if why_not:
            raise InvalidTransition(why_not)
        old = booking.status
        reason = booking.attention_reason
        apply_transition(
            booking,
            RESOLUTIONS[outcome],
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            kind=ACTIONS[RESOLVE]["kind"],
            summary=f"Resolved as {outcome} by {operator.label}: {note[:200]}",
            data=correction_data(token, note, outcome=outcome, attention_reason=reason),
        )
        reconcile_booking(booking, actor=Actor.SUPPORT, actor_label=operator.label)  # e.g. extras
    _log(RESOLVE, booking, operator)
    return ActionResult(RESOLVE, booking, True, old, booking.status, f"Resolved as {outcome}.")


_RUNS = {
    SYNC: support_sync,
    RETRY: support_retry,
    COMPENSATE: support_compensate,
    CANCEL: support_cancel,
    RESOLVE: support_resolve,
}


def support_action_run(
    action: str, *, booking_id: UUID, operator: Operator, token: str, note: str = "", outcome: str = ""
) -> ActionResult:
    """Run the support action named `action` (the console's and the commands' one entry)."""
    if action not in _RUNS:
        raise ValidationFailed(f"Unknown support action {action!r}; known: {', '.join(_RUNS)}.")
    kwargs: dict[str, Any] = {"booking_id": booking_id, "operator": operator, "token": token, "note": note}
    if action == RESOLVE:
        kwargs["outcome"] = outcome
    return _RUNS[action](**kwargs)
