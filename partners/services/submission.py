"""Submitting a booking to its partner: record the attempt, call outside any transaction,
record the outcome with its effect (invariants 2, 3 and 4)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState
from bookings.timeline import record_event
from config.logging import log_context
from partners import decisions
from partners.connectors import connector_for
from partners.connectors.base import CallResult, CreateRequest
from partners.models import Operation, Outcome, PartnerAttempt, Source
from partners.services import backoff
from partners.services.calls import (
    attempt_close,
    attempt_data,
    attempt_open,
    attempt_summary,
    perform,
)
from partners.services.observations import is_fenced, observation_apply, reconcile_booking

logger = logging.getLogger(__name__)
S = BookingState


@dataclass(frozen=True)
class FollowUp:
    """What the actor must queue after the service returns (after commit)."""

    submit_after_s: float | None = None
    sync_after_s: float | None = None
    compensate_after_s: float | None = None


def create_request(booking: Booking) -> CreateRequest:
    return CreateRequest(
        client_reference=booking.reference,
        product_id=booking.offer.product_id,
        start_date=booking.start_date,
        end_date=booking.end_date,
        guests=booking.guests,
        total_price=booking.total_price,
        currency=booking.currency,
    )


def _claim(booking_id: UUID) -> tuple[Booking, PartnerAttempt] | FollowUp | None:
    """Take the booking for submission and commit the attempt before any call is made."""
    from django.conf import settings

    with transaction.atomic():
        booking = lock_booking(booking_id)
        if booking.status != S.REQUESTED:
            logger.info("submission skipped", extra={"booking": booking.reference, "status": booking.status})
            return None
        if is_fenced(booking):
            return FollowUp(
                sync_after_s=0
            )  # an earlier create's outcome is unknown: never a blind second create
        now = timezone.now()
        if booking.deadline <= now:
            apply_transition(
                booking, "expire", actor=Actor.WORKER, summary="Deadline passed before submission"
            )
            return None
        booking.next_check_at = (
            now
            + timedelta(seconds=booking.partner.connect_timeout_s + booking.partner.read_timeout_s)
            + settings.BOOKING_SUBMIT_GRACE
        )
        apply_transition(
            booking,
            "start_submission",
            actor=Actor.WORKER,
            summary=f"Submitting to {booking.partner.code} (try {booking.submission_count + 1})",
            extra_fields=("next_check_at",),
        )
        attempt = attempt_open(
            partner=booking.partner,
            operation=Operation.CREATE,
            booking=booking,
            idempotency_key=booking.partner_key,
        )
        return booking, attempt


def submission_run(booking_id: UUID) -> FollowUp:
    claimed = _claim(booking_id)
    if not isinstance(claimed, tuple):
        return claimed or FollowUp()
    booking, attempt = claimed
    with log_context(booking=booking.reference, partner_key=booking.partner_key):
        connector = connector_for(booking.partner)
        request = create_request(booking)
        result = perform(attempt, lambda: connector.create(request, idempotency_key=booking.partner_key))
        return record_create_outcome(booking.pk, attempt, result)


def record_create_outcome(booking_id: UUID, attempt: PartnerAttempt, result: CallResult) -> FollowUp:
    """Record a create's outcome and its effect on the booking in one transaction."""
    from django.conf import settings

    step = decisions.after_create(
        result.outcome, error_code=result.error_code, http_status=result.http_status
    )
    if step == decisions.NextStep.APPLY_RESPONSE and result.reservation is None:
        step = decisions.NextStep.RESOLVE_AMBIGUITY  # a 2xx without a reservation tells us nothing
    with transaction.atomic():
        booking = lock_booking(booking_id)
        attempt_close(attempt, result)
        if step == decisions.NextStep.RESOLVE_AMBIGUITY and result.outcome != Outcome.AMBIGUOUS:
            PartnerAttempt.objects.filter(pk=attempt.pk).update(
                outcome=Outcome.AMBIGUOUS, resolved_at=None, resolution=""
            )
        record_event(
            booking,
            f"partner.attempt.{result.outcome}",
            actor=Actor.WORKER,
            summary=attempt_summary(attempt, result),
            partner_time=result.partner_time,
            skew_ms=booking.partner.clock_skew_ms,
            data=attempt_data(attempt, result),
        )
        if step == decisions.NextStep.APPLY_RESPONSE:
            for snapshot in result.reservations:
                observation_apply(
                    partner=booking.partner,
                    snapshot=snapshot,
                    source=Source.RESPONSE,
                    actor=Actor.WORKER,
                    booking_id=booking.pk,
                    attempt=attempt,
                )
            return FollowUp()
        if step == decisions.NextStep.RESOLVE_AMBIGUITY:
            if booking.status == S.SUBMITTING:
                booking.next_check_at = timezone.now() + timedelta(seconds=settings.PARTNER_SYNC_DELAY_S)
                apply_transition(
                    booking,
                    "mark_outcome_unknown",
                    actor=Actor.WORKER,
                    summary="Create outcome unknown: fenced until a lookup resolves it",
                    data={"strategy": decisions.ambiguity_strategy(booking.partner.capabilities)},
                    extra_fields=("next_check_at",),
                )
            return FollowUp(sync_after_s=settings.PARTNER_SYNC_DELAY_S)
        if step == decisions.NextStep.RETRY_LATER:
            if booking.status != S.SUBMITTING:
                reconcile_booking(booking, actor=Actor.WORKER)
                return FollowUp()
            delay = backoff.delay_s(booking.submission_count, retry_after_s=result.retry_after_s)
            retry_at = timezone.now() + timedelta(seconds=delay)
            booking.next_check_at = min(retry_at, booking.deadline)
            apply_transition(
                booking,
                "release_submission",
                actor=Actor.WORKER,
                kind="booking.submission_deferred",
                summary=f"Nothing reached the partner ({result.error_code or result.outcome}); retry in {delay:.1f}s",
                extra_fields=("next_check_at",),
            )
            # Past the deadline the sweeper expires it instead of retrying.
            return FollowUp(submit_after_s=delay) if retry_at < booking.deadline else FollowUp()
        if booking.status == S.SUBMITTING:
            if step == decisions.NextStep.REJECT:
                apply_transition(
                    booking,
                    "reject",
                    actor=Actor.WORKER,
                    summary=f"Partner refused the request: {result.error_code or result.http_status}",
                    data={"reason": result.error_code, "message": result.error[:500]},
                )
            else:
                apply_transition(
                    booking,
                    "flag_for_attention",
                    actor=Actor.WORKER,
                    reason=f"partner_{result.error_code or result.http_status}",
                    detail=result.error[:1000],
                )
        else:
            reconcile_booking(booking, actor=Actor.WORKER)
        return FollowUp()
