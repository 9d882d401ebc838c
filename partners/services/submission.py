"""Submitting a booking to its partner: record the attempt, call outside any transaction,
record the outcome with its effect (invariants 2, 3 and 4)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bookings import customer_view
from bookings.catalogue import offer_with_partner
from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState
from config.logging import log_context
from partners import decisions
from partners.connectors import connector_for
from partners.connectors.base import CallResult, CreateRequest
from partners.messages import FollowUp
from partners.models import Capability, Operation, Outcome, PartnerAttempt, Source
from partners.services import backoff
from partners.services.calls import attempt_call, attempt_close, attempt_open, record_attempt
from partners.services.observations import is_fenced, observation_apply, reconcile_booking

logger = logging.getLogger(__name__)


def create_request(booking: Booking) -> CreateRequest:
    # The offer through the catalogue cache, as the customer path read it: one query less per
    # submission for a row that changes a few times a day.
    offer = offer_with_partner(booking.offer_id) or booking.offer
    return CreateRequest(
        client_reference=booking.reference,
        product_id=offer.product_id,
        start_date=booking.start_date,
        end_date=booking.end_date,
        guests=booking.guests,
        total_price=booking.total_price,
        currency=booking.currency,
    )


def _claim(booking_id: UUID) -> tuple[Booking, PartnerAttempt] | FollowUp | None:
    """Take the booking for submission and commit the attempt before any call is made."""
    with transaction.atomic():
        booking = lock_booking(booking_id)
        if booking.status != BookingState.REQUESTED:
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
        result = attempt_call(attempt, lambda: connector.create(request, idempotency_key=booking.partner_key))
        return record_create_outcome(booking.pk, attempt, result)


def poll_delay_s(booking: Booking, now: datetime) -> float:
    """How soon to ask a partner without webhooks again about a pending booking: half the time
    it has been pending, so polls thin out geometrically (between the sync delay and the sweep age)."""
    waited = (now - booking.status_changed_at).total_seconds()
    return min(max(waited / 2, settings.PARTNER_SYNC_DELAY_S), settings.RECONCILE_SYNC_AGE_S)


def record_create_outcome(booking_id: UUID, attempt: PartnerAttempt, result: CallResult) -> FollowUp:
    """Record a create's outcome and its effect on the booking in one transaction."""
    step = decisions.after_create(
        result.outcome, error_code=result.error_code, http_status=result.http_status
    )
    outcome: str | None = None
    if step == decisions.NextStep.APPLY_RESPONSE and result.reservation is None:
        if result.outcome == Outcome.REJECTED:
            step = decisions.NextStep.REJECT  # declined without a booking number: nothing is held
        else:
            # A 2xx without a reservation tells us nothing: treat it as ambiguous (a fence).
            step, outcome = decisions.NextStep.RESOLVE_AMBIGUITY, Outcome.AMBIGUOUS
    with transaction.atomic():
        booking = lock_booking(booking_id)
        attempt_close(attempt, result, outcome=outcome)
        record_attempt(booking, attempt, result, actor=Actor.WORKER)
        if step == decisions.NextStep.APPLY_RESPONSE:
            for snapshot in result.reservations:
                observed = observation_apply(
                    partner=booking.partner,
                    snapshot=snapshot,
                    source=Source.RESPONSE,
                    actor=Actor.WORKER,
                    locked_booking=booking,
                    attempt=attempt,
                )
                # The one door moved our locked copy of the booking: it is current.
                booking = observed.booking or booking
            # The answer lifted the call's fence even where the one door had nothing to apply.
            customer_view.refresh(booking, actor=Actor.WORKER)
            no_webhooks = not booking.partner.has(Capability.WEBHOOKS)
            if booking.status == BookingState.PENDING_PARTNER and no_webhooks:
                # Nobody will tell us when it settles: ask again. The sweeper's check never waits
                # past the deadline for that poll, which may wait behind the partner's backlog.
                delay = poll_delay_s(booking, timezone.now())
                grace = settings.BOOKING_SUBMIT_GRACE
                booking.next_check_at = min(
                    timezone.now() + timedelta(seconds=delay) + grace, booking.deadline
                )
                booking.save(update_fields=["next_check_at", "updated_at"])
                return FollowUp(sync_after_s=delay)
            return FollowUp()
        if step == decisions.NextStep.RESOLVE_AMBIGUITY:
            if booking.status == BookingState.SUBMITTING:
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
        if booking.status != BookingState.SUBMITTING:
            # Partner truth (an early webhook) moved it meanwhile; the one door has decided.
            reconcile_booking(booking, actor=Actor.WORKER)
            return FollowUp()
        if step == decisions.NextStep.RETRY_LATER:
            delay = backoff.delay_s(booking.submission_count, retry_after_s=result.retry_after_s)
            retry_at = timezone.now() + timedelta(seconds=delay)
            booking.next_check_at = min(retry_at, booking.deadline)
            apply_transition(
                booking,
                "release_submission",
                actor=Actor.WORKER,
                kind="booking.submission_deferred",
                summary=(
                    f"Nothing reached the partner ({result.error_code or result.outcome}); "
                    f"retry in {delay:.1f}s"
                ),
                data={"retry_in_s": round(delay, 3), "error": result.error_code or result.outcome},
                extra_fields=("next_check_at",),
            )
            # Past the deadline the sweeper expires it instead of retrying.
            return FollowUp(submit_after_s=delay) if retry_at < booking.deadline else FollowUp()
        if step == decisions.NextStep.REJECT:
            apply_transition(
                booking,
                "reject",
                actor=Actor.WORKER,
                summary=f"Partner refused: {result.error_code or result.error or result.http_status}",
                data={"reason": result.error_code or result.error[:100], "message": result.error[:500]},
            )
        else:
            apply_transition(
                booking,
                "flag_for_attention",
                actor=Actor.WORKER,
                reason=f"partner_{result.error_code or result.http_status}",
                detail=result.error[:1000],
            )
        return FollowUp()
