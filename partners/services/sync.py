"""Status sync: find out what the partner holds for a booking and reconcile (invariants 4-6).

After an ambiguous create the booking is fenced; the way to learn the truth depends on the
partner's capabilities (`decisions.ambiguity_strategy`), never on its code. Only when the
partner provably holds nothing is the fence lifted and the booking submitted again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState
from bookings.timeline import record_event
from config.logging import log_context
from partners import decisions
from partners.connectors import connector_for
from partners.connectors.base import CallResult, ReservationSnapshot
from partners.models import Operation, Outcome, PartnerAttempt, Source
from partners.services import backoff
from partners.services.calls import (
    attempt_close,
    attempt_open,
    call_and_close,
    perform,
)
from partners.services.observations import observation_apply, reconcile_booking
from partners.services.submission import FollowUp, create_request

logger = logging.getLogger(__name__)
S = BookingState
Strategy = decisions.Strategy


@dataclass
class Findings:
    """What one sync learned. `holds_nothing` is True only when proven."""

    snapshots: list[tuple[ReservationSnapshot, str, PartnerAttempt]]
    holds_nothing: bool = False
    failed: CallResult | None = None
    strategy: str = ""


def _in_flight_may_still_run(attempt: PartnerAttempt) -> bool:
    partner = attempt.partner
    budget = timedelta(seconds=(partner.connect_timeout_s + partner.read_timeout_s) * 2 + 5)
    return attempt.outcome == Outcome.IN_FLIGHT and timezone.now() - attempt.started_at < budget


def _find_reservations(booking: Booking, fence: PartnerAttempt | None) -> Findings:
    partner = booking.partner
    connector = connector_for(partner)
    strategy = decisions.ambiguity_strategy(partner.capabilities)
    findings = Findings(snapshots=[], strategy=strategy)

    if strategy == Strategy.LOOKUP_BY_REFERENCE:
        attempt, result = call_and_close(
            partner=partner,
            operation=Operation.LOOKUP,
            booking=booking,
            call=lambda: connector.lookup(booking.reference),
        )
        if not result.ok:
            findings.failed = result
            return findings
        findings.snapshots += [(s, Source.LOOKUP, attempt) for s in result.reservations]
        findings.holds_nothing = not result.reservations
    elif strategy == Strategy.REPLAY_IDEMPOTENT_CREATE:
        if fence is None:
            return findings  # without a fence there is nothing to replay
        attempt = attempt_open(
            partner=partner,
            operation=Operation.CREATE,
            booking=booking,
            idempotency_key=booking.partner_key,
        )
        request = create_request(booking)
        result = perform(attempt, lambda: connector.create(request, idempotency_key=booking.partner_key))
        attempt_close(attempt, result)
        if result.outcome not in (Outcome.OK, Outcome.REJECTED) or result.reservation is None:
            findings.failed = result
            return findings
        findings.snapshots.append((result.reservation, Source.RESPONSE, attempt))
    elif strategy == Strategy.SEARCH_CHANGE_LISTING:
        since = (fence.started_at if fence else booking.created_at) - timedelta(minutes=5)
        page: int | None = 1
        while page:
            attempt, result = call_and_close(
                partner=partner,
                operation=Operation.LIST,
                booking=booking,
                call=lambda p=page: connector.list_changes(since=since, page=p),
            )
            if not result.ok:
                findings.failed = result
                return findings
            findings.snapshots += [
                (s, Source.LISTING, attempt)
                for s in result.reservations
                if s.client_reference == booking.reference
            ]
            page = result.next_page
        settled_after = (fence.started_at if fence else booking.created_at) + timedelta(
            seconds=partner.connect_timeout_s + partner.read_timeout_s + settings.PARTNER_LISTING_SETTLE_S
        )
        findings.holds_nothing = not findings.snapshots and timezone.now() >= settled_after
    return findings


def _refresh_known(booking: Booking, findings: Findings) -> None:
    """GET each reservation we know of that may still change (pending, or one we are cancelling)."""
    connector = connector_for(booking.partner)
    seen = {s.partner_ref for s, _, _ in findings.snapshots}
    for reservation in booking.partner_reservations.filter(status__in=["pending", "confirmed"]):
        if reservation.partner_ref in seen:
            continue
        attempt, result = call_and_close(
            partner=booking.partner,
            operation=Operation.GET,
            booking=booking,
            reservation=reservation,
            call=lambda ref=reservation.partner_ref: connector.get(ref),
        )
        if result.ok and result.reservation is not None:
            findings.snapshots.append((result.reservation, Source.LOOKUP, attempt))
        elif not result.ok:
            findings.failed = findings.failed or result


def booking_sync(booking_id: UUID, *, actor: Actor | str = Actor.WORKER, actor_label: str = "") -> FollowUp:
    booking = Booking.objects.select_related("partner", "offer").get(pk=booking_id)
    with log_context(booking=booking.reference, partner_key=booking.partner_key):
        fence = PartnerAttempt.objects.fencing().filter(booking=booking).order_by("started_at").first()
        if fence is not None and _in_flight_may_still_run(fence):
            return FollowUp(sync_after_s=settings.PARTNER_SYNC_DELAY_S)  # its worker may still answer
        needs_search = fence is not None or (
            booking.status in (S.SUBMITTING, S.UNKNOWN) and not booking.partner_reservations.exists()
        )
        findings = _find_reservations(booking, fence) if needs_search else Findings(snapshots=[])
        _refresh_known(booking, findings)
        for snapshot, source, attempt in findings.snapshots:
            observation_apply(
                partner=booking.partner,
                snapshot=snapshot,
                source=source,
                actor=actor,
                actor_label=actor_label,
                booking_id=booking.pk,
                attempt=attempt,
            )
        return _conclude(booking.pk, findings, actor=actor, actor_label=actor_label)


def _conclude(booking_id: UUID, findings: Findings, *, actor: Actor | str, actor_label: str) -> FollowUp:
    with transaction.atomic():
        booking = lock_booking(booking_id)
        now = timezone.now()
        booking.last_synced_at = now
        follow_up = FollowUp()
        if findings.holds_nothing:
            PartnerAttempt.objects.fencing().filter(booking=booking).update(
                resolved_at=now, resolution="partner_holds_nothing"
            )
        if findings.failed is not None:
            delay = backoff.delay_s(2, retry_after_s=findings.failed.retry_after_s)
            follow_up = FollowUp(sync_after_s=delay)
            booking.next_check_at = now + timedelta(seconds=delay)
        else:
            booking.next_check_at = _next_check(booking, now)
        booking.save(update_fields=["last_synced_at", "next_check_at", "updated_at"])
        summary = _summary(findings)
        record_event(
            booking,
            "sync.failed" if findings.failed else "sync.completed",
            actor=actor,
            actor_label=actor_label,
            summary=summary,
            data={
                "strategy": findings.strategy,
                "found": [s.partner_ref for s, _, _ in findings.snapshots],
                "holds_nothing": findings.holds_nothing,
                "error": (findings.failed.error_code or findings.failed.error[:300])
                if findings.failed
                else "",
            },
        )
        if findings.holds_nothing and booking.status == S.UNKNOWN:
            apply_transition(
                booking,
                "requeue_submission",
                actor=actor,
                actor_label=actor_label,
                summary="The partner provably holds nothing: submit again",
            )
            follow_up = FollowUp(submit_after_s=0)
        elif findings.holds_nothing and booking.status == S.SUBMITTING:
            # The worker died mid-call and the partner never got it: submit again.
            apply_transition(
                booking,
                "release_submission",
                actor=actor,
                actor_label=actor_label,
                summary="Interrupted submission never reached the partner: submit again",
            )
            follow_up = FollowUp(submit_after_s=0)
        else:
            reconcile_booking(booking, actor=actor, actor_label=actor_label)
        return follow_up


def _next_check(booking: Booking, now) -> object:
    if booking.status in (S.PENDING_PARTNER, S.UNKNOWN, S.CANCEL_REQUESTED, S.SUBMITTING):
        return now + timedelta(seconds=settings.RECONCILE_SYNC_AGE_S)
    return booking.next_check_at


def _summary(findings: Findings) -> str:
    if findings.failed is not None:
        return f"Sync could not reach the partner: {findings.failed.outcome} {findings.failed.error_code or ''}".strip()
    found = sorted({s.partner_ref for s, _, _ in findings.snapshots})
    if findings.holds_nothing:
        return "Partner holds nothing for this booking"
    return f"Partner holds {', '.join(found)}" if found else "Nothing new at the partner"
