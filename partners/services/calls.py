"""Outbound partner calls: attempt recorded before, guarded while, outcome recorded after.

No call may happen inside a database transaction (invariant 2): the attempt row is committed
first, so a worker killed mid-call leaves an in-flight attempt that fences the booking.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from bookings.models import Booking
from bookings.timeline import record_event
from config.logging import log_context
from partners import guard
from partners.connectors.base import CallResult
from partners.models import Outcome, Partner, PartnerAttempt, PartnerReservation
from partners.services.skew import record_skew_sample, sample_from_call
from partners.timeline import attempt_data, attempt_summary

logger = logging.getLogger(__name__)


class PartnerCallInTransaction(RuntimeError):
    """Raised when code tries to call a partner while holding a database transaction."""


def attempt_open(
    *,
    partner: Partner,
    operation: str,
    booking: Booking | None = None,
    reservation: PartnerReservation | None = None,
    idempotency_key: str = "",
) -> PartnerAttempt:
    return PartnerAttempt.objects.create(
        partner=partner,
        booking=booking,
        reservation=reservation,
        operation=operation,
        idempotency_key=idempotency_key,
    )


def attempt_close(
    attempt: PartnerAttempt, result: CallResult, *, outcome: str | None = None
) -> PartnerAttempt:
    """Record how a call ended (`outcome` overrides the result's, e.g. a 2xx we cannot use)."""
    attempt.finished_at = timezone.now()
    attempt.outcome = outcome or result.outcome
    attempt.http_status = result.http_status
    attempt.latency_ms = result.latency_ms
    attempt.error = (result.error or result.error_code)[:2000]
    attempt.refusal = result.refusal
    attempt.partner_time = result.partner_time
    fields = ["finished_at", "outcome", "http_status", "latency_ms", "error", "refusal", "partner_time"]
    if attempt.outcome != Outcome.AMBIGUOUS and attempt.resolved_at is None:
        # Anything but an ambiguous outcome tells us what happened: no fence remains.
        attempt.resolved_at = attempt.finished_at
        attempt.resolution = attempt.outcome
        fields += ["resolved_at", "resolution"]
    attempt.save(update_fields=fields)
    return attempt


@contextmanager
def _call_context(attempt: PartnerAttempt):
    booking_ref = attempt.booking.reference if attempt.booking_id else None
    partner_key = attempt.idempotency_key or (attempt.booking.partner_key if attempt.booking_id else None)
    with log_context(
        booking=booking_ref,
        partner_key=partner_key,
        partner=attempt.partner.code,
        request_id=str(attempt.request_id),
    ):
        yield


def attempt_call(attempt: PartnerAttempt, call: Callable[[], CallResult]) -> CallResult:
    """Make the call of an open (committed) attempt through the partner's guard.

    The caller records the outcome with `attempt_close` in the same transaction as its effect,
    so that no crash can leave a finished attempt whose effect was never recorded.
    """
    if connection.in_atomic_block:
        raise PartnerCallInTransaction(
            f"{attempt.operation} call to {attempt.partner.code} inside a transaction"
        )
    with _call_context(attempt):
        # The partner's Date was written between these two moments: they bound its clock.
        sent_at = timezone.now()
        try:
            result = guard.guarded_call(attempt.partner, call, operation=attempt.operation)
        except guard.GuardUnavailable as exc:
            # Nothing left: the attempt is closed as not sent (left open, a create would fence
            # its booking as if it might have reached the partner).
            logger.warning(
                "partner call not made: its guard's Redis did not answer", extra={"error": str(exc)}
            )
            result = guard.not_sent(guard.GUARD_UNAVAILABLE, retry_after_s=settings.PARTNER_RETRY_MIN_S)
        received_at = timezone.now()
        # A Date no clock would write (1970) is no sample: nothing here may raise once the call
        # was made, or its answer would be lost with the attempt left open.
        sample = (
            None
            if result.partner_time is None
            else sample_from_call(result.partner_time, sent_at=sent_at, received_at=received_at)
        )
        if sample is not None:
            record_skew_sample(attempt.partner, sample)
        logger.info(
            "partner call",
            extra={
                "operation": attempt.operation,
                "outcome": result.outcome,
                "http_status": result.http_status,
                "latency_ms": result.latency_ms,
                "error": result.error_code or result.error[:200],
            },
        )
    return result


def call_and_close(
    *,
    partner: Partner,
    operation: str,
    call: Callable[[], CallResult],
    booking: Booking | None = None,
    reservation: PartnerReservation | None = None,
    idempotency_key: str = "",
    actor: str = "worker",
) -> tuple[PartnerAttempt, CallResult]:
    """For reads and idempotent calls: open, call, then close the attempt and (for a
    booking's call) put it on the booking's timeline, both in one short transaction."""
    attempt = attempt_open(
        partner=partner,
        operation=operation,
        booking=booking,
        reservation=reservation,
        idempotency_key=idempotency_key,
    )
    return attempt, call_opened_and_close(attempt, call, actor=actor)


def call_opened_and_close(
    attempt: PartnerAttempt, call: Callable[[], CallResult], *, actor: str = "worker"
) -> CallResult:
    """`call_and_close` for an attempt its caller opened (and committed) itself, e.g. under a
    lock that decided whether the call may be made at all."""
    result = attempt_call(attempt, call)
    with transaction.atomic():
        attempt_close(attempt, result)
        if attempt.booking_id is not None:
            record_attempt(attempt.booking, attempt, result, actor=actor)
    return result


def record_attempt(booking: Booking, attempt: PartnerAttempt, result: CallResult, *, actor: str) -> None:
    """The attempt's row on the booking's timeline (invariant 8), with the partner's time."""
    record_event(
        booking,
        f"partner.attempt.{attempt.outcome}",
        actor=actor,
        summary=attempt_summary(attempt),
        partner_time=result.partner_time,
        skew_ms=attempt.partner.clock_skew_ms,
        data={**attempt_data(attempt), "retry_after_s": result.retry_after_s},
    )
