"""Cancelling reservations at the partner: customer cancellations, duplicates and orphans.

A compensation is a cancel call followed by a verifying lookup, each step on the timeline; a
compensation that keeps failing sends the booking to needs_attention (invariant 5), or, for a
duplicate of a booking that keeps its own reservation, flags the stray's own case for support.

Its tries are one budget, PARTNER_COMPENSATION_MAX_TRIES, however many copies of its message
are alive (the chain of follow-ups, the sweeper's re-sends, a redelivery after a worker died):
each cancel takes a try before it is made, counted and recorded under the reservation's lock,
so no copy can cancel past the budget and no kill after the call can lose the count; and
spaced (`backoff.spacing_s`), so that copies cannot spend it within a short bad spell either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max
from django.utils import timezone
from django_fsm import can_proceed

from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState
from bookings.timeline import record_event
from config.logging import log_context
from partners import decisions
from partners.connectors import connector_for
from partners.connectors.http import longest_call_s
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
from partners.services.calls import attempt_open, call_and_close, call_opened_and_close
from partners.services.observations import is_fenced, observation_apply, reconcile_booking
from partners.services.orphans import orphan_case_cancel_failed, orphan_case_cancel_verified
from partners.services.sync import lost_snapshot
from partners.timeline import compensation_data, compensation_summary

logger = logging.getLogger(__name__)

FAILED = "partner.compensation.failed"


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
        if reservation.compensated_at is not None or reservation.compensation_requested_at is None:
            return FollowUp()  # verified, or withdrawn (an orphan linked to its booking)
        connector = connector_for(reservation.partner)
        if reservation.status in LIVE_RESERVATION_STATUSES:
            attempt = _cancel_attempt_open(reservation)
            if attempt is None:  # withdrawn since this copy read it: nothing to cancel
                return FollowUp()
            if isinstance(attempt, Tries):  # the budget is spent: its last try decides
                return _when_spent(reservation, attempt, actor=actor, actor_label=actor_label)
            if isinstance(attempt, float):  # the last try was too recent: this copy comes back
                return FollowUp(compensate_after_s=attempt)
            result = call_opened_and_close(attempt, lambda: connector.cancel(reservation.partner_ref))
            if result.ok and result.reservation is not None:
                observation_apply(
                    partner=reservation.partner,
                    snapshot=result.reservation,
                    source=Source.RESPONSE,
                    actor=actor,
                    actor_label=actor_label,
                    attempt=attempt,
                )
            elif result.outcome != Outcome.PERMANENT and not _spent(reservation):
                return _retry_or_give_up(
                    reservation, result.error_code or result.outcome, result.retry_after_s
                )
            # Else the last try's cancel may have been made (a timeout, a 5xx after the partner
            # committed it): the verifying read says so before support is handed the booking.
        return _verify(reservation_id, actor=actor, actor_label=actor_label)


def _when_spent(
    reservation: PartnerReservation, tries: Tries, *, actor: Actor | str, actor_label: str
) -> FollowUp:
    """A copy of the message that finds the budget spent by the series' last cancel. That cancel
    may be another copy's call still out (support's cancel driven again while an older copy runs):
    this copy comes back once that call must have ended (`longest_call_s`), whatever its answer.
    Otherwise it reads the partner as the copy that made the last try does after it, whatever
    that try's answer (made, perhaps made, or refused by a partner that had already cancelled
    it): only a reservation still live, or a read that fails past its budget, hands support the
    booking (`_retry_or_give_up`; once while support has it)."""
    last = (
        PartnerAttempt.objects.filter(
            reservation=reservation,
            operation=Operation.CANCEL,
            started_at__gte=reservation.compensation_requested_at or reservation.first_seen_at,
        )
        .order_by("-started_at", "-id")
        .values_list("outcome", "started_at")
        .first()
    )
    if last is not None and last[0] == Outcome.IN_FLIGHT:
        wait = longest_call_s(reservation.partner) - (timezone.now() - last[1]).total_seconds()
        if wait > 0:
            return FollowUp(compensate_after_s=wait)
    return _verify(reservation.pk, actor=actor, actor_label=actor_label)


def _spent(reservation: PartnerReservation) -> bool:
    return _tries(reservation).count >= settings.PARTNER_COMPENSATION_MAX_TRIES


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
    not_found = ""
    if result.reservation is not None:
        observation_apply(
            partner=reservation.partner,
            snapshot=result.reservation,
            source=Source.LOOKUP,
            actor=actor,
            actor_label=actor_label,
            attempt=attempt,
        )
    else:
        # A 404 after our cancel: the partner holds nothing, which completes the compensation
        # as "not live" does. What we hold of it says so too, through the one door: left as it
        # was (`confirmed`), an orphan closed this way read "verified confirmed" for ever.
        not_found = _not_found(reservation)
        if reservation.status in LIVE_RESERVATION_STATUSES:
            observation_apply(
                partner=reservation.partner,
                snapshot=lost_snapshot(reservation),
                source=Source.LOOKUP,
                actor=actor,
                actor_label=actor_label,
                booking_id=reservation.booking_id,
                attempt=attempt,
            )
    reservation.refresh_from_db()
    if reservation.status in LIVE_RESERVATION_STATUSES and result.reservation is not None:
        return _retry_or_give_up(reservation, "still_live_after_cancel", None)
    with transaction.atomic():
        booking = lock_booking(reservation.booking_id) if reservation.booking_id else None
        updated = PartnerReservation.objects.filter(
            pk=reservation.pk, compensated_at__isnull=True, compensation_requested_at__isnull=False
        ).update(compensated_at=timezone.now())
        if booking is not None and updated:
            record_event(
                booking,
                "partner.compensation.verified",
                actor=actor,
                actor_label=actor_label,
                summary=compensation_summary(reservation, "verified", not_found=not_found),
                data=compensation_data(reservation),
            )
            reconcile_booking(booking, actor=actor, actor_label=actor_label)
        if updated:  # an orphan's case, or a stray duplicate's support had: closed by it
            orphan_case_cancel_verified(
                reservation, actor=actor, actor_label=actor_label, not_found=not_found
            )
    return FollowUp()


def _not_found(reservation: PartnerReservation) -> str:
    """How the partner said it holds nothing: our verifying read's 404, and our cancel's too when
    the last cancel got one (a reservation it never held, or lost)."""
    cancel = (
        PartnerAttempt.objects.filter(reservation=reservation, operation=Operation.CANCEL)
        .order_by("-started_at", "-id")
        .values_list("http_status", flat=True)
        .first()
    )
    return "404 to our cancel and to the read that verified it" if cancel == 404 else "404 to our read"


@dataclass(frozen=True)
class Tries:
    count: int
    last_started_at: datetime | None


def _tries(reservation: PartnerReservation) -> Tries:
    """The compensation's tries so far. While the reservation is live, every cancel since we
    decided to compensate (made, in flight or cut off by a kill): the status sync's own reads of
    it that fail meanwhile (a partner's spell of 401s) must not spend them, as they did in chaos
    run b7c881 (six failed sync reads in ten seconds, one cancel made). Once we no longer hold it
    as live, nothing is left to cancel, only the verifying read: its budget is its own, the reads
    that did not answer since the last cancel, so a partner that keeps failing the GET cannot keep
    us trying for ever, and a cancel that succeeded on its last try is still verified (chaos run
    6a3d09: the fifth cancel was answered "cancelled", one verifying GET got a 500, and the
    booking, cancelled at both ends, went to support as a failed compensation)."""
    attempts = PartnerAttempt.objects.filter(
        reservation=reservation,
        started_at__gte=reservation.compensation_requested_at or reservation.first_seen_at,
    )
    cancels = attempts.filter(operation=Operation.CANCEL)
    if reservation.status in LIVE_RESERVATION_STATUSES:
        tried = cancels.aggregate(count=Count("pk"), last=Max("started_at"))
        return Tries(tried["count"], tried["last"])
    last_cancel = cancels.aggregate(last=Max("started_at"))["last"]
    reads = attempts.filter(operation=Operation.GET).exclude(outcome=Outcome.OK)
    if last_cancel is not None:
        reads = reads.filter(started_at__gte=last_cancel)
    tried = reads.aggregate(count=Count("pk"), last=Max("started_at"))
    return Tries(tried["count"], tried["last"])


def _cancel_attempt_open(reservation: PartnerReservation) -> PartnerAttempt | float | Tries | None:
    """Take one try of the budget for a cancel: the attempt is opened and committed under the
    reservation's lock, so two copies of the message cannot both take the last try. The tries
    when the budget is spent; the seconds left to wait when the last try was more recent than
    the series' spacing (`backoff.spacing_s`): however many copies of the message are alive,
    the tries stay spread over the minutes a partner's bad spell may last. None when the cancel
    is no longer decided: an orphan's, withdrawn as it was linked to its booking under the same
    lock before any attempt (`observations.orphan_cancel_withdrawn`)."""
    with transaction.atomic():
        reservation.compensation_requested_at = (  # as it is now: support may have decided again
            PartnerReservation.objects.select_for_update(no_key=True)
            .values_list("compensation_requested_at", flat=True)
            .get(pk=reservation.pk)
        )
        if reservation.compensation_requested_at is None:
            return None
        tries = _tries(reservation)
        if tries.count >= settings.PARTNER_COMPENSATION_MAX_TRIES:
            return tries
        if tries.last_started_at is not None:
            since = (timezone.now() - tries.last_started_at).total_seconds()
            wait = backoff.spacing_s(tries.count) - since
            if wait > 0:
                return wait
        return attempt_open(
            partner=reservation.partner,
            operation=Operation.CANCEL,
            booking=reservation.booking,
            reservation=reservation,
        )


def _retry_or_give_up(reservation: PartnerReservation, error: str, retry_after_s: float | None) -> FollowUp:
    tries = _tries(reservation).count
    if tries < settings.PARTNER_COMPENSATION_MAX_TRIES:
        delay = max(backoff.delay_s(tries, retry_after_s=retry_after_s), backoff.spacing_s(tries))
        return FollowUp(compensate_after_s=delay)
    return _give_up(reservation, tries, error)


def _give_up(reservation: PartnerReservation, tries: int, error: str) -> FollowUp:
    """Hand the compensation to support: once while support has the booking (a later copy of
    its message finds it told), again if the booking has left needs_attention since. A stray
    duplicate of a booking that keeps its own reservation is support's case alone
    (`decisions.stray_left_to_a_case`): the booking goes on as it is."""
    if reservation.booking_id is None:
        orphan_case_cancel_failed(reservation, tries=tries, error=error)  # support's from now on
        return FollowUp()
    with transaction.atomic():
        booking = lock_booking(reservation.booking_id)
        detail = f"Could not cancel {reservation.partner_ref} at the partner after {tries} tries: {error}"
        data = {"reservation": reservation.partner_ref, "tries": tries, "error": error}
        if decisions.stray_left_to_a_case(booking.status, reservation.role):
            case = orphan_case_cancel_failed(reservation, tries=tries, error=error)
            if case is not None:  # flagged now (not told before, nor closed by support)
                logger.error("compensation failed", extra={**data, "orphan_case": case.pk})
                record_event(
                    booking,
                    FAILED,
                    actor=Actor.WORKER,
                    summary=f"{detail}; left to support as orphan case #{case.pk}, "
                    f"{booking.reference} stays {booking.status}",
                    data={**data, "orphan_case": case.pk},
                )
            return FollowUp()
        if booking.status == BookingState.NEEDS_ATTENTION and _told(booking, reservation):
            return FollowUp()
        logger.error("compensation failed", extra={"partner_ref": reservation.partner_ref, "error": error})
        if can_proceed(booking.flag_for_attention):
            apply_transition(
                booking,
                "flag_for_attention",
                actor=Actor.WORKER,
                data={"reason": "compensation_failed", **data},
                reason="compensation_failed",
                detail=detail,
            )
        else:  # already with support (or not yet anyone's to hand over): on its timeline
            record_event(booking, FAILED, actor=Actor.WORKER, summary=detail, data=data)
    return FollowUp()


def _told(booking: Booking, reservation: PartnerReservation) -> bool:
    """The booking's timeline says this compensation failed since it was (last) decided."""
    return booking.events.filter(
        kind__in=(FAILED, f"booking.{BookingState.NEEDS_ATTENTION}"),
        occurred_at__gte=reservation.compensation_requested_at or reservation.first_seen_at,
        data__reservation=reservation.partner_ref,
    ).exists()
