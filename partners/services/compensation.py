"""Cancelling reservations at the partner: customer cancellations, duplicates and orphans.

A compensation is a cancel call followed by a verifying lookup, each step on the timeline; a
compensation that keeps failing sends the booking to needs_attention (invariant 5).
"""

from __future__ import annotations

import logging
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from bookings.models import Actor
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState
from bookings.timeline import record_event
from config.logging import log_context
from partners.connectors import connector_for
from partners.messages import FollowUp
from partners.models import (
    LIVE_RESERVATION_STATUSES,
    Operation,
    Outcome,
    PartnerAttempt,
    PartnerReservation,
    Source,
)
from partners.services import backoff
from partners.services.calls import call_and_close
from partners.services.observations import is_fenced, observation_apply, reconcile_booking
from partners.services.orphans import orphan_case_cancel_failed, orphan_case_cancel_verified
from partners.timeline import compensation_data, compensation_summary

logger = logging.getLogger(__name__)


def booking_cancel_run(
    booking_id: UUID, *, actor: Actor | str = Actor.WORKER, actor_label: str = ""
) -> FollowUp:
    """Carry out a requested cancellation: cancel what the partner holds, then the booking."""
    with transaction.atomic():
        booking = lock_booking(booking_id)
        if booking.status != BookingState.CANCEL_REQUESTED:
            return FollowUp()
        if is_fenced(booking):
            return FollowUp(sync_after_s=settings.PARTNER_SYNC_DELAY_S)  # learn what it holds first
        reconcile_booking(booking, actor=actor, actor_label=actor_label)
        return FollowUp()


def reservation_compensate(
    reservation_id: int, *, actor: Actor | str = Actor.WORKER, actor_label: str = ""
) -> FollowUp:
    reservation = PartnerReservation.objects.select_related("partner", "booking").get(pk=reservation_id)
    booking = reservation.booking
    with log_context(
        booking=booking.reference if booking else None,
        partner_key=booking.partner_key if booking else None,
        partner_ref=reservation.partner_ref,
    ):
        if reservation.compensated_at is not None:
            return FollowUp()
        connector = connector_for(reservation.partner)
        if reservation.status in LIVE_RESERVATION_STATUSES:
            attempt, result = call_and_close(
                partner=reservation.partner,
                operation=Operation.CANCEL,
                booking=booking,
                reservation=reservation,
                call=lambda: connector.cancel(reservation.partner_ref),
            )
            if result.ok and result.reservation is not None:
                observation_apply(
                    partner=reservation.partner,
                    snapshot=result.reservation,
                    source=Source.RESPONSE,
                    actor=actor,
                    actor_label=actor_label,
                    attempt=attempt,
                )
            elif result.outcome != Outcome.PERMANENT:
                return _retry_or_give_up(
                    reservation, result.error_code or result.outcome, result.retry_after_s
                )
        return _verify(reservation_id, actor=actor, actor_label=actor_label)


def _verify(reservation_id: int, *, actor: Actor | str, actor_label: str) -> FollowUp:
    """Look the reservation up again: only a partner saying 'not live' completes compensation."""
    reservation = PartnerReservation.objects.select_related("partner", "booking").get(pk=reservation_id)
    connector = connector_for(reservation.partner)
    attempt, result = call_and_close(
        partner=reservation.partner,
        operation=Operation.GET,
        booking=reservation.booking,
        reservation=reservation,
        call=lambda: connector.get(reservation.partner_ref),
    )
    if not result.ok:
        return _retry_or_give_up(reservation, result.error_code or result.outcome, result.retry_after_s)
    if result.reservation is not None:
        observation_apply(
            partner=reservation.partner,
            snapshot=result.reservation,
            source=Source.LOOKUP,
            actor=actor,
            actor_label=actor_label,
            attempt=attempt,
        )
    reservation.refresh_from_db()
    if reservation.status in LIVE_RESERVATION_STATUSES and result.reservation is not None:
        return _retry_or_give_up(reservation, "still_live_after_cancel", None)
    with transaction.atomic():
        booking = lock_booking(reservation.booking_id) if reservation.booking_id else None
        updated = PartnerReservation.objects.filter(pk=reservation.pk, compensated_at__isnull=True).update(
            compensated_at=timezone.now()
        )
        if booking is not None and updated:
            record_event(
                booking,
                "partner.compensation.verified",
                actor=actor,
                actor_label=actor_label,
                summary=compensation_summary(reservation, "verified"),
                data=compensation_data(reservation),
            )
            reconcile_booking(booking, actor=actor, actor_label=actor_label)
        elif updated:
            orphan_case_cancel_verified(reservation, actor=actor, actor_label=actor_label)
    return FollowUp()


def _retry_or_give_up(reservation: PartnerReservation, error: str, retry_after_s: float | None) -> FollowUp:
    # Every failed cancel or verification since we decided to compensate counts as a try, so a
    # partner that keeps failing the verifying GET cannot keep us trying for ever either.
    tries = (
        PartnerAttempt.objects.filter(
            reservation=reservation,
            started_at__gte=reservation.compensation_requested_at or reservation.first_seen_at,
        )
        .filter(Q(operation=Operation.CANCEL) | (Q(operation=Operation.GET) & ~Q(outcome=Outcome.OK)))
        .count()
    )
    if tries < settings.PARTNER_COMPENSATION_MAX_TRIES:
        return FollowUp(compensate_after_s=backoff.delay_s(tries, retry_after_s=retry_after_s))
    logger.error("compensation failed", extra={"partner_ref": reservation.partner_ref, "error": error})
    if reservation.booking_id is None:
        orphan_case_cancel_failed(reservation, tries=tries, error=error)  # support's from now on
        return FollowUp()
    with transaction.atomic():
        booking = lock_booking(reservation.booking_id)
        detail = f"Could not cancel {reservation.partner_ref} at the partner after {tries} tries: {error}"
        if booking.status == BookingState.NEEDS_ATTENTION:
            record_event(
                booking,
                "partner.compensation.failed",
                actor=Actor.WORKER,
                summary=detail,
                data={"reservation": reservation.partner_ref, "error": error},
            )
        else:
            apply_transition(
                booking,
                "flag_for_attention",
                actor=Actor.WORKER,
                reason="compensation_failed",
                detail=detail,
            )
    return FollowUp()
