"""The sweeper: the database alone says what work is due (invariants 3 and 7).

One sweep selects due rows in batches by index, pushes their `next_check_at` forward in one
statement per batch, and queues their ids in `sweep_bookings` messages; the actor locks each row,
re-checks and acts through the same services as the interactive path (`booking_due_run`).
Every piece of work is also claimed in Redis for a window before it is queued (one pipelined
round trip per batch), so that when workers fall behind, sweeps do not pile copies of the same
work into the queues; a claim lost with Redis is simply made again. Work without a row of its
own to push forward (stale webhooks, owed compensations, settled bookings whose create is still
unresolved, legacy change-listing walks) relies on the claim alone. A sweep never calls a
partner itself, and running it twice in a row queues nothing new. Queries are constant per
batch: one select and one update (plus one each for the side work).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from bookings.states import OPEN_STATES, BookingState
from config.embedded_redis import with_socket_timeouts
from partners import tasks as partner_tasks
from partners.models import (
    Capability,
    InboundEvent,
    InboundState,
    Partner,
    PartnerAttempt,
    PartnerReservation,
)
from partners.services.observations import is_fenced, reconcile_booking

logger = logging.getLogger(__name__)
S = BookingState


@dataclass
class SweepReport:
    started_at: datetime
    dry_run: bool
    due: Counter = field(default_factory=Counter)  # booking state -> count queued
    inbound_requeued: int = 0
    compensations_requeued: int = 0
    confirmed_audited: int = 0
    fenced_terminal: int = 0
    listings: list[str] = field(default_factory=list)
    batches: int = 0

    def as_dict(self) -> dict:
        return {
            "started_at": self.started_at.isoformat(),
            "dry_run": self.dry_run,
            "due_bookings": dict(self.due),
            "due_total": sum(self.due.values()),
            "inbound_requeued": self.inbound_requeued,
            "compensations_requeued": self.compensations_requeued,
            "confirmed_audited": self.confirmed_audited,
            "fenced_terminal": self.fenced_terminal,
            "listings": self.listings,
            "batches": self.batches,
        }


def _due_batches(now: datetime, partner: Partner | None, batch_size: int) -> Iterator[list[tuple]]:
    """Keyset-paginated batches of (id, status, partner code) of open bookings due now."""
    last: tuple[datetime, object] | None = None
    while True:
        rows = Booking.objects.filter(status__in=OPEN_STATES, next_check_at__lte=now)
        if partner is not None:
            rows = rows.filter(partner=partner)
        if last is not None:
            rows = rows.filter(next_check_at__gte=last[0]).exclude(next_check_at=last[0], id__lte=last[1])
        batch = list(
            rows.order_by("next_check_at", "id").values_list(
                "id", "status", "partner__code", "next_check_at", "deadline"
            )[:batch_size]
        )
        if not batch:
            return
        yield batch
        last = (batch[-1][3], batch[-1][0])
        if len(batch) < batch_size:
            return


def sweep(
    *,
    dry_run: bool = False,
    partner: Partner | None = None,
    batch_size: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> SweepReport:
    now = timezone.now()
    report = SweepReport(started_at=now, dry_run=dry_run)
    size = batch_size or settings.RECONCILE_BATCH_SIZE
    recheck_at = now + timedelta(seconds=settings.RECONCILE_SYNC_AGE_S)

    for batch in _due_batches(now, partner, size):
        report.batches += 1
        report.due.update(row[1] for row in batch)
        if not dry_run:
            ids = [row[0] for row in batch]
            with transaction.atomic():
                Booking.objects.filter(id__in=ids, next_check_at__lte=now).update(next_check_at=recheck_at)
                transaction.on_commit(lambda b=batch: _queue_due(b, now))
        if progress:
            progress(len(batch))

    report.inbound_requeued = _requeue_stale_inbound(now, partner, dry_run)
    report.compensations_requeued = _requeue_owed_compensations(now, partner, dry_run)
    report.confirmed_audited = _audit_confirmed(now, partner, dry_run)
    report.fenced_terminal = _resolve_fences_of_settled(now, partner, dry_run)
    report.listings = _walk_listings(partner, dry_run)
    logger.info("sweep finished", extra=report.as_dict())
    return report


def _first_time(keys: list[str], ttl_s: float) -> list[bool]:
    """Claim each key in Redis for `ttl_s` (SET NX EX, one pipeline); True where newly claimed.

    Work that has no row of its own to push forward (stale webhooks, settled fences, listing
    walks) is queued at most once per window: running a sweep twice queues nothing new.
    """
    if not keys:
        return []
    # Under the broker's namespace: the claims belong with the queues they stand for.
    prefix = f"{settings.DRAMATIQ_BROKER['OPTIONS']['namespace']}:reconciliation:queued"
    pipe = _guard_redis().pipeline(transaction=False)
    for key in keys:
        pipe.set(f"{prefix}:{key}", "1", nx=True, px=max(1, int(ttl_s * 1000)))
    return [bool(ok) for ok in pipe.execute()]


@cache
def _guard_redis() -> redis.Redis:
    return redis.Redis.from_url(with_socket_timeouts(settings.REDIS_URL, 5))


def _queue_due(batch: list[tuple], now: datetime) -> None:
    """Queue one sweep message per due booking not already claimed.

    A booking past its deadline is claimed under its own key, so that its expiry is never held
    back behind an earlier sync claim.
    """
    from reconciliation import tasks

    keys = [f"{'expire' if deadline <= now else 'due'}:{booking_id}" for booking_id, *_, deadline in batch]
    claimed = _first_time(keys, settings.RECONCILE_CLAIM_TTL_S)
    tasks.queue_sweep_messages([row for row, first in zip(batch, claimed, strict=True) if first])


def _send_claimed(
    rows: list[tuple], *, key: str, ttl_s: float, send: Callable[[object, str], None], dry_run: bool
) -> int:
    """For side work selected as `(id, partner code)` rows: claim each (`key` formats the id),
    send the newly claimed ones, and return how many were sent (or are due, on a dry run)."""
    if dry_run:
        return len(rows)
    claimed = _first_time([key.format(pk) for pk, _ in rows], ttl_s)
    sent = 0
    for (pk, code), first in zip(rows, claimed, strict=True):
        if first:
            send(pk, code)
            sent += 1
    return sent


def _sync(booking_id: object, code: str) -> None:
    partner_tasks.send_for_partner(partner_tasks.sync_booking, Partner(code=code), str(booking_id))


def _for_partner(rows: QuerySet, partner: Partner | None, field: str = "partner") -> QuerySet:
    return rows if partner is None else rows.filter(**{field: partner})


def _requeue_owed_compensations(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """Compensations decided but never verified (their message lost with Redis, or a worker died)."""
    owed = PartnerReservation.objects.filter(
        compensation_requested_at__lte=now - timedelta(seconds=settings.RECONCILE_SYNC_AGE_S),
        compensated_at__isnull=True,
    ).exclude(booking__status=S.NEEDS_ATTENTION)  # support owns those; no automatic retries
    rows = list(
        _for_partner(owed, partner)
        .order_by("compensation_requested_at", "id")
        .values_list("id", "partner__code")[: settings.RECONCILE_BATCH_SIZE]
    )
    return _send_claimed(
        rows,
        key="compensation:{}",
        ttl_s=settings.RECONCILE_CLAIM_TTL_S,
        send=lambda pk, code: partner_tasks.send_for_partner(
            partner_tasks.compensate_reservation, Partner(code=code), pk
        ),
        dry_run=dry_run,
    )


def _audit_confirmed(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """Confirmed means confirmed (invariant 6): re-read confirmed bookings whose stay is ahead of
    them every RECONCILE_AUDIT_AGE_S, in case the news of a cancellation at the partner was lost
    (a webhook the partner gave up on). The sync sets `last_synced_at`."""
    stale = now - timedelta(seconds=settings.RECONCILE_AUDIT_AGE_S)
    audit = Booking.objects.filter(status=S.CONFIRMED, start_date__gte=now.date()).filter(
        Q(last_synced_at__isnull=True) | Q(last_synced_at__lt=stale)
    )
    rows = list(
        _for_partner(audit, partner)
        .order_by(F("last_synced_at").asc(nulls_first=True), "id")
        .values_list("id", "partner__code")[: settings.RECONCILE_AUDIT_BATCH]
    )
    return _send_claimed(
        rows, key="audit:{}", ttl_s=settings.RECONCILE_AUDIT_AGE_S, send=_sync, dry_run=dry_run
    )


def _requeue_stale_inbound(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    stale = InboundEvent.objects.filter(
        state=InboundState.RECEIVED,
        received_at__lte=now - timedelta(seconds=settings.RECONCILE_INBOUND_STALE_S),
    )
    rows = list(
        _for_partner(stale, partner)
        .order_by("received_at", "id")
        .values_list("id", "partner__code")[: settings.RECONCILE_BATCH_SIZE]
    )
    return _send_claimed(
        rows,
        key="inbound:{}",
        ttl_s=settings.RECONCILE_INBOUND_STALE_S,
        send=lambda pk, _code: partner_tasks.process_inbound_event.send(pk),
        dry_run=dry_run,
    )


def _resolve_fences_of_settled(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """A booking that left the open states with an unresolved create (expired while unknown)
    still owes a lookup: the partner may hold a reservation that must be cancelled."""
    fences = (
        PartnerAttempt.objects.fencing()
        .filter(started_at__lte=now - timedelta(seconds=settings.RECONCILE_SYNC_AGE_S))
        .exclude(booking__status__in=OPEN_STATES)
        .filter(booking__isnull=False)
    )
    rows = list(
        _for_partner(fences, partner)
        .order_by("booking_id")
        .values_list("booking_id", "booking__partner__code")
        .distinct()[: settings.RECONCILE_BATCH_SIZE]
    )
    return _send_claimed(
        rows, key="fence:{}", ttl_s=settings.RECONCILE_SYNC_AGE_S, send=_sync, dry_run=dry_run
    )


def _walk_listings(partner: Partner | None, dry_run: bool) -> list[str]:
    partners = Partner.objects.filter(enabled=True)
    if partner is not None:
        partners = partners.filter(pk=partner.pk)
    walkers = [candidate for candidate in partners if candidate.has(Capability.CHANGE_LISTING)]
    if dry_run:
        return [candidate.code for candidate in walkers]
    claimed = _first_time([f"listing:{c.code}" for c in walkers], settings.RECONCILE_LISTING_MIN_GAP_S)
    codes = []
    for candidate, first in zip(walkers, claimed, strict=True):
        if first:
            partner_tasks.send_for_partner(partner_tasks.walk_change_listing, candidate, candidate.pk)
            codes.append(candidate.code)
    return codes


def booking_due_run(booking_id) -> None:
    """The per-booking step of a sweep: lock, re-check, act through the usual services."""
    with transaction.atomic():
        booking = lock_booking(booking_id)
        if booking.status not in OPEN_STATES:
            return
        now = timezone.now()
        expired = booking.deadline <= now and booking.status != S.CANCEL_REQUESTED
        if expired:
            fenced = is_fenced(booking)
            apply_transition(
                booking,
                "expire",
                actor=Actor.SWEEPER,
                summary="No confirmation by the deadline: expired"
                + (" (outcome of the last call still being resolved)" if fenced else ""),
                data={"deadline": booking.deadline.isoformat()},
            )
            reconcile_booking(booking, actor=Actor.SWEEPER)  # cancels whatever the partner holds
            if fenced:
                transaction.on_commit(
                    lambda: partner_tasks.send_for_booking(partner_tasks.sync_booking, booking_id)
                )
            return
        status = booking.status
    if status == S.REQUESTED:
        partner_tasks.send_for_booking(partner_tasks.submit_booking, booking_id)
    elif status == S.CANCEL_REQUESTED:
        partner_tasks.send_for_booking(partner_tasks.cancel_booking, booking_id)
        partner_tasks.send_for_booking(partner_tasks.sync_booking, booking_id)
    else:
        partner_tasks.send_for_booking(partner_tasks.sync_booking, booking_id)
