"""The five support actions: the same services and actors as automation, permission-checked,
once per token, re-checked under the booking's lock, and audited as one named correction
(`support.*`) on the timeline with the operator and the old and new state. Partner work is
owed in the action's transaction and queued after commit (`owed`): while our Redis is down the
action still commits, its work is sent by the sweeper once Redis answers, and the operator is
told it is not queued yet."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

import redis
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bookings.models import Actor
from bookings.services import apply_transition, booking_request_cancel
from bookings.states import BookingState
from bookings.timeline import record_event
from config.errors import Conflict, InvalidTransition, ValidationFailed
from config.logging import log_context
from partners import messages
from partners.services.observations import reconcile_booking, request_compensation_again
from partners.services.sync import booking_sync
from reconciliation.services.support import owed
from reconciliation.services.support.checks import (
    Situation,
    ended_before_support,
    outcome_refusal,
    refusal,
    resolution,
)
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

Body = Callable[..., ActionResult]


def _support_action(action: str) -> Callable[[Body], Body]:
    """Run the decorated body as the support action `action`: for an operator with its
    permission, with a clean token, on the booking locked in one short transaction, only when
    the checks let it (`checks.refusal`); a token already used for this ask returns the earlier
    result, one used for another ask is refused (`once.claim_token`). `batch`: the references of
    every booking the token covers (a command or bulk action over several); default, this one."""

    def decorate(body: Body) -> Body:
        @functools.wraps(body)
        def run(
            *, booking_id: UUID, operator: Operator, token: str, batch: Sequence[str] = (), **kwargs: Any
        ) -> ActionResult:
            operator.require(ACTIONS[action]["permission"])
            token = clean_token(token)
            with transaction.atomic():
                booking, done = lock_unless_done(
                    action,
                    booking_id,
                    token,
                    operator=operator.label,
                    batch=batch,
                    not_queued=_still_owed,
                    **_asked(action, kwargs),
                )
                if done:
                    return done
                situation = Situation(booking)
                why_not = refusal(action, situation)
                if why_not:
                    raise InvalidTransition(why_not)
                result = body(situation, operator=operator, token=token, **kwargs)
            # Committed: its hints have run (unless a caller's transaction is still open).
            result = owed.told(result, result.owed)
            with log_context(booking=booking.reference, partner_key=booking.partner_key):
                logger.info(
                    "support action",
                    extra={"action": action, "by": operator.label, "status": result.to_state},
                )
            return result

        return run

    return decorate


def _asked(action: str, kwargs: dict[str, Any]) -> dict[str, object]:
    """What the action asks beyond its booking, compared when its token comes again."""
    return {"outcome": kwargs.get("outcome")} if action == RESOLVE else {}


def _still_owed(booking, token: str) -> str:
    """For a double submit: what the earlier action still owes our queue, in words, while the
    queue does not answer ('' once it does: its hint or, within a sweep, the sweeper sends it)."""
    waiting = owed.unsent(booking.pk, token)
    return waiting if waiting and not owed.queue_answers() else ""


@_support_action(SYNC)
def _request_sync(
    situation: Situation, *, operator: Operator, token: str, note: str, inline: bool
) -> ActionResult:
    booking = situation.booking
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
    # Inline, this process runs the sync after commit; owed all the same until it has.
    sync = owed.owe(booking, messages.SYNC_BOOKING, token=token, hint=not inline)
    return ActionResult(
        SYNC,
        booking,
        True,
        booking.status,
        booking.status,
        "Sync queued.",
        owed=(sync,),
        if_not_queued=f"Sync requested, {owed.NOT_QUEUED}",
    )


def support_sync(
    *,
    booking_id: UUID,
    operator: Operator,
    token: str,
    note: str = "",
    inline: bool = False,
    batch: Sequence[str] = (),
) -> ActionResult:
    """Run the same sync automation runs; the booking moves when the partner's answer does.

    Queued for a worker by default; `inline` (ops commands) runs it in this process, outside
    any transaction, and queues only its follow-ups.
    """
    requested = _request_sync(
        booking_id=booking_id, operator=operator, token=token, note=note, inline=inline, batch=batch
    )
    if not inline or not requested.performed:
        return requested
    booking = requested.booking
    # The partner guard's cap and breaker live in our Redis: without it the partner is not asked,
    # and the owed sync waits for the sweeper.
    not_asked = dataclasses.replace(
        requested,
        queued=False,
        message=(
            "Sync requested; the partner was not asked now: our Redis (the queue and the partner's "
            "guard) is not answering. The sweeper sends the sync once it answers again."
        ),
    )
    if not owed.queue_answers():
        return not_asked
    try:
        follow_up = booking_sync(booking.pk, actor=Actor.SUPPORT, actor_label=operator.label)
    except redis.RedisError:
        logger.warning("inline support sync found Redis down; left to the sweeper", exc_info=True)
        return not_asked
    owed.mark_sent(*(o.row_id for o in requested.owed))
    try:
        messages.send_follow_up(booking.pk, follow_up)
    except redis.RedisError:  # the booking's own next_check_at brings it back
        logger.warning("inline support sync's follow-up not queued", exc_info=True)
    booking.refresh_from_db()
    last = booking.events.filter(kind__startswith="sync.").order_by("-occurred_at", "-id").first()
    message = f"Synced: {last.summary if last else 'no result recorded'}."
    return ActionResult(SYNC, booking, True, requested.from_state, booking.status, message)


@_support_action(RETRY)
def support_retry(situation: Situation, *, operator: Operator, token: str, note: str = "") -> ActionResult:
    """Submit again: a lost submission message, or a needs-attention booking that holds nothing."""
    booking = situation.booking
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
    submission = owed.owe(booking, messages.SUBMIT_BOOKING, token=token)
    return ActionResult(
        RETRY,
        booking,
        True,
        old,
        booking.status,
        "Submission queued.",
        owed=(submission,),
        if_not_queued=f"Submission requested, {owed.NOT_QUEUED}",
    )


@_support_action(COMPENSATE)
def support_compensate(
    situation: Situation, *, operator: Operator, token: str, note: str = ""
) -> ActionResult:
    """Fail the booking and cancel whatever live reservation the partner holds for it.

    A booking that had ended before support took it up (`checks.ended_before_support`) is not
    failed: its customer's booking has ended already, and support has it only for what the
    partner still holds. Only that is cancelled, by the rule automation applies to it
    (`reconcile_booking`), which returns the booking to its end once nothing may be held there:
    now, when nothing is; else when the cancel is verified. Its fee, money and view stay."""
    booking = situation.booking
    old = booking.status
    live = [r.partner_ref for r in situation.live if r.compensated_at is None]
    cancelling = f"cancelling {', '.join(live)} at the partner" if live else ""
    end = ended_before_support(situation)
    data = correction_data(token, note, cancel=live, fenced=situation.fenced)
    if end:
        record_event(
            booking,
            ACTIONS[COMPENSATE]["kind"],
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            summary=f"Compensated by {operator.label}: {cancelling or 'nothing live at the partner'}; "
            f"back to {end} once the partner holds nothing of it",
            from_state=old,
            to_state=old,
            data={**data, "ended_as": end},
        )
    else:
        apply_transition(
            booking,
            "fail",
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            kind=ACTIONS[COMPENSATE]["kind"],
            summary=f"Compensated by {operator.label}: failed, {cancelling or 'nothing live at the partner'}",
            data=data,
        )
    # A cancel decided earlier that never got verified (it failed, or its message was lost)
    # is driven again, with tries of its own: the compensation actor verifies by a lookup. Of an
    # ended booking, one the partner let go since is verified too: until it is, the booking
    # cannot return to its end.
    again = situation.unverified_compensations if end else situation.stalled_compensations
    for reservation in again:
        request_compensation_again(reservation)
    # The same rule automation applies to a failed (or ended) booking: cancel what is live, verified.
    reconcile_booking(booking, actor=Actor.SUPPORT, actor_label=operator.label)
    syncs = (owed.owe(booking, messages.SYNC_BOOKING, token=token),) if situation.fenced else ()
    if not end:
        message = f"Failed; {cancelling}." if live else "Failed; nothing to cancel."
    elif booking.status == end:
        message = f"Nothing is held at the partner: back to {end}."
    elif live:
        message = f"{cancelling.capitalize()}; back to {end} once verified."
    elif situation.fenced:
        message = (
            f"Learning what the partner holds (an earlier create's outcome is unknown); "
            f"back to {end} once nothing is."
        )
    else:
        message = f"Verifying its cancel at the partner; back to {end} once verified."
    return ActionResult(
        COMPENSATE,
        booking,
        True,
        old,
        booking.status,
        message,
        owed=syncs,
        if_not_queued=f"{message} The sync its unknown create needs is {owed.NOT_QUEUED}",
    )


# The service's refusal of a cancel that would now take more than the fee previewed.
FEE_CHANGED = "cancellation_fee_changed"


@_support_action(CANCEL)
def support_cancel(
    situation: Situation,
    *,
    operator: Operator,
    token: str,
    note: str = "",
    expected_fee: Decimal | None = None,
) -> ActionResult:
    """Cancel on the customer's behalf: the customer's own cancellation service, then its worker.
    A cancel of the partner's reservation decided earlier and never verified (the customer's own
    cancel that did not complete, which is why support has the booking) is driven again, with
    tries of its own, as compensating does: the cancellation's worker leaves a reservation
    already being cancelled to that cancel, so without it the booking would come back to support.

    `expected_fee`: the fee the confirmed preview showed (`Preview.money.fee`), which support may
    have told the customer. The service refuses a cancel that would now take more (the partner
    confirmed, the cut-off passed since): nothing is cancelled, and the token stays unused. The
    refusal names the form's field (`expected_fee`), so the console shows it with a fresh preview."""
    old = situation.booking.status
    try:
        booking = booking_request_cancel(
            booking_id=situation.booking.pk,
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            kind=ACTIONS[CANCEL]["kind"],
            summary=f"Cancelled on the customer's behalf by {operator.label}",
            data=correction_data(token, note),
            expected_fee=expected_fee,
        )
    except Conflict as exc:
        if exc.code != FEE_CHANGED:
            raise
        raise Conflict(exc.message, code=FEE_CHANGED, fields={"expected_fee": [exc.message]}) from exc
    for reservation in situation.stalled_compensations:
        request_compensation_again(reservation)
    return ActionResult(CANCEL, booking, True, old, booking.status, "Cancellation requested.")


