"""The sweeper: due work from the database alone, queued on the real Redis broker, once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from partners import messages as partner_messages
from partners.models import InboundEvent, InboundState, Operation, Outcome, PartnerAttempt
from reconciliation.services.sweeper import booking_due_run, sweep
from tests.factories import (
    BookingFactory,
    InboundEventFactory,
    OfferFactory,
    PartnerAttemptFactory,
    PartnerReservationFactory,
)
from tests.reconciliation.conftest import actor_names, calls, queued

S = BookingState
pytestmark = pytest.mark.django_db


def _due(make_booking, status: str, **fields) -> Booking:
    return make_booking(status=status, next_check_at=timezone.now() - timedelta(seconds=1), **fields)


def _sweep(django_capture_on_commit_callbacks, **kwargs):
    with django_capture_on_commit_callbacks(execute=True):
        return sweep(**kwargs)


def _run_due(django_capture_on_commit_callbacks, booking: Booking) -> Booking:
    with django_capture_on_commit_callbacks(execute=True):
        booking_due_run(booking.pk)
    booking.refresh_from_db()
    return booking


# --- one sweep finds due bookings and queues one message each -----------------------------
def test_sweep_queues_one_sweep_message_per_due_open_booking_and_pushes_its_check(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks, settings
):
    due = [_due(make_booking, state) for state in (S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER)]
    due.append(_due(make_booking, S.CANCEL_REQUESTED))
    make_booking(status=S.PENDING_PARTNER)  # not due yet
    _due(make_booking, S.CONFIRMED)  # not open
    _due(make_booking, S.NEEDS_ATTENTION)  # a person decides

    report = _sweep(django_capture_on_commit_callbacks)

    messages = queued(broker, sweep_queue)
    assert [m.actor_name for m in messages] == ["sweep_bookings"]
    assert sorted(messages[0].args[0]) == sorted(str(b.pk) for b in due)
    assert report.due == {
        s: 1 for s in (S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER, S.CANCEL_REQUESTED)
    }
    later = timezone.now() + timedelta(seconds=settings.RECONCILE_SYNC_AGE_S - 5)
    assert all(b.next_check_at > later for b in Booking.objects.filter(pk__in=[b.pk for b in due]))


def test_running_the_sweep_twice_queues_nothing_new(
    make_booking,
    partner,
    legacy_partner,
    partner_queue,
    sweep_queue,
    webhooks_queue,
    broker,
    django_capture_on_commit_callbacks,
):
    for state in (S.REQUESTED, S.UNKNOWN, S.PENDING_PARTNER, S.CANCEL_REQUESTED):
        _due(make_booking, state)
    settled = make_booking(status=S.EXPIRED)
    PartnerAttemptFactory(booking=settled, fence=True)
    InboundEventFactory(
        partner=partner, state=InboundState.RECEIVED, received_at=timezone.now() - timedelta(minutes=5)
    )
    broker.flush(legacy_partner.queue_name)

    first = _sweep(django_capture_on_commit_callbacks)
    names = (sweep_queue, partner_queue, webhooks_queue, legacy_partner.queue_name)
    counts = {name: len(queued(broker, name)) for name in names}
    second = _sweep(django_capture_on_commit_callbacks)

    assert counts == {sweep_queue: 1, partner_queue: 1, webhooks_queue: 1, legacy_partner.queue_name: 1}
    assert len(queued(broker, sweep_queue)[0].args[0]) == 4  # one chunk of the four due bookings
    assert {name: len(queued(broker, name)) for name in names} == counts
    assert first.as_dict()["due_total"] == 4 and first.inbound_requeued == 1 and first.fenced_terminal == 1
    assert second.as_dict()["due_total"] == 0
    assert (second.inbound_requeued, second.fenced_terminal, second.listings) == (0, 0, [])
    broker.flush(legacy_partner.queue_name)


def test_dry_run_reports_due_work_and_changes_nothing(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, S.UNKNOWN)
    before = booking.next_check_at

    report = _sweep(django_capture_on_commit_callbacks, dry_run=True)

    booking.refresh_from_db()
    assert report.due == {S.UNKNOWN: 1}
    assert booking.next_check_at == before
    assert queued(broker, partner_queue) == []


def test_partner_filter_sweeps_only_that_partners_bookings(
    make_booking, partner, sweep_queue, broker, django_capture_on_commit_callbacks
):
    mine = _due(make_booking, S.UNKNOWN)
    other_offer = OfferFactory()
    other = BookingFactory(
        offer=other_offer, partner=other_offer.partner, status=S.UNKNOWN, next_check_at=timezone.now()
    )

    _sweep(django_capture_on_commit_callbacks, partner=partner)

    other.refresh_from_db()
    assert [m.args[0] for m in queued(broker, sweep_queue)] == [[str(mine.pk)]]
    assert other.next_check_at <= timezone.now()


# --- the per-booking step: each due-work kind ----------------------------------------------------
@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (S.REQUESTED, ["submit_booking"]),  # the submission message was lost: submit again
        (S.SUBMITTING, ["sync_booking"]),  # a worker died mid-call: find out what the partner holds
        (S.UNKNOWN, ["sync_booking"]),
        (S.PENDING_PARTNER, ["sync_booking"]),
        (S.CANCEL_REQUESTED, ["cancel_booking", "sync_booking"]),
    ],
)
def test_due_run_queues_the_work_of_each_open_state(
    state, expected, make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, state)

    booking = _run_due(django_capture_on_commit_callbacks, booking)

    assert actor_names(broker, partner_queue) == expected
    assert booking.status == state
    assert [m.args[0] for m in queued(broker, partner_queue)] == [str(booking.pk)] * len(expected)


@pytest.mark.parametrize("state", [S.CONFIRMED, S.NEEDS_ATTENTION, S.FAILED, S.CANCELLED])
def test_due_run_skips_a_booking_that_moved_on(
    state, make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, state)

    booking = _run_due(django_capture_on_commit_callbacks, booking)

    assert booking.status == state
    assert queued(broker, partner_queue) == []
    assert not booking.events.exists()


def test_past_deadline_expires_and_requests_compensation_of_the_live_reservation(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, S.PENDING_PARTNER, deadline=timezone.now() - timedelta(seconds=1))
    reservation = PartnerReservationFactory(booking=booking, status="pending")
    swept_from = timezone.now()

    booking = _run_due(django_capture_on_commit_callbacks, booking)

    reservation.refresh_from_db()
    assert booking.status == S.EXPIRED
    assert swept_from <= reservation.compensation_requested_at <= timezone.now()
    assert reservation.compensation_reason == "booking_expired"
    assert list(booking.events.values_list("kind", flat=True)) == [
        "booking.expired",
        "partner.compensation.requested",
    ]
    assert calls(broker, partner_queue) == [("compensate_reservation", [reservation.pk])]


def test_past_deadline_without_a_reservation_expires_and_queues_nothing(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, S.REQUESTED, deadline=timezone.now() - timedelta(seconds=1))

    booking = _run_due(django_capture_on_commit_callbacks, booking)

    assert booking.status == S.EXPIRED
    assert queued(broker, partner_queue) == []


def test_past_deadline_while_fenced_expires_and_syncs_to_find_what_the_partner_holds(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, S.UNKNOWN, deadline=timezone.now() - timedelta(seconds=1))
    PartnerAttemptFactory(booking=booking, fence=True)

    booking = _run_due(django_capture_on_commit_callbacks, booking)

    assert booking.status == S.EXPIRED
    assert (
        "outcome of the last call still being resolved" in booking.events.get(kind="booking.expired").summary
    )
    assert actor_names(broker, partner_queue) == ["sync_booking"]


def test_cancel_requested_past_deadline_keeps_cancelling(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, S.CANCEL_REQUESTED, deadline=timezone.now() - timedelta(seconds=1))

    booking = _run_due(django_capture_on_commit_callbacks, booking)

    assert booking.status == S.CANCEL_REQUESTED
    assert actor_names(broker, partner_queue) == ["cancel_booking", "sync_booking"]


def test_deadline_follows_frozen_time(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    start = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        booking = make_booking(
            status=S.PENDING_PARTNER,
            deadline=start + timedelta(minutes=30),
            next_check_at=start,
        )
    with time_machine.travel(start + timedelta(minutes=29, seconds=59), tick=False):
        booking = _run_due(django_capture_on_commit_callbacks, booking)
        assert booking.status == S.PENDING_PARTNER
        assert actor_names(broker, partner_queue) == ["sync_booking"]
    with time_machine.travel(start + timedelta(minutes=30), tick=False):
        booking = _run_due(django_capture_on_commit_callbacks, booking)
        assert booking.status == S.EXPIRED
        assert booking.status_changed_at == start + timedelta(minutes=30)


def test_sweep_picks_a_booking_up_only_once_its_check_is_due(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks
):
    start = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False):
        make_booking(
            status=S.UNKNOWN, next_check_at=start + timedelta(seconds=30), deadline=start + timedelta(hours=1)
        )
        assert _sweep(django_capture_on_commit_callbacks).due == {}
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        assert _sweep(django_capture_on_commit_callbacks).due == {S.UNKNOWN: 1}
    assert actor_names(broker, sweep_queue) == ["sweep_bookings"]


def test_a_due_booking_whose_deadline_comes_before_its_recheck_is_expired_at_its_deadline(
    make_booking, sweep_queue, partner_queue, broker, django_capture_on_commit_callbacks, settings
):
    # given bookings due for a check, one of them with its deadline within the recheck's minute
    settings.RECONCILE_SYNC_AGE_S = 60
    start = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
    deadline = start + timedelta(seconds=20)
    with time_machine.travel(start, tick=False):
        soon = _due(make_booking, S.PENDING_PARTNER, deadline=deadline)
        later = _due(make_booking, S.PENDING_PARTNER, deadline=start + timedelta(hours=1))
        cancelling = _due(make_booking, S.CANCEL_REQUESTED, deadline=deadline)  # no deadline expires it
        past = _due(make_booking, S.UNKNOWN, deadline=start - timedelta(seconds=1))

        # when a sweep queues their steps: the partner's sync of each waits on its queue, and no
        # worker takes it up (a backlog, a claim held)
        _sweep(django_capture_on_commit_callbacks)
        for booking in (soon, later, cancelling):
            _run_due(django_capture_on_commit_callbacks, booking)

        # then the one the deadline expires is checked again at its deadline, not a minute on
        checks = dict(Booking.objects.values_list("pk", "next_check_at"))
        recheck = start + timedelta(seconds=60)
        assert (checks[soon.pk], checks[later.pk], checks[cancelling.pk]) == (deadline, recheck, recheck)
        assert checks[past.pk] == recheck  # its expiry is queued now
        assert calls(broker, partner_queue).count(("sync_booking", [str(soon.pk)])) == 1

    # and the first sweep after its deadline expires it, though its sync never ran
    with time_machine.travel(deadline + timedelta(seconds=1), tick=False):
        assert _sweep(django_capture_on_commit_callbacks).due == {S.PENDING_PARTNER: 1}
        assert queued(broker, sweep_queue)[-1].args[0] == [str(soon.pk)]
        assert _run_due(django_capture_on_commit_callbacks, soon).status == S.EXPIRED


# --- work without a booking row of its own ----------------------------------------------------------------
def test_stale_unprocessed_webhooks_are_queued_again_once(
    partner, webhooks_queue, broker, django_capture_on_commit_callbacks, settings
):
    stale = InboundEventFactory(
        partner=partner, state=InboundState.RECEIVED, received_at=timezone.now() - timedelta(minutes=5)
    )
    # fresh: its own message is still on the way
    InboundEventFactory(partner=partner, state=InboundState.RECEIVED)
    InboundEventFactory(
        partner=partner, state=InboundState.PROCESSED, received_at=timezone.now() - timedelta(minutes=5)
    )

    first = _sweep(django_capture_on_commit_callbacks)
    second = _sweep(django_capture_on_commit_callbacks)

    assert (first.inbound_requeued, second.inbound_requeued) == (1, 0)
    assert calls(broker, webhooks_queue) == [("process_inbound_event", [stale.pk])]


def test_a_stale_webhook_whose_message_still_waits_gets_no_copy_however_many_windows_pass(
    partner, webhooks_queue, broker, django_capture_on_commit_callbacks, settings
):
    """Its message, queued when it was stored, holds the claim the sweeper's window would take
    (`config.claims`): a backlog on the webhooks queue got one copy per window before."""
    settings.RECONCILE_INBOUND_STALE_S = 0.2  # stale at once, and each window passes quickly
    event = InboundEventFactory(partner=partner, state=InboundState.RECEIVED)
    with django_capture_on_commit_callbacks(execute=True):
        partner_messages.send_inbound_event_on_commit(event.pk)  # as its receipt queues it
    InboundEvent.objects.filter(pk=event.pk).update(received_at=timezone.now() - timedelta(minutes=5))

    reports = []
    for _ in range(3):
        reports.append(_sweep(django_capture_on_commit_callbacks))
        time.sleep(0.3)  # past the sweeper's window

    assert [r.inbound_requeued for r in reports] == [0, 0, 0]
    assert calls(broker, webhooks_queue) == [("process_inbound_event", [event.pk])]


def test_settled_booking_with_an_unresolved_create_is_synced_once(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    expired = make_booking(status=S.EXPIRED)
    PartnerAttemptFactory(booking=expired, fence=True)
    PartnerAttemptFactory(booking=expired, fence=True, age=timedelta(minutes=20))  # two fences, one sync
    open_one = make_booking(status=S.UNKNOWN)
    PartnerAttemptFactory(booking=open_one, fence=True)  # open bookings are the due-booking path's
    young = make_booking(status=S.FAILED)
    # its call may still be answered
    PartnerAttemptFactory(booking=young, fence=True, age=timedelta(seconds=1))
    # handed to support because no lookup can answer: syncing it again would only loop
    with_support = make_booking(status=S.NEEDS_ATTENTION, attention_reason="outcome_unknown_no_lookup")
    PartnerAttemptFactory(booking=with_support, fence=True)

    first = _sweep(django_capture_on_commit_callbacks)
    second = _sweep(django_capture_on_commit_callbacks)

    assert (first.fenced_terminal, second.fenced_terminal) == (1, 0)
    assert calls(broker, partner_queue) == [("sync_booking", [str(expired.pk)])]


def test_legacy_partner_listing_walk_is_queued_once_per_gap(
    legacy_partner, partner, broker, django_capture_on_commit_callbacks, settings
):
    broker.flush(legacy_partner.queue_name)
    # Long enough for the second sweep to fall within the gap on a loaded machine; the broker
    # fixture drops the claim after the test.
    settings.RECONCILE_LISTING_MIN_GAP_S = 30

    first = _sweep(django_capture_on_commit_callbacks)
    second = _sweep(django_capture_on_commit_callbacks)

    assert first.listings == [legacy_partner.code]  # the reference partner has no listing
    assert second.listings == []
    assert calls(broker, legacy_partner.queue_name) == [("walk_change_listing", [legacy_partner.pk])]
    broker.flush(legacy_partner.queue_name)


# --- constant queries per batch ----------------------------------------------------------------
def _queries_for(count: int, make_booking, django_capture_on_commit_callbacks) -> tuple[int, int]:
    Booking.objects.filter(status=S.UNKNOWN).delete()
    for _ in range(count):
        _due(make_booking, S.UNKNOWN)
    with CaptureQueriesContext(connection) as captured:
        report = _sweep(django_capture_on_commit_callbacks, batch_size=2)
    return report.batches, len(captured.captured_queries)


def test_sweep_runs_a_constant_number_of_queries_per_batch(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks, django_assert_num_queries
):
    batches_2, queries_2 = _queries_for(3, make_booking, django_capture_on_commit_callbacks)
    broker.flush(sweep_queue)
    batches_5, queries_5 = _queries_for(9, make_booking, django_capture_on_commit_callbacks)

    assert (batches_2, batches_5) == (2, 5)
    per_batch = (queries_5 - queries_2) // 3
    assert per_batch * 3 == queries_5 - queries_2
    assert queries_2 - 2 * per_batch == queries_5 - 5 * per_batch  # the same fixed part
    # savepoint, one update that returns the batch, release: three per batch; sixteen for webhooks,
    # refused webhooks' evidence, compensations, the confirmed audit, fences, lost and abandoned
    # notifications, payments due and their unprocessed webhooks, support's owed messages,
    # listings, and the retention's looks (old webhook and payment webhook bodies, expired
    # sessions, old login logs and old login failures)
    assert per_batch == 3
    assert queries_2 == 16 + 2 * per_batch
    for _ in range(2):
        _due(make_booking, S.UNKNOWN)
    with django_assert_num_queries(16 + 3 * 1 + 3):  # one full batch, then an empty look (an update)
        _sweep(django_capture_on_commit_callbacks, batch_size=2)


def test_dry_run_runs_one_select_per_batch(make_booking, django_capture_on_commit_callbacks):
    for _ in range(5):
        _due(make_booking, S.UNKNOWN)
    marks: list[int] = []

    with CaptureQueriesContext(connection) as captured:
        report = sweep(dry_run=True, batch_size=2, progress=lambda n: marks.append(len(captured)))

    assert (report.batches, report.as_dict()["due_total"]) == (3, 5)
    assert marks == [1, 2, 3]


@pytest.mark.parametrize("dry_run", [True, False])
def test_batches_take_every_due_booking_once_even_at_equal_check_times(
    dry_run, make_booking, sweep_queue, broker, django_capture_on_commit_callbacks
):
    at = timezone.now() - timedelta(minutes=1)
    due = [make_booking(status=S.UNKNOWN, next_check_at=at) for _ in range(5)]

    report = _sweep(django_capture_on_commit_callbacks, dry_run=dry_run, batch_size=2)

    assert (report.batches, report.due) == (3, {S.UNKNOWN: 5})
    ids = [i for m in queued(broker, sweep_queue) for i in m.args[0]]
    assert sorted(ids) == ([] if dry_run else sorted(str(b.pk) for b in due))


def test_a_sweep_ends_even_when_checks_are_pushed_by_no_time_at_all(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks, settings
):
    settings.RECONCILE_SYNC_AGE_S = 0
    due = [_due(make_booking, S.UNKNOWN) for _ in range(3)]

    report = _sweep(django_capture_on_commit_callbacks, batch_size=2)

    assert (report.batches, report.due) == (2, {S.UNKNOWN: 3})
    assert sorted(i for m in queued(broker, sweep_queue) for i in m.args[0]) == sorted(str(b.pk) for b in due)


def test_the_claims_of_a_batch_are_made_in_one_redis_call(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks, monkeypatch
):
    from config.redis_client import redis_client
    from reconciliation.services import sweeper

    sweeper._first_time([f"warm-up:{uuid4()}"], 1)  # the script is loaded in Redis
    client = redis_client()
    commands: list[tuple] = []
    execute = client.execute_command

    def spy(*args, **options):
        commands.append(args)
        return execute(*args, **options)

    monkeypatch.setattr(client, "execute_command", spy)
    for _ in range(5):
        _due(make_booking, S.UNKNOWN)

    _sweep(django_capture_on_commit_callbacks, batch_size=2)

    assert [(name, keys) for name, _sha, keys, *_ in commands] == [
        ("EVALSHA", 2),
        ("EVALSHA", 2),
        ("EVALSHA", 1),
    ]
    assert sum(len(m.args[0]) for m in queued(broker, sweep_queue)) == 5


@pytest.mark.django_db(transaction=True)
def test_a_booking_locked_elsewhere_is_left_for_the_next_sweep_without_waiting(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks
):
    if not connection.features.has_select_for_update_skip_locked:
        pytest.skip("SQLite has one writer at a time: nothing else can hold a row")
    locked, *others = [_due(make_booking, S.UNKNOWN) for _ in range(3)]
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:  # another sweep's batch, or a worker's step, holding the row
        try:
            with transaction.atomic():
                Booking.objects.select_for_update().get(pk=locked.pk)
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        report = _sweep(django_capture_on_commit_callbacks, batch_size=2)
    finally:
        release.set()
        thread.join()

    assert report.due == {S.UNKNOWN: 2}
    assert sorted(i for m in queued(broker, sweep_queue) for i in m.args[0]) == sorted(
        str(b.pk) for b in others
    )
    locked.refresh_from_db()
    assert locked.next_check_at <= timezone.now()  # still due: the next sweep takes it
    assert _sweep(django_capture_on_commit_callbacks).due == {S.UNKNOWN: 1}


def test_fenced_attempt_of_an_open_booking_is_left_to_the_due_path(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks
):
    booking = make_booking(status=S.PENDING_PARTNER)
    PartnerAttemptFactory(booking=booking, fence=True)

    report = _sweep(django_capture_on_commit_callbacks)

    assert report.fenced_terminal == 0
    assert queued(broker, partner_queue) == []


# --- backlogs and lost messages ------------------------------------------------------------------
def test_a_due_booking_whose_message_still_waits_is_not_queued_again(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, S.UNKNOWN)
    _sweep(django_capture_on_commit_callbacks)
    # Workers are behind: the booking is due again before its message ran.
    Booking.objects.filter(pk=booking.pk).update(next_check_at=timezone.now() - timedelta(seconds=1))

    again = _sweep(django_capture_on_commit_callbacks)

    assert again.due == {S.UNKNOWN: 1}
    assert [m.args[0] for m in queued(broker, sweep_queue)] == [[str(booking.pk)]]


def test_an_expiry_is_queued_even_while_an_earlier_sync_is_claimed(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks
):
    booking = _due(make_booking, S.PENDING_PARTNER)
    _sweep(django_capture_on_commit_callbacks)
    Booking.objects.filter(pk=booking.pk).update(
        next_check_at=timezone.now() - timedelta(seconds=1), deadline=timezone.now() - timedelta(seconds=1)
    )

    _sweep(django_capture_on_commit_callbacks)

    assert [m.args[0] for m in queued(broker, sweep_queue)] == [[str(booking.pk)]] * 2


def test_an_owed_compensation_whose_message_was_lost_is_queued_again_once(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks, settings
):
    cancelled = make_booking(status=S.CANCEL_REQUESTED)
    owed = PartnerReservationFactory(
        booking=cancelled,
        status="confirmed",
        compensation_requested_at=timezone.now() - timedelta(seconds=settings.RECONCILE_SYNC_AGE_S + 1),
        compensation_reason="cancel_requested",
    )
    held = make_booking(status=S.NEEDS_ATTENTION)
    PartnerReservationFactory(
        booking=held,
        status="confirmed",
        compensation_requested_at=timezone.now() - timedelta(hours=1),
        compensation_reason="duplicate",
    )
    PartnerReservationFactory(  # verified already: nothing owed
        booking=make_booking(status=S.CANCELLED),
        status="cancelled",
        compensation_requested_at=timezone.now() - timedelta(hours=1),
        compensated_at=timezone.now(),
    )

    first = _sweep(django_capture_on_commit_callbacks)
    second = _sweep(django_capture_on_commit_callbacks)

    assert calls(broker, partner_queue) == [("compensate_reservation", [owed.pk])]
    assert (first.compensations_requeued, second.compensations_requeued) == (1, 0)


def test_a_compensation_whose_chain_is_alive_gets_no_copy_until_it_falls_quiet(
    make_booking, partner_queue, broker, django_capture_on_commit_callbacks, settings
):
    """A copy beside a live chain of retries would spend the one budget of tries faster than its
    backoff intends: the sweeper sends one only when no try was made for the longest pause."""
    settings.PARTNER_RETRY_MAX_S = 30
    cancelled = make_booking(status=S.CANCEL_REQUESTED)
    owed = PartnerReservationFactory(
        booking=cancelled,
        status="confirmed",
        compensation_requested_at=timezone.now() - timedelta(minutes=10),
        compensation_reason="cancel_requested",
    )
    quiet_for = timedelta(seconds=settings.PARTNER_RETRY_MAX_S + settings.RECONCILE_SYNC_AGE_S)
    last_try = PartnerAttemptFactory(
        booking=cancelled,
        reservation=owed,
        operation=Operation.CANCEL,
        outcome=Outcome.TRANSIENT,
        age=quiet_for - timedelta(seconds=5),
    )

    assert _sweep(django_capture_on_commit_callbacks).compensations_requeued == 0  # its chain goes on
    PartnerAttempt.objects.filter(pk=last_try.pk).update(
        started_at=timezone.now() - quiet_for - timedelta(seconds=1)
    )
    assert _sweep(django_capture_on_commit_callbacks).compensations_requeued == 1  # its message was lost
    assert calls(broker, partner_queue) == [("compensate_reservation", [owed.pk])]


def test_confirmed_bookings_are_audited_at_their_partner_once_per_window(
    make_booking, audit_queue, broker, django_capture_on_commit_callbacks, settings
):
    a_while = timedelta(seconds=settings.RECONCILE_AUDIT_AGE_S + 5)
    never = make_booking(status=S.CONFIRMED, status_changed_at=timezone.now() - a_while)  # never read
    now = timezone.now()
    long_ago = make_booking(
        status=S.CONFIRMED, status_changed_at=now - 2 * a_while, last_synced_at=now - a_while
    )
    make_booking(status=S.CONFIRMED, status_changed_at=now - a_while, last_synced_at=now)  # read just now
    make_booking(status=S.CONFIRMED)  # just confirmed: what the partner said then is what we hold
    past_stay = make_booking(status=S.CONFIRMED, status_changed_at=timezone.now() - a_while)
    Booking.objects.filter(pk=past_stay.pk).update(
        start_date=timezone.now().date() - timedelta(days=3),
        end_date=timezone.now().date() - timedelta(days=1),
    )

    first = _sweep(django_capture_on_commit_callbacks)
    second = _sweep(django_capture_on_commit_callbacks)

    assert sorted(args[0] for _, args in calls(broker, audit_queue)) == sorted(
        [str(never.pk), str(long_ago.pk)]
    )
    assert {name for name, _ in calls(broker, audit_queue)} == {"sync_booking"}
    assert (first.confirmed_audited, second.confirmed_audited) == (2, 0)


def test_audit_reads_go_to_the_audit_queue_and_never_wait_behind_submissions(
    make_booking, partner_queue, audit_queue, broker, django_capture_on_commit_callbacks, settings
):
    """On the partner's queue an audit read waited behind every submission queued before it: under
    load a cluster chaos run found amendments and losses 183-220 s after they were made, against a
    158 s detection window. Only the audit's reads move: a due booking's submission and a settled
    booking's fence sync stay on the partner's queue."""
    stale = timezone.now() - timedelta(seconds=settings.RECONCILE_AUDIT_AGE_S + 5)
    confirmed = make_booking(status=S.CONFIRMED, status_changed_at=stale)
    requested = _due(make_booking, S.REQUESTED)
    fenced = make_booking(status=S.EXPIRED)
    PartnerAttemptFactory(booking=fenced, fence=True)

    report = _sweep(django_capture_on_commit_callbacks)
    _run_due(django_capture_on_commit_callbacks, requested)  # the due booking's step: submit again

    assert (report.confirmed_audited, report.fenced_terminal) == (1, 1)
    assert calls(broker, audit_queue) == [("sync_booking", [str(confirmed.pk)])]
    assert sorted(calls(broker, partner_queue)) == [
        ("submit_booking", [str(requested.pk)]),
        ("sync_booking", [str(fenced.pk)]),
    ]


def test_the_audit_reads_confirmed_bookings_in_the_order_it_last_learned_their_truth(
    make_booking, audit_queue, broker, django_capture_on_commit_callbacks, settings
):
    """A queue, not a scramble: a booking never read since its confirmation waits behind one read
    before it was confirmed, so a steady stream of new confirmations cannot keep an older one
    from its next read past a round over all of them."""
    settings.RECONCILE_AUDIT_BATCH = 2
    now = timezone.now()
    age = timedelta(seconds=settings.RECONCILE_AUDIT_AGE_S)
    make_booking(status=S.CONFIRMED, status_changed_at=now - age - timedelta(seconds=10))  # confirmed lately
    read_long_ago = make_booking(
        status=S.CONFIRMED, status_changed_at=now - 3 * age, last_synced_at=now - age - timedelta(seconds=30)
    )
    confirmed_earlier = make_booking(status=S.CONFIRMED, status_changed_at=now - age - timedelta(seconds=20))

    _sweep(django_capture_on_commit_callbacks)

    audited = [args[0] for _, args in calls(broker, audit_queue)]
    assert audited == [
        str(read_long_ago.pk),
        str(confirmed_earlier.pk),
    ]  # the one confirmed lately: next round


def test_each_sweep_sends_a_whole_batch_of_new_audit_reads_past_those_still_in_flight(
    make_booking, audit_queue, broker, django_capture_on_commit_callbacks, settings
):
    """The front of the queue keeps its place until its read is answered: a sweep that finds
    those reads still on their way passes over them, so that a round over every confirmed
    booking takes the time the detection window says (a batch of new reads per sweep), not
    longer while reads are in flight."""
    settings.RECONCILE_AUDIT_BATCH = 2
    now = timezone.now()
    age = timedelta(seconds=settings.RECONCILE_AUDIT_AGE_S)
    in_order = [
        make_booking(status=S.CONFIRMED, status_changed_at=now - age - timedelta(seconds=60 - i))
        for i in range(5)
    ]

    _sweep(django_capture_on_commit_callbacks)
    broker.flush(audit_queue)
    _sweep(django_capture_on_commit_callbacks)  # the first two are not read yet: still in flight

    audited = [args[0] for _, args in calls(broker, audit_queue)]
    assert audited == [str(b.pk) for b in in_order[2:4]]


def test_due_bookings_are_queued_in_chunks(
    make_booking, sweep_queue, broker, django_capture_on_commit_callbacks, settings
):
    settings.RECONCILE_MESSAGE_CHUNK = 2
    due = [_due(make_booking, S.UNKNOWN) for _ in range(5)]

    _sweep(django_capture_on_commit_callbacks)

    chunks = [m.args[0] for m in queued(broker, sweep_queue)]
    assert [len(chunk) for chunk in chunks] == [2, 2, 1]
    assert sorted(i for chunk in chunks for i in chunk) == sorted(str(b.pk) for b in due)


def test_a_failing_step_does_not_starve_the_rest_of_its_chunk(make_booking, monkeypatch):
    from reconciliation import tasks

    ran = []

    def step(booking_id):
        ran.append(str(booking_id))
        if len(ran) == 1:
            raise RuntimeError("database hiccup")

    monkeypatch.setattr(tasks, "booking_due_run", step)
    ids = [str(_due(make_booking, S.UNKNOWN).pk) for _ in range(3)]

    with pytest.raises(tasks.SweepStepsFailed, match="1 of 3"):
        tasks.sweep_bookings.fn(ids)
    assert ran == ids
