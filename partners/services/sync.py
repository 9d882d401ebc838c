"""Status sync: find out what the partner holds for a booking and reconcile (invariants 4-6).

After an ambiguous create the booking is fenced; the way to learn the truth depends on the
partner's capabilities (`decisions.ambiguity_strategy`), never on its code:

- lookup by client reference: one call answers completely (an empty answer proves nothing is held);
- idempotent replay: the same create with the same key returns what the first one made (or makes
  it now, once); it never proves "nothing";
- change listing: complete once the listing has settled past the fenced call's time window;
- none of these: support decides (needs_attention).

Only a complete answer lifts the fence; only "complete and empty" lets the booking be submitted
again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from bookings.states import CREATE_UNANSWERED, OPEN_STATES, TERMINAL_STATES, BookingState
from bookings.timeline import record_event
from config.logging import log_context
from partners import decisions
from partners.connectors import connector_for
from partners.connectors.base import CallResult, ReservationSnapshot
from partners.connectors.http import connect_phase_s, longest_call_s
from partners.messages import FollowUp
from partners.models import (
    LIVE_RESERVATION_STATUSES,
    Capability,
    Operation,
    Outcome,
    PartnerAttempt,
    PartnerReservation,
    ReservationStatus,
    Source,
)
from partners.services import backoff
from partners.services.calls import (
    attempt_call,
    attempt_close,
    attempt_open,
    call_and_close,
    record_attempt,
)
from partners.services.observations import is_fenced, observation_apply, reconcile_booking
from partners.services.submission import create_request, poll_delay_s

logger = logging.getLogger(__name__)
Strategy = decisions.Strategy

# Listing times are read with this much slack on each side of the fenced call.
LISTING_MARGIN = timedelta(minutes=5)


@dataclass
class Findings:
    """What one sync learned."""

    snapshots: list[tuple[ReservationSnapshot, str, PartnerAttempt]] = field(default_factory=list)
    # True when the search answered, for certain, everything the partner holds for the booking.
    complete: bool = False
    failed: CallResult | None = None
    strategy: str = ""
    searched: bool = False
    come_back_in_s: float | None = None  # not settled yet: look again then
    # The fences this search answers for: only those existing when it began (a create that
    # starts meanwhile is not covered by what we read before it).
    fence_ids: list[int] = field(default_factory=list)
    # Known reservations the partner answered 404 for: lost once a second read agrees.
    not_found: list[tuple[PartnerReservation, PartnerAttempt]] = field(default_factory=list)
    # Those not proven lost yet: their reservation ids, and when to read them again.
    suspects: list[str] = field(default_factory=list)
    read_again_in_s: float | None = None

    @property
    def holds_nothing(self) -> bool:
        """Proven only by a complete search that found nothing."""
        return self.complete and not self.snapshots


def in_flight_budget(attempt: PartnerAttempt) -> timedelta:
    """How long a worker may still be in the middle of this call (`longest_call_s`: every connect
    attempt, the read, the body's own deadline), plus a grace. After that an in-flight attempt is
    an orphaned one."""
    return timedelta(seconds=longest_call_s(attempt.partner) + settings.PARTNER_IN_FLIGHT_GRACE_S)


def _in_flight_remaining_s(attempt: PartnerAttempt, now: datetime) -> float:
    if attempt.outcome != Outcome.IN_FLIGHT:
        return 0.0
    return (attempt.started_at + in_flight_budget(attempt) - now).total_seconds()


def sent_by(attempt: PartnerAttempt) -> datetime:
    """The latest moment a call's request can have left us: its connect phase may retry for
    seconds after `started_at` (`connect_phase_s`), and nothing leaves once the attempt was closed.

    Our client aborts a connection it gives up on (`partners/connectors/http.py`: the socket is
    reset, not closed, so the kernel never re-sends the request after a partition heals)."""
    bound = attempt.started_at + timedelta(seconds=connect_phase_s(attempt.partner))
    return min(attempt.finished_at, bound) if attempt.finished_at is not None else bound


def landed_by(attempt: PartnerAttempt) -> datetime:
    """When a create we stopped waiting for can no longer reach the partner: a read timeout after
    it left us (`sent_by`), plus the partner's own processing, which the grace covers. A search
    that finds nothing before then proves nothing yet."""
    return sent_by(attempt) + timedelta(
        seconds=attempt.partner.read_timeout_s + settings.PARTNER_IN_FLIGHT_GRACE_S
    )


def _not_final_before(findings: Findings, moment: datetime) -> None:
    """An empty answer read before `moment` is not final: read again then."""
    now = timezone.now()
    if now < moment:
        findings.complete = False
        findings.come_back_in_s = max(findings.come_back_in_s or 0, (moment - now).total_seconds())


def _lookup(booking: Booking, fences: list[PartnerAttempt], findings: Findings) -> None:
    connector = connector_for(booking.partner)
    attempt, result = call_and_close(
        partner=booking.partner,
        operation=Operation.LOOKUP,
        booking=booking,
        call=lambda: connector.lookup(booking.reference),
    )
    if not result.ok:
        findings.failed = result
        return
    findings.snapshots += [(s, Source.LOOKUP, attempt) for s in result.reservations]
    findings.complete = True
    if not result.reservations and fences:
        _not_final_before(findings, max(landed_by(f) for f in fences))


def _replay(booking: Booking, findings: Findings) -> None:
    """The retry of invariant 4 for partners that honour keys: same key, same body."""
    partner = booking.partner
    connector = connector_for(partner)
    attempt = attempt_open(
        partner=partner, operation=Operation.CREATE, booking=booking, idempotency_key=booking.partner_key
    )
    request = create_request(booking)
    result = attempt_call(attempt, lambda: connector.create(request, idempotency_key=booking.partner_key))
    usable = result.outcome in (Outcome.OK, Outcome.REJECTED) and result.reservation is not None
    with transaction.atomic():
        attempt_close(attempt, result, outcome=None if usable or not result.ok else Outcome.AMBIGUOUS)
        record_attempt(booking, attempt, result, actor=Actor.WORKER)
    if not usable:
        findings.failed = result
        return
    findings.snapshots.append((result.reservation, Source.RESPONSE, attempt))
    findings.complete = True  # the key's reservation is the only one those creates could make


def _search_listing(booking: Booking, fence: PartnerAttempt | None, findings: Findings) -> None:
    partner = booking.partner
    connector = connector_for(partner)
    started = fence.started_at if fence else booking.created_at
    used_skew_ms = partner.clock_skew_ms
    skew = timedelta(milliseconds=used_skew_ms or 0)
    since = started + skew - LISTING_MARGIN  # the partner writes `modified` by its own clock
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
            return
        ours = [s for s in result.reservations if s.client_reference == booking.reference]
        findings.snapshots += [(s, Source.LISTING, attempt) for s in ours]
        page = result.next_page
    # As `landed_by`, with the listing's own settling time in place of the grace.
    left = sent_by(fence) if fence else started + timedelta(seconds=connect_phase_s(partner))
    settled_at = left + timedelta(seconds=partner.read_timeout_s + settings.PARTNER_LISTING_SETTLE_S)
    findings.complete = True
    _not_final_before(findings, settled_at)
    # The listing's own Date headers refine the skew estimate. If the window we read was placed
    # on a wrong (or no) estimate, it may have missed the entry: read again before concluding.
    partner.refresh_from_db(fields=["clock_skew_ms"])
    measured = partner.clock_skew_ms
    if measured is not None and (
        used_skew_ms is None or abs(measured - used_skew_ms) > LISTING_MARGIN.total_seconds() * 500
    ):
        findings.complete = False
        findings.come_back_in_s = max(findings.come_back_in_s or 0, settings.PARTNER_SYNC_DELAY_S)


def _find_reservations(booking: Booking, fences: list[PartnerAttempt]) -> Findings:
    """What the partner holds for the booking; `fences`: its unresolved creates, oldest first."""
    fence = fences[0] if fences else None
    findings = Findings(strategy=decisions.ambiguity_strategy(booking.partner.capabilities), searched=True)
    if findings.strategy == Strategy.LOOKUP_BY_REFERENCE:
        _lookup(booking, fences, findings)
    elif findings.strategy == Strategy.REPLAY_IDEMPOTENT_CREATE:
        if fence is not None:
            _replay(booking, findings)
    elif findings.strategy == Strategy.SEARCH_CHANGE_LISTING:
        _search_listing(booking, fence, findings)
    return findings


def _refresh_known(booking: Booking, findings: Findings) -> None:
    """GET each live reservation we know of that the search did not answer for: it may have
    settled, been cancelled or changed, or be gone (a 404, or absent from a complete lookup)."""
    connector = connector_for(booking.partner)
    seen = {s.partner_ref for s, _, _ in findings.snapshots}
    for reservation in booking.partner_reservations.filter(status__in=LIVE_RESERVATION_STATUSES):
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
        elif result.ok:
            findings.not_found.append((reservation, attempt))
        else:
            findings.failed = findings.failed or result


def _judge_not_found(booking: Booking, findings: Findings, *, actor: Actor | str, actor_label: str) -> None:
    """A reservation is lost only when a second, separate read a while after the first finds
    nothing either (`decisions.lost_verdict`); then it enters through the one door as `lost` and
    is handled as a cancellation by the partner. Until then it is read again."""
    read_apart = timedelta(seconds=settings.PARTNER_LOST_RECHECK_S)
    for reservation, attempt in findings.not_found:
        earlier = (
            PartnerAttempt.objects.filter(
                reservation=reservation,
                operation=Operation.GET,
                outcome=Outcome.OK,
                http_status=404,
                started_at__lt=attempt.started_at,
            )
            .order_by("-started_at")
            .values_list("started_at", flat=True)
            .first()
        )
        verdict = decisions.lost_verdict(
            not_found_at=attempt.started_at,
            earlier_not_found_at=earlier,
            last_seen_at=reservation.last_observed_at,
            read_apart=read_apart,
        )
        if verdict.lost:
            observation_apply(
                partner=booking.partner,
                snapshot=lost_snapshot(reservation),
                source=Source.LOOKUP,
                actor=actor,
                actor_label=actor_label,
                booking_id=booking.pk,
                attempt=attempt,
            )
        else:
            assert verdict.read_again_in is not None
            findings.suspects.append(reservation.partner_ref)
            wait_s = verdict.read_again_in.total_seconds()
            findings.read_again_in_s = min(wait_s, findings.read_again_in_s or wait_s)


def lost_snapshot(reservation: PartnerReservation) -> ReservationSnapshot:
    """What we conclude of a reservation the partner twice answered 404 for: it holds nothing."""
    return ReservationSnapshot(
        partner_ref=reservation.partner_ref,
        client_reference=reservation.client_reference,
        status=ReservationStatus.LOST,
        reason="not_found",
    )


def booking_sync(booking_id: UUID, *, actor: Actor | str = Actor.WORKER, actor_label: str = "") -> FollowUp:
    """Ask the partner what it holds for a booking and bring the booking in line. Safe to run
    twice, and at any time: it only reads (or replays with the same key) and then goes through
    the one door and `reconcile_booking`."""
    booking = Booking.objects.select_related("partner", "offer").get(pk=booking_id)
    with log_context(booking=booking.reference, partner_key=booking.partner_key):
        fences = list(PartnerAttempt.objects.fencing().filter(booking=booking).order_by("started_at"))
        now = timezone.now()
        waiting = max((_in_flight_remaining_s(a, now) for a in fences), default=0.0)
        if waiting > 0:
            # Its worker may still be in the call and will record the answer itself.
            return FollowUp(sync_after_s=waiting + 0.1)
        in_flight = PartnerAttempt.objects.filter(booking=booking, outcome=Outcome.IN_FLIGHT)
        _mark_abandoned(booking, [a for a in in_flight if _in_flight_remaining_s(a, now) <= 0], actor=actor)
        fence = fences[0] if fences else None
        needs_search = fence is not None or (
            booking.status in CREATE_UNANSWERED and not booking.partner_reservations.exists()
        )
        findings = _find_reservations(booking, fences) if needs_search else Findings()
        findings.fence_ids = [a.pk for a in fences]
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
        _judge_not_found(booking, findings, actor=actor, actor_label=actor_label)
        return _conclude(booking.pk, findings, actor=actor, actor_label=actor_label)


def _mark_abandoned(booking: Booking, attempts: list[PartnerAttempt], *, actor: Actor | str) -> None:
    """In-flight attempts past their budget: their worker died during (or just before) the call.
    Their outcome is unknown, i.e. ambiguous; they keep fencing until this sync answers."""
    if not attempts:
        return
    now = timezone.now()
    with transaction.atomic():
        lock_booking(booking.pk)
        for attempt in attempts:
            updated = PartnerAttempt.objects.filter(pk=attempt.pk, outcome=Outcome.IN_FLIGHT).update(
                outcome=Outcome.AMBIGUOUS,
                finished_at=now,
                error="no outcome recorded: the worker stopped during the call",
            )
            if updated:
                attempt.outcome = Outcome.AMBIGUOUS
                record_event(
                    booking,
                    "partner.attempt.abandoned",
                    actor=actor,
                    summary=f"{attempt.operation} started {attempt.started_at:%H:%M:%S} never recorded an "
                    "outcome (its worker stopped): treated as ambiguous",
                    data={
                        "attempt_id": attempt.pk,
                        "request_id": str(attempt.request_id),
                        "operation": attempt.operation,
                        "idempotency_key": attempt.idempotency_key,
                    },
                )


def _conclude(booking_id: UUID, findings: Findings, *, actor: Actor | str, actor_label: str) -> FollowUp:
    with transaction.atomic():
        booking = lock_booking(booking_id)
        now = timezone.now()
        if findings.failed is None and not findings.suspects:
            # The last time we learned its truth. A failed read taught nothing, and a 404 that no
            # second read has confirmed yet is a question: either way the booking keeps its place
            # at the front of the audit, so that a second read that fails (a 429, say) is asked
            # again at the next sweep instead of a whole audit round later.
            booking.last_synced_at = now
        if findings.searched and findings.complete and findings.failed is None:
            resolution = "partner_holds_nothing" if findings.holds_nothing else f"found_{findings.strategy}"
            PartnerAttempt.objects.fencing().filter(pk__in=findings.fence_ids).update(
                resolved_at=now, resolution=resolution
            )
        record_event(
            booking,
            "sync.failed" if findings.failed else "sync.completed",
            actor=actor,
            actor_label=actor_label,
            summary=_summary(findings),
            data={
                "strategy": findings.strategy,
                "found": [s.partner_ref for s, _, _ in findings.snapshots],
                "not_found": findings.suspects,
                "complete": findings.complete,
                "holds_nothing": findings.holds_nothing,
                "error": _error(findings.failed),
                "refusal": findings.failed.refusal if findings.failed else "",
            },
        )
        if (
            findings.failed is not None
            and findings.failed.refusal
            and _hand_over_refused(booking, actor=actor)
        ):
            booking.save(update_fields=["last_synced_at", "updated_at"])
            return FollowUp()
        follow_up = FollowUp()
        if findings.holds_nothing and booking.status in CREATE_UNANSWERED and not is_fenced(booking):
            # UNKNOWN: the ambiguous create never took effect. SUBMITTING: its worker died before
            # (or during) a call that never reached the partner. Either way: submit again.
            apply_transition(
                booking,
                "requeue_submission" if booking.status == BookingState.UNKNOWN else "release_submission",
                actor=actor,
                actor_label=actor_label,
                summary="The partner provably holds nothing for this booking: submit again",
            )
            follow_up = FollowUp(submit_after_s=0)
        else:
            reconcile_booking(booking, actor=actor, actor_label=actor_label)
            still_fenced, status = is_fenced(booking), booking.status
            owed = status in OPEN_STATES or still_fenced
            # Held by its fence: no create may follow (unanswered), its cancel cannot go ahead
            # (cancelling: what would it cancel?), or nothing else looks (ended). At a partner we
            # cannot ask nothing but support moves such a booking on: else it waits for ever.
            held = (
                status in CREATE_UNANSWERED
                or status in TERMINAL_STATES
                or status == BookingState.CANCEL_REQUESTED
            )
            if still_fenced and findings.strategy == Strategy.ASK_SUPPORT and held:
                apply_transition(
                    booking,
                    "flag_for_attention",
                    actor=actor,
                    actor_label=actor_label,
                    reason="outcome_unknown_no_lookup",
                    detail="The partner offers no lookup, idempotency key or change listing: "
                    "support must ask it what it holds before anything is created again.",
                )
            elif (
                findings.failed is not None
                and owed
                and can_proceed(booking.flag_for_attention)
                and decisions.after_failed_read(
                    findings.failed.outcome, http_status=findings.failed.http_status
                )
                == decisions.NextStep.NEEDS_ATTENTION
            ):
                # The partner refuses this read for good: asking again would only loop.
                apply_transition(
                    booking,
                    "flag_for_attention",
                    actor=actor,
                    actor_label=actor_label,
                    reason=f"partner_{findings.failed.error_code or findings.failed.http_status}",
                    detail=f"The partner refuses to say what it holds: {findings.failed.error[:900]}",
                )
            elif findings.failed is not None and owed:
                # Owed work: read again soon. A confirmed booking's audit simply comes round again.
                follow_up = FollowUp(
                    sync_after_s=backoff.delay_s(2, retry_after_s=findings.failed.retry_after_s)
                )
            elif still_fenced and (status in CREATE_UNANSWERED or status == BookingState.CANCEL_REQUESTED):
                delay = max(findings.come_back_in_s or 0, settings.PARTNER_SYNC_DELAY_S)
                follow_up = FollowUp(sync_after_s=delay)
            elif status == BookingState.PENDING_PARTNER and not booking.partner.has(Capability.WEBHOOKS):
                follow_up = FollowUp(sync_after_s=poll_delay_s(booking, now))
            if findings.read_again_in_s is not None:
                # A 404 proves nothing until a second read agrees: that read is owed, whatever the state.
                delays = (follow_up.sync_after_s, findings.read_again_in_s)
                follow_up = replace(follow_up, sync_after_s=min(d for d in delays if d is not None))
        booking.next_check_at = _next_check(booking, now, follow_up)
        booking.save(update_fields=["last_synced_at", "next_check_at", "updated_at"])
        return follow_up


def _hand_over_refused(booking: Booking, *, actor: Actor | str) -> bool:
    """After PARTNER_REFUSED_MAX_TRIES answers in a row refused at our edge, support takes the
    booking (`partner_data_refused`): reading it again would only loop. True if handed over."""
    last_usable = (
        PartnerAttempt.objects.filter(booking=booking, outcome=Outcome.OK, refusal="")
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    refused = PartnerAttempt.objects.filter(booking=booking).exclude(refusal="")
    if last_usable is not None:
        refused = refused.filter(started_at__gt=last_usable)
    latest = refused.order_by("-started_at").values_list("refusal", flat=True)
    count = latest.count()
    step = decisions.after_repeated_failures(count, max_tries=settings.PARTNER_REFUSED_MAX_TRIES)
    if step != decisions.NextStep.NEEDS_ATTENTION or not can_proceed(booking.flag_for_attention):
        return False
    apply_transition(
        booking,
        "flag_for_attention",
        actor=actor,
        reason=decisions.PARTNER_DATA_REFUSED,
        detail=f"{count} partner answers in a row refused at our edge; the last: {latest.first()}",
    )
    return True


def _next_check(booking: Booking, now: datetime, follow_up: FollowUp) -> datetime | None:
    """When the sweeper should look again if the follow-up message is lost (never later than
    the deadline, so that expiry is not missed)."""
    if booking.status not in OPEN_STATES:
        return booking.next_check_at
    delays = [follow_up.sync_after_s, follow_up.submit_after_s]
    soonest = min((d for d in delays if d is not None), default=settings.RECONCILE_SYNC_AGE_S)
    # Leave the follow-up message time to arrive before the sweeper steps in.
    at = now + timedelta(seconds=soonest) + settings.BOOKING_SUBMIT_GRACE
    if booking.status == BookingState.REQUESTED and booking.next_check_at is not None:
        # Its submission is still owed, and a read does not submit: the check that sends it
        # stays when it was due.
        at = min(at, booking.next_check_at)
    return min(at, max(booking.deadline, now))


def _error(failed: CallResult | None) -> str:
    return (failed.error_code or failed.error[:300]) if failed is not None else ""


# How a read that found the booking's reservations ends (`sync.completed`), and how one that found
# none does: the support timeline folds runs of reads that found nothing new by these words
# (`reconciliation.selectors.timeline`), never one that found nothing at all.
HOLDS_PREFIX = "Partner holds "
HOLDS_NOTHING = "Partner holds nothing for this booking"


def _summary(findings: Findings) -> str:
    if findings.failed is not None:
        code = findings.failed.error_code or ""
        return f"Sync could not reach the partner: {findings.failed.outcome} {code}".strip()
    found = sorted({s.partner_ref for s, _, _ in findings.snapshots})
    if findings.holds_nothing:
        return HOLDS_NOTHING
    if findings.suspects:
        return (
            f"Partner does not know {', '.join(findings.suspects)} (404): read again in "
            f"{findings.read_again_in_s:.0f} s before concluding it is lost"
        )
    if found:
        return f"{HOLDS_PREFIX}{', '.join(found)}"
    if findings.searched and not findings.complete:
        return "Nothing found at the partner yet; the listing has not settled"
    return "Nothing new at the partner"