@_support_action(RESOLVE)
def support_resolve(
    situation: Situation, *, operator: Operator, token: str, outcome: str, note: str
) -> ActionResult:
    """Settle a needs-attention booking to confirmed, failed or cancelled, with a note; one that had
    ended before support took it up, only back to that end (`checks.outcome_refusal`)."""
    note = (note or "").strip()
    if not note:
        raise ValidationFailed(
            "A note is required to mark a booking resolved.", fields={"note": ["Required."]}
        )
    why_not = outcome_refusal(outcome, situation)
    if why_not:
        raise InvalidTransition(why_not)
    booking = situation.booking
    old, reason = booking.status, booking.attention_reason
    apply_transition(
        booking,
        resolution(outcome, situation),
        actor=Actor.SUPPORT,
        actor_label=operator.label,
        kind=ACTIONS[RESOLVE]["kind"],
        summary=f"Resolved as {outcome} by {operator.label}: {note[:200]}",
        data=correction_data(token, note, outcome=outcome, attention_reason=reason),
    )
    reconcile_booking(booking, actor=Actor.SUPPORT, actor_label=operator.label)  # e.g. extras
    return ActionResult(RESOLVE, booking, True, old, booking.status, f"Resolved as {outcome}.")


_RUNS = {
    SYNC: support_sync,
    RETRY: support_retry,
    COMPENSATE: support_compensate,
    CANCEL: support_cancel,
    RESOLVE: support_resolve,
}


def support_action_run(
    action: str,
    *,
    booking_id: UUID,
    operator: Operator,
    token: str,
    note: str = "",
    outcome: str = "",
    batch: Sequence[str] = (),
    expected_fee: Decimal | None = None,
) -> ActionResult:
    """Run the support action named `action` (the console's and the commands' one entry).
    `expected_fee`: a cancel's, the fee its preview showed (`support_cancel`)."""
    if action not in _RUNS:
        raise ValidationFailed(f"Unknown support action {action!r}; known: {', '.join(_RUNS)}.")
    kwargs: dict[str, Any] = {
        "booking_id": booking_id,
        "operator": operator,
        "token": token,
        "note": note,
        "batch": batch,
    }
    if action == RESOLVE:
        kwargs["outcome"] = outcome
    if action == CANCEL:
        kwargs["expected_fee"] = expected_fee
    return _RUNS[action](**kwargs)
