"""The sweeper: the database alone says what work is due (invariants 3 and 7).

One sweep takes the due rows in batches, oldest check first: one UPDATE per batch pushes the
batch's `next_check_at` forward and returns its ids, states and whether each deadline has passed,
so a pushed row leaves the due set and the next batch starts where this one ended (no offset, no
select-then-update). On PostgreSQL the batch is picked FOR UPDATE SKIP LOCKED: two concurrent
sweeps split the due rows between them instead of waiting on each other, and a row locked by a
transaction of its own at that instant is left for the next sweep. The ids are then queued in
`sweep_bookings` messages; the actor locks each row, re-checks and acts through the same services
as the interactive path (`booking_due_run`). A dry run changes nothing: it reads the due rows in
batches paginated by id instead.

Every piece of work is also claimed in Redis for a window before it is queued (one Lua call per
batch sets all its claims), so that when workers fall behind, sweeps do not pile copies of the same
work into the queues; a claim lost with Redis is simply made again. The step such a message
queues on the partner's queue (submit, sync, cancel), a payment's run, a payment webhook and a
mail are claimed until a worker takes them up: however far a queue falls behind, sweeps add no
second copy of work that has not started (`config.claims`). The services' own messages for the
same work (queued after commit, and their follow-ups) hold the same claims, so a first message
still waiting when its row comes due gets no copy either: under a backlog that was one copy per
message (QA: 1,033 payment runs queued for 514 payments due; two messages per booking in
`tests/reconciliation/test_claims_after_commit.py` before, one now). A step run inline in a
worker's thread has no message and holds no claim: the first sweep past its row's grace queues
it, as ever. Work without a row of its own to push forward (stale webhooks, owed compensations,
settled bookings whose create is still unresolved, legacy change-listing walks, mail nobody
tried, payments due and their unprocessed webhooks, which the payments app's own run settles)
relies on the claim alone. A sweep never calls a partner itself, and running it twice in a row
queues nothing new. Queries are constant per batch: one UPDATE in its own transaction (one select
on a dry run), plus one each for the side work.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from django_fsm import can_proceed

from bookings import customer_view, notifications
from bookings.models import Actor, Booking, Notification
from bookings.services import apply_transition, lock_booking
from bookings.states import EXPIRABLE, GOING_AHEAD, OPEN_STATES, BookingState
from config import claims as held_claims
from partners import messages
from partners.models import (
    LIVE_RESERVATION_STATUSES,
    Capability,
    InboundEvent,
    InboundState,
    Operation,
    OrphanAutomation,
    OrphanCaseState,
    Partner,
    PartnerAttempt,
    PartnerReservation,
)
from partners.services.observations import is_fenced, reconcile_booking
from payments import messages as payment_messages
from payments import selectors as payment_selectors
from reconciliation import claims
from reconciliation.models import OwedMessage
from reconciliation.services.retention import retention_run

logger = logging.getLogger(__name__)

# The per-booking step of a sweep (reconciliation/tasks.py), on a queue of its own.
SWEEP_BOOKINGS = "sweep_bookings"
SWEEP_QUEUE = "reconciliation"


@dataclass
class SweepReport:
    started_at: datetime
    dry_run: bool
    due: Counter = field(default_factory=Counter)  # booking state -> count queued
    inbound_requeued: int = 0
    refused_pruned: int = 0
    # The retention phase (`retention.retention_run`): bodies cleared, rows deleted.
    webhook_bodies_pruned: int = 0
    payment_bodies_pruned: int = 0
    sessions_cleared: int = 0
    login_logs_pruned: int = 0
    compensations_requeued: int = 0
    confirmed_audited: int = 0
    fenced_terminal: int = 0
    notifications_requeued: int = 0
    notifications_put_back: int = 0
    notifications_given_up: int = 0
    notifications_delivery_unknown: int = 0
    payments_queued: int = 0
    payment_events_requeued: int = 0
    support_messages_sent: int = 0
    listings: list[str] = field(default_factory=list)
    batches: int = 0

    def as_dict(self) -> dict:
        return {
            "started_at": self.started_at.isoformat(),
            "dry_run": self.dry_run,
            "due_bookings": dict(self.due),
            "due_total": sum(self.due.values()),
            "inbound_requeued": self.inbound_requeued,
            "refused_pruned": self.refused_pruned,
            "webhook_bodies_pruned": self.webhook_bodies_pruned,
            "payment_bodies_pruned": self.payment_bodies_pruned,
            "sessions_cleared": self.sessions_cleared,
            "login_logs_pruned": self.login_logs_pruned,
            "compensations_requeued": self.compensations_requeued,
            "confirmed_audited": self.confirmed_audited,
            "fenced_terminal": self.fenced_terminal,
            "notifications_requeued": self.notifications_requeued,
            "notifications_put_back": self.notifications_put_back,
            "notifications_given_up": self.notifications_given_up,
            "notifications_delivery_unknown": self.notifications_delivery_unknown,
            "payments_queued": self.payments_queued,
            "payment_events_requeued": self.payment_events_requeued,
            "support_messages_sent": self.support_messages_sent,
            "listings": self.listings,
            "batches": self.batches,
        }


def _due(now: datetime, partner: Partner | None) -> QuerySet:
    """Open bookings whose check is due at `now` (the partial index `booking_due_open`)."""
    rows = Booking.objects.filter(status__in=OPEN_STATES, next_check_at__lte=now)
    return rows if partner is None else rows.filter(partner=partner)


def _due_batches(now: datetime, partner: Partner | None, batch_size: int) -> Iterator[list[tuple]]:
    """The dry run's batches: (id, status) of the due bookings, keyset-paginated by id.

    By id, a unique key: bookings due at the same instant (as every batch a sweep pushes is) cost
    nothing extra, and no timestamp has to be loaded for the next page.
    """
    rows = _due(now, partner).order_by("id").values_list("id", "status")
    batch = list(rows[:batch_size])
    while batch:
        yield batch
        if len(batch) < batch_size:
            return
        batch = list(rows.filter(id__gt=batch[-1][0])[:batch_size])


def _push_due(now: datetime, recheck_at: datetime, partner: Partner | None, batch_size: int) -> list[tuple]:
    """Push the check of the next `batch_size` due bookings (oldest check first) to `recheck_at`,
    or to its deadline when that comes sooner for a booking the deadline expires, in one
    statement; their (id, status, deadline passed) rows.

    The deadline caps the check: the step queued now may wait behind a partner's backlog, and its
    expiry must not wait with it (a sweep at its deadline queues it on a queue of its own). Run
    inside a transaction (the pick is FOR UPDATE SKIP LOCKED where the database has it). As
    `recheck_at` and a deadline still ahead are after `now`, the pushed rows drop out of the due
    set: calling this again gives the next batch.
    """
    picked = (
        _due(now, partner)
        .order_by("next_check_at")
        .values("id")[:batch_size]
        .select_for_update(skip_locked=True)  # a no-op on SQLite, which has one writer at a time
    )
    pick_sql, pick_params = picked.query.get_compiler(connection=connection).as_sql()
    # PostgreSQL plans `id IN (subquery)` here as a hash join over a sequential scan of the whole
    # table; an array of the picked ids is looked up in the primary key instead.
    match = f"= ANY(ARRAY({pick_sql}))" if connection.vendor == "postgresql" else f"IN ({pick_sql})"
    meta, quote = Booking._meta, connection.ops.quote_name
    column = {
        name: quote(meta.get_field(name).column) for name in ("id", "status", "next_check_at", "deadline")
    }
    timestamp = meta.get_field("next_check_at")
    at_now, at_recheck = (timestamp.get_db_prep_value(t, connection) for t in (now, recheck_at))
    expirable = ", ".join(["%s"] * len(EXPIRABLE))
    deadline = column["deadline"]
    check_by = (
        f"CASE WHEN {column['status']} IN ({expirable}) AND {deadline} > %s AND {deadline} < %s "
        f"THEN {deadline} ELSE %s END"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {quote(meta.db_table)} SET {column['next_check_at']} = {check_by} "
            f"WHERE {column['id']} {match} "
            f"RETURNING {column['id']}, {column['status']}, {deadline} <= %s",
            [*(str(s) for s in sorted(EXPIRABLE)), at_now, at_recheck, at_recheck, *pick_params, at_now],
        )
        rows = cursor.fetchall()
    to_id = meta.pk.to_python  # SQLite returns the id as text
    return [(to_id(pk), status, bool(expired)) for pk, status, expired in rows]


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
    if dry_run:
        for batch in _due_batches(now, partner, size):
            report.batches += 1
            report.due.update(status for _, status in batch)
            if progress:
                progress(len(batch))
    else:
        # Strictly after `now`, even with RECONCILE_SYNC_AGE_S = 0: pushed rows must leave the due set.
        recheck_at = now + max(timedelta(seconds=settings.RECONCILE_SYNC_AGE_S), timedelta(microseconds=1))
        while True:
            with transaction.atomic():
                batch = _push_due(now, recheck_at, partner, size)
                if batch:
                    transaction.on_commit(lambda b=batch: _queue_due(b))
            if not batch:
                break
            report.batches += 1
            report.due.update(status for _, status, _ in batch)
            if progress:
                progress(len(batch))
            if len(batch) < size:
                break

    report.inbound_requeued = _requeue_stale_inbound(now, partner, dry_run)
    retained = retention_run(
        now=now, partner=partner, batch_size=settings.RECONCILE_BATCH_SIZE, dry_run=dry_run
    )
    report.refused_pruned = retained.refused_pruned
    report.webhook_bodies_pruned = retained.webhook_bodies_pruned
    report.payment_bodies_pruned = retained.payment_bodies_pruned
    report.sessions_cleared = retained.sessions_cleared
    report.login_logs_pruned = retained.login_logs_pruned
    report.compensations_requeued = _requeue_owed_compensations(now, partner, dry_run)
    report.confirmed_audited = _audit_confirmed(now, partner, dry_run)
    report.fenced_terminal = _resolve_fences_of_settled(now, partner, dry_run)
    # Abandoned mail first: a row put back is then queued again by this same sweep.
    (
        report.notifications_put_back,
        report.notifications_given_up,
        report.notifications_delivery_unknown,
    ) = _settle_abandoned_notifications(now, partner, dry_run)
    report.notifications_requeued = _requeue_lost_notifications(now, partner, dry_run)
    report.payments_queued, report.payment_events_requeued = _queue_payments(now, partner, dry_run)
    report.support_messages_sent = _send_owed_messages(now, partner, dry_run)
    report.listings = _walk_listings(partner, dry_run)
    logger.info("sweep finished", extra=report.as_dict())
    return report


def _first_time(keys: list[str], ttl_s: float, *, limit: int | None = None) -> list[bool]:
    """Claim each key for a window of `ttl_s` (`reconciliation.claims`); True where newly claimed
    (with `limit`, in order until that many are).

    Work that has no row of its own to push forward (stale webhooks, settled fences, listing
    walks) is queued at most once per window: running a sweep twice queues nothing new.
    """
    return claims.claim_windows(keys, ttl_s, limit=limit)


def _queue_due(batch: list[tuple]) -> None:
    """Queue the due bookings of a batch, as (id, status, deadline passed) rows, that are not
    already claimed (in chunks of RECONCILE_MESSAGE_CHUNK per message).

    A booking past its deadline is claimed under its own key, so that its expiry is never held
    back behind an earlier sync claim.
    """
    keys = [f"{'expire' if expired else 'due'}:{booking_id}" for booking_id, _, expired in batch]
    claimed = _first_time(keys, settings.RECONCILE_CLAIM_TTL_S)
    queue_sweep_messages([row for row, first in zip(batch, claimed, strict=True) if first])


def queue_sweep_messages(batch: list[tuple]) -> None:
    """Due bookings in chunks of RECONCILE_MESSAGE_CHUNK, on the reconciliation queue.

    Not on the partner's queue: the step is database work only (it queues any partner call on
    the partner's queue itself), so an expiry is never stuck behind a slow partner's backlog.
    In chunks: a Redis round trip per due booking would dominate a large sweep.
    """
    ids = [str(booking_id) for booking_id, *_ in batch]
    size = settings.RECONCILE_MESSAGE_CHUNK
    for start in range(0, len(ids), size):
        messages.send(SWEEP_BOOKINGS, ids[start : start + size], queue_name=SWEEP_QUEUE)


def _send_claimed(
    rows: list[tuple],
    *,
    key: Callable[[object], str],
    ttl_s: float,
    send: Callable[[object, str], None],
    dry_run: bool,
    limit: int | None = None,
) -> int:
    """For side work selected as `(id, partner code)` rows: claim each (`key(id)` names it;
    with `limit`, in order until that many are newly claimed), send the newly claimed ones, and
    return how many were sent (or are due, on a dry run)."""
    if dry_run:
        return len(rows) if limit is None else min(len(rows), limit)
    claimed = _first_time([key(pk) for pk, _ in rows], ttl_s, limit=limit)
    sent = 0
    for (pk, code), first in zip(rows, claimed, strict=True):
        if first:
            send(pk, code)
            sent += 1
    return sent


def _send_until_taken_up(
    rows: list[tuple], *, key: Callable[[object], str], send: Callable[[object, dict], None], dry_run: bool
) -> int:
    """For side work selected as `(id, partner code)` rows: send each for which no message waits
    (the claim named `key(id)` rides on every message of that work, the services' and the
    sweeper's, and ends when a worker starts it); how many were sent (or are due, on a dry run)."""
    if dry_run:
        return len(rows)
    return sum(held_claims.send_claimed(key(pk), lambda claim, pk=pk: send(pk, claim)) for pk, _code in rows)


def _sync(booking_id: object, code: str) -> None:
    messages.send_for_partner(messages.SYNC_BOOKING, Partner(code=code), str(booking_id))


def _for_partner(rows: QuerySet, partner: Partner | None, field: str = "partner") -> QuerySet:
    return rows if partner is None else rows.filter(**{field: partner})


def _requeue_owed_compensations(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """Compensations decided but never verified (their message lost with Redis, or a worker died).

    One whose chain of retries is alive is left to it: a copy beside a live chain would spend
    the compensation's tries (one budget for every copy) faster than its backoff intends. A
    chain waits at most PARTNER_RETRY_MAX_S between tries, so a compensation with no try of its
    own for that long plus RECONCILE_SYNC_AGE_S has lost its message.

    Support owns those of a booking in needs_attention, and a live reservation whose case
    automation gave up on: an orphan, or a stray duplicate of a booking that keeps its own. Once
    the partner lets such a one go (we hold it no longer live), it is sent again to be verified,
    which closes its case. A stray whose booking has moved on (cancelling, ended) has its case
    closed and its cancel asked again by then (`observations.take_up_strays`): owed like any."""
    quiet_since = now - timedelta(seconds=settings.PARTNER_RETRY_MAX_S + settings.RECONCILE_SYNC_AGE_S)
    stray_with_support = Q(
        orphan_case__state=OrphanCaseState.OPEN,
        orphan_case__automation=OrphanAutomation.CANCEL_FAILED,
        status__in=LIVE_RESERVATION_STATUSES,
    ) & (Q(booking__isnull=True) | Q(booking__status__in=GOING_AHEAD))
    # The chain's own tries: its cancels while the reservation is live. The status sync reads a
    # live reservation of an open booking every minute or so, and those reads must not pass for
    # a chain alive (a cancelling booking's lost message was never sent again). Once it is no
    # longer live, the chain's tries are its verifying reads, so any read counts.
    recent = PartnerAttempt.objects.filter(reservation=OuterRef("pk"), started_at__gt=quiet_since)
    owed = (
        PartnerReservation.objects.filter(
            compensation_requested_at__lte=now - timedelta(seconds=settings.RECONCILE_SYNC_AGE_S),
            compensated_at__isnull=True,
        )
        .exclude(  # support owns those; no automatic retries
            Q(booking__status=BookingState.NEEDS_ATTENTION) | stray_with_support
        )
        .exclude(Exists(recent.filter(operation=Operation.CANCEL)))
        .exclude(Q(Exists(recent)) & ~Q(status__in=LIVE_RESERVATION_STATUSES))
    )
    rows = list(
        _for_partner(owed, partner)
        .order_by("compensation_requested_at", "id")
        .values_list("id", "partner__code")[: settings.RECONCILE_BATCH_SIZE]
    )
    return _send_claimed(
        rows,
        key="compensation:{}".format,
        ttl_s=settings.RECONCILE_CLAIM_TTL_S,
        send=lambda pk, code: messages.send_for_partner(
            messages.COMPENSATE_RESERVATION, Partner(code=code), pk
        ),
        dry_run=dry_run,
    )


# How many audit candidates are read per read sent: room to pass over the front's reads in flight.
AUDIT_CANDIDATES_PER_READ = 3


def _audit_confirmed(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """Confirmed means confirmed (invariant 6): re-read confirmed bookings whose stay is ahead of
    them every RECONCILE_AUDIT_AGE_S, in case the news of a cancellation at the partner was lost
    (a webhook the partner gave up on), or the partner changed or lost it without a word.

    A queue in the order we last learned each one's truth: its last successful read (the sync
    sets `last_synced_at`; a failed read and a 404 not yet confirmed do not), else its
    confirmation. A new confirmation joins at the back, so every booking is read again within one
    round over all of them (the detection window, docs/design.md); one whose read failed keeps
    its place at the front.
    The reads go to the partner's audit queue (`partners.queues`): on the partner's queue they
    waited behind every submission queued before them, and the round outlasted the window."""
    stale = now - timedelta(seconds=settings.RECONCILE_AUDIT_AGE_S)
    audit = (
        Booking.objects.filter(status=BookingState.CONFIRMED, start_date__gte=now.date())
        .alias(truth_learned_at=Coalesce("last_synced_at", "status_changed_at"))
        .filter(truth_learned_at__lt=stale)
    )
    # More candidates than the batch: those at the front whose read is still on its way (claimed
    # within the last RECONCILE_AUDIT_AGE_S, not answered yet) are passed over, so that every
    # sweep sends a whole batch of new reads and a round takes the time the window says.
    batch = settings.RECONCILE_AUDIT_BATCH
    rows = list(
        _for_partner(audit, partner)
        .order_by("truth_learned_at", "id")
        .values_list("id", "partner__code")[: batch * AUDIT_CANDIDATES_PER_READ]
    )
    return _send_claimed(
        rows,
        key="audit:{}".format,
        ttl_s=settings.RECONCILE_AUDIT_AGE_S,
        send=lambda pk, code: messages.send_audit_sync(pk, Partner(code=code)),
        dry_run=dry_run,
        limit=batch,
    )


def _requeue_stale_inbound(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """Deliveries stored but never processed (their message lost). Only `received` ones: what was
    set aside (invalid content, tries exhausted) is never queued again."""
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
        key=messages.inbound_claim,  # a delivery whose message waits holds it: no copy
        ttl_s=settings.RECONCILE_INBOUND_STALE_S,
        send=lambda pk, _code: messages.send_inbound_event(pk, hold=False),
        dry_run=dry_run,
    )


def _resolve_fences_of_settled(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """A booking that left the open states with an unresolved create (expired while unknown)
    still owes a lookup: the partner may hold a reservation that must be cancelled. Not one in
    needs_attention: the sync handed it there because no lookup can answer (none offered, or
    refused for good), and support owns it."""
    fences = (
        PartnerAttempt.objects.fencing()
        .filter(started_at__lte=now - timedelta(seconds=settings.RECONCILE_SYNC_AGE_S))
        .exclude(booking__status__in=[*OPEN_STATES, BookingState.NEEDS_ATTENTION])
        .filter(booking__isnull=False)
    )
    rows = list(
        _for_partner(fences, partner)
        .order_by("booking_id")
        .values_list("booking_id", "booking__partner__code")
        .distinct()[: settings.RECONCILE_BATCH_SIZE]
    )
    return _send_claimed(
        rows, key="fence:{}".format, ttl_s=settings.RECONCILE_SYNC_AGE_S, send=_sync, dry_run=dry_run
    )


def _requeue_lost_notifications(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """Mail owed to customers that nobody tried for a while: its message was lost with Redis, or
    waits behind a backlog. Claimed until a worker takes the copy up, as a due booking's step
    (invariant 3): however far the notifications queue falls behind, it holds at most one copy
    per notification from the sweeper. With a claim that lapsed after the grace, every sweep
    past it queued one more, and a backlog fed itself (a chaos run under load: 34,439 copies for
    3,246 notifications)."""
    grace = settings.NOTIFICATION_REQUEUE_AFTER_S
    # A mail waiting for its booking's earlier one is not lost: the attempt that ends that one
    # sends it. Only a booking's earliest unfinished mail is queued again; the rest follow it.
    lost = Notification.objects.lost(before=now - timedelta(seconds=grace)).exclude(
        notifications.earlier_unfinished()
    )
    ids = list(
        _for_partner(lost, partner, "booking__partner")
        .order_by("created_at", "id")
        .values_list("id", flat=True)[: settings.RECONCILE_BATCH_SIZE]
    )
    if dry_run:
        return len(ids)
    return sum(
        held_claims.send_claimed(
            notifications.claim_name(notification_id),
            lambda claim, pk=notification_id: notifications.queue(pk, options=claim),
        )
        for notification_id in ids
    )


def _settle_abandoned_notifications(
    now: datetime, partner: Partner | None, dry_run: bool
) -> notifications.AbandonedSettled:
    """Mail whose attempt never finished (its worker died): put back for another try if it had
    handed nothing to the mail server (`failed` once its tries are spent), else delivery
    unknown, never sent again."""
    before = now - timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_S)
    abandoned = _for_partner(Notification.objects.abandoned(before=before), partner, "booking__partner")
    return notifications.abandoned_settle(rows=abandoned, before=before, dry_run=dry_run)


def _queue_payments(now: datetime, partner: Partner | None, dry_run: bool) -> tuple[int, int]:
    """The payments app's own due work: payments not at rest whose check is due (a run lost with
    Redis, a hold to decide on before it lapses) and webhook deliveries never processed; the
    payment's run decides what, if anything, to ask the provider. Each is claimed until a worker
    takes its copy up, as a due booking's step is: nothing moves either on before a worker starts
    it, so with a window a backlog on the payments queue got one more copy per window (chaos runs:
    236 messages, 44 deliveries a sweep; later 3,278 payment runs queued for about 1,100
    payments, each copy a claim that locks the booking and the payment to find nothing to do)."""
    due = payment_selectors.due_payments(now=now, partner=partner, limit=settings.RECONCILE_BATCH_SIZE)
    runs = _send_until_taken_up(
        due,
        key=payment_messages.run_claim,
        send=lambda booking_id, claim: payment_messages.send_run(booking_id, options=claim),
        dry_run=dry_run,
    )
    stale = payment_selectors.stale_events(
        before=now - timedelta(seconds=settings.RECONCILE_INBOUND_STALE_S),
        partner=partner,
        limit=settings.RECONCILE_BATCH_SIZE,
    )
    events = _send_until_taken_up(
        stale,
        key=payment_messages.event_claim,
        send=lambda pk, claim: payment_messages.send_event(pk, options=claim),
        dry_run=dry_run,
    )
    return runs, events


def _send_owed_messages(now: datetime, partner: Partner | None, dry_run: bool) -> int:
    """The messages support actions owe (a sync, a submission) that our Redis did not take when
    the action committed (`support.owed`): sent now, then no longer owed. Sent whatever else of
    that step waits: what an operator asked for is "now", and a step's claim may be held by a
    follow-up delayed for minutes (a poll, a partner's "come back later"); the message takes the
    step's claim as the services' do (`config.claims.send_holding`), so due sweeps add no copy.
    One owed for less than a sweep's interval is left to its action's own hint."""
    owed = OwedMessage.objects.filter(
        sent_at__isnull=True, owed_at__lte=now - timedelta(seconds=settings.RECONCILE_INTERVAL_S)
    )
    rows = list(
        _for_partner(owed, partner, "booking__partner")
        .order_by("owed_at", "id")
        .values_list("id", "actor_name", "booking_id")[: settings.RECONCILE_BATCH_SIZE]
    )
    if dry_run:
        return len(rows)
    sent = 0
    for row_id, actor_name, booking_id in rows:
        messages.send_for_booking(actor_name, booking_id)
        OwedMessage.objects.filter(pk=row_id).update(sent_at=timezone.now())
        sent += 1
    return sent


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
            messages.send_for_partner(messages.WALK_CHANGE_LISTING, candidate, candidate.pk)
            codes.append(candidate.code)
    return codes


def booking_due_run(booking_id) -> None:
    """The per-booking step of a sweep: lock, re-check, act through the usual services."""
    with transaction.atomic():
        booking = lock_booking(booking_id)
        if booking.status not in OPEN_STATES:
            return
        now = timezone.now()
        expired = booking.deadline <= now and can_proceed(booking.expire)
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
                # A hint: the settled booking's unresolved create is the sweeper's due work
                # (`_resolve_fences_of_settled`), so a broker that does not take the lookup loses
                # nothing, and failing the step for it would retry a booking no longer open.
                messages.send_for_partner_on_commit(messages.SYNC_BOOKING, booking.partner, str(booking_id))
            return
        # A long wait is news once: the `taking_longer` message and its mail (CUSTOMER_SLOW_AFTER).
        customer_view.refresh(booking, actor=Actor.SWEEPER)
        status = booking.status
    if status == BookingState.AWAITING_PAYMENT:
        # Nothing is at the partner yet: the payment's run is the step, unless one waits.
        held_claims.send_claimed(
            payment_messages.run_claim(booking_id),
            lambda claim: payment_messages.send_run(booking_id, options=claim),
        )
    elif status == BookingState.REQUESTED:
        _queue_step(messages.SUBMIT_BOOKING, booking_id)
    elif status == BookingState.CANCEL_REQUESTED:
        _queue_step(messages.CANCEL_BOOKING, booking_id)
        _queue_step(messages.SYNC_BOOKING, booking_id)
    else:
        _queue_step(messages.SYNC_BOOKING, booking_id)


def _queue_step(actor_name: str, booking_id) -> bool:
    """Queue a due booking's step on its partner's queue, unless a message of that step waits,
    queued by this path before or by the services after commit (invariant 3: a partner's
    backlog is not multiplied by sweeps). Whether it was queued now.

    The claim is held until a worker takes the message up (`config.claims`).
    """
    return held_claims.send_claimed(
        messages.step_claim(actor_name, booking_id),
        lambda claim: messages.send_for_booking(actor_name, booking_id, options=claim),
    )
