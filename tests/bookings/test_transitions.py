"""The booking state machine: every allowed and forbidden transition, the protected field, and
racing transitions (optimistic `ConcurrentTransitionMixin` and pessimistic `lock_booking`)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django_fsm import ConcurrentTransition, TransitionNotAllowed, can_proceed

from bookings.models import Actor, Booking, BookingEvent
from bookings.services import lock_booking
from bookings.states import TERMINAL_STATES, BookingState
from bookings.timeline import record_event
from tests.bookings.conftest import postgres_only, run_concurrently
from tests.factories import BookingFactory
from tests.helpers import sessions_waiting_on_a_lock, wait_until

S = BookingState
ALL_STATES = list(S)

# The graph of docs/design.md, written out here on purpose (not read from the model): a change to
# the model's graph must be a deliberate change to this table too.
# transition -> (allowed source states, target state, keyword arguments)
TRANSITIONS: dict[str, tuple[frozenset[str], str, dict[str, Any]]] = {
    "accept_payment": (frozenset({S.AWAITING_PAYMENT}), S.REQUESTED, {}),
    "refuse_payment": (frozenset({S.AWAITING_PAYMENT}), S.FAILED, {}),
    "start_submission": (frozenset({S.REQUESTED}), S.SUBMITTING, {}),
    "mark_partner_pending": (
        frozenset({S.REQUESTED, S.SUBMITTING, S.UNKNOWN}),
        S.PENDING_PARTNER,
        {},
    ),
    "mark_outcome_unknown": (frozenset({S.SUBMITTING}), S.UNKNOWN, {}),
    "confirm": (
        frozenset({S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER, S.NEEDS_ATTENTION}),
        S.CONFIRMED,
        {},
    ),
    "reject": (
        frozenset({S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER}),
        S.REJECTED,
        {},
    ),
    "fail": (
        frozenset({S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER, S.NEEDS_ATTENTION}),
        S.FAILED,
        {},
    ),
    "expire": (
        frozenset({S.AWAITING_PAYMENT, S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER}),
        S.EXPIRED,
        {},
    ),
    "request_cancel": (
        frozenset(
            {
                S.AWAITING_PAYMENT,
                S.REQUESTED,
                S.SUBMITTING,
                S.PENDING_PARTNER,
                S.UNKNOWN,
                S.CONFIRMED,
                S.NEEDS_ATTENTION,
            }
        ),
        S.CANCEL_REQUESTED,
        {},
    ),
    "mark_cancelled": (frozenset({S.CANCEL_REQUESTED, S.NEEDS_ATTENTION}), S.CANCELLED, {}),
    "flag_for_attention": (
        frozenset(
            {
                S.SUBMITTING,
                S.UNKNOWN,
                S.PENDING_PARTNER,
                S.CONFIRMED,
                S.CANCEL_REQUESTED,
                S.REJECTED,
                S.FAILED,
                S.EXPIRED,
                S.CANCELLED,
            }
        ),
        S.NEEDS_ATTENTION,
        {"reason": "partner_orphan", "detail": "two live reservations"},
    ),
    "requeue_submission": (frozenset({S.UNKNOWN, S.NEEDS_ATTENTION}), S.REQUESTED, {}),
    "release_submission": (frozenset({S.SUBMITTING}), S.REQUESTED, {}),
}
# The one move whose target is not fixed: support had an ended booking for what the partner still
# held of it, and it returns to that end (`attention_from`), only from needs_attention, only then.
RETURN_TO_END = "return_to_end"
CASES = [(state, name) for name in TRANSITIONS for state in ALL_STATES]
SAVED_FIELDS = ["status", "status_changed_at", "submission_count", "updated_at"]


def test_the_table_covers_every_transition_of_the_model():
    booking = BookingFactory.build()

    declared = {t.name for t in booking.get_all_status_transitions()}

    assert declared == {*TRANSITIONS, RETURN_TO_END}


RETURN_CASES = [(state, came_from) for state in ALL_STATES for came_from in ["", *ALL_STATES]]


@pytest.mark.parametrize(
    ("state", "came_from"), RETURN_CASES, ids=[f"{s}-from-{c or 'none'}" for s, c in RETURN_CASES]
)
def test_return_to_end_leads_an_ended_booking_with_support_back_to_its_end_and_nowhere_else(state, came_from):
    booking = BookingFactory.build(
        status=state,
        attention_from=came_from,
        attention_reason="compensation_failed",
        cancellation_fee=Decimal("90.00"),
    )

    if state == S.NEEDS_ATTENTION and came_from in TERMINAL_STATES:
        assert can_proceed(booking.return_to_end)
        booking.return_to_end()
        # its end, the reason gone, the fee a cancelled booking owes kept
        assert (booking.status, booking.attention_from, booking.attention_reason) == (came_from, "", "")
        assert booking.cancellation_fee == Decimal("90.00")
    else:
        assert not can_proceed(booking.return_to_end)
        with pytest.raises(TransitionNotAllowed):
            booking.return_to_end()
        assert booking.status == state


@pytest.mark.parametrize(("state", "name"), CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_each_transition_from_each_state(state, name):
    # given a booking in `state`
    booking = BookingFactory.build(status=state)
    sources, target, kwargs = TRANSITIONS[name]
    method = getattr(booking, name)

    if state in sources:
        # then the transition is allowed and lands on its target
        assert can_proceed(method)
        method(**kwargs)
        assert booking.status == target
    else:
        # then it is refused and the state does not move
        assert not can_proceed(method)
        with pytest.raises(TransitionNotAllowed):
            method(**kwargs)
        assert booking.status == state


def test_terminal_states_only_lead_to_needs_attention():
    for state in TERMINAL_STATES:
        booking = BookingFactory.build(status=state)

        available = {t.name for t in booking.get_available_status_transitions()}

        assert available == {"flag_for_attention"}, state


def test_start_submission_counts_the_tries_and_stamps_the_move():
    booking = BookingFactory.build(status=S.REQUESTED, submission_count=2)
    before = booking.status_changed_at

    booking.start_submission()

    assert booking.submission_count == 3
    assert booking.status_changed_at > before


def test_flag_for_attention_records_why_and_confirm_or_requeue_clears_it():
    flagged = BookingFactory.build(status=S.UNKNOWN)
    flagged.flag_for_attention(reason="partner_orphan", detail="two live reservations")
    assert (flagged.attention_reason, flagged.attention_detail) == (
        "partner_orphan",
        "two live reservations",
    )

    flagged.confirm()
    assert flagged.attention_reason == ""

    requeued = BookingFactory.build(status=S.NEEDS_ATTENTION, attention_reason="lookup_failed")
    requeued.requeue_submission()
    assert requeued.attention_reason == ""


@pytest.mark.parametrize(
    ("state", "transition"),
    [
        (S.NEEDS_ATTENTION, "confirm"),
        (S.NEEDS_ATTENTION, "fail"),
        (S.NEEDS_ATTENTION, "requeue_submission"),
    ],
)
def test_a_move_off_the_cancel_s_road_drops_the_fee_it_fixed(state, transition):
    # a cancel fixed 90.00 and did not complete; confirmed again the price is owed, failed nothing
    booking = BookingFactory.build(status=state, cancellation_fee=Decimal("90.00"))

    getattr(booking, transition)()

    assert booking.cancellation_fee is None


@pytest.mark.parametrize(
    ("state", "transition", "kwargs"),
    [
        (S.CANCEL_REQUESTED, "mark_cancelled", {}),
        (S.NEEDS_ATTENTION, "mark_cancelled", {}),
        (S.CANCEL_REQUESTED, "flag_for_attention", {"reason": "compensation_failed"}),
        (S.NEEDS_ATTENTION, "request_cancel", {}),
    ],
)
def test_the_cancel_s_road_keeps_the_fee_it_fixed(state, transition, kwargs):
    booking = BookingFactory.build(status=state, cancellation_fee=Decimal("90.00"))

    getattr(booking, transition)(**kwargs)

    assert booking.cancellation_fee == Decimal("90.00")


def test_the_state_field_cannot_be_assigned_directly():
    booking = BookingFactory.build(status=S.REQUESTED)

    with pytest.raises(AttributeError, match="Direct status modification is not allowed"):
        booking.status = S.CONFIRMED

    assert booking.status == S.REQUESTED


def test_refresh_from_db_still_works_on_the_protected_field(db):
    # given two copies of a booking, one of which moves it on
    booking = BookingFactory(status=S.REQUESTED)
    other = Booking.objects.get(pk=booking.pk)
    other.start_submission()
    other.save(update_fields=SAVED_FIELDS)

    # when the stale copy is refreshed
    booking.refresh_from_db()

    # then it holds the new state
    assert booking.status == S.SUBMITTING


def test_a_stale_copy_cannot_save_over_a_newer_state(db):
    # given two copies of one booking loaded in the same state
    booking = BookingFactory(status=S.REQUESTED)
    first = Booking.objects.get(pk=booking.pk)
    second = Booking.objects.get(pk=booking.pk)

    # when both transition and save, one after the other
    with transaction.atomic():
        first.start_submission()
        first.save(update_fields=SAVED_FIELDS)
    second.request_cancel()
    with pytest.raises(ConcurrentTransition), transaction.atomic():
        second.save(update_fields=SAVED_FIELDS)

    # then the first one's state stands
    booking.refresh_from_db()
    assert booking.status == S.SUBMITTING


# --- races on PostgreSQL ------------------------------------------------------------------
@postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_racing_transitions_without_a_lock_exactly_one_wins():
    # given a requested booking, and two workers that each load it (no row lock) before either
    # saves: one starts the submission, the other asks to cancel
    booking = BookingFactory(status=S.REQUESTED)
    both_loaded = threading.Barrier(2)

    def transition(name: str):
        def run() -> str:
            with transaction.atomic():
                mine = Booking.objects.get(pk=booking.pk)
                both_loaded.wait(timeout=10)
                getattr(mine, name)()
                mine.save(update_fields=SAVED_FIELDS)
            return mine.status

        return run

    # when both save
    results = run_concurrently(transition("start_submission"), transition("request_cancel"))

    # then exactly one wins; the other gets ConcurrentTransition and its change is rolled back
    winners = [result for result in results if isinstance(result, str)]
    losers = [result for result in results if isinstance(result, ConcurrentTransition)]
    assert len(winners) == 1, results
    assert len(losers) == 1, results
    booking.refresh_from_db()
    assert booking.status == winners[0]
    assert booking.status in {S.SUBMITTING, S.CANCEL_REQUESTED}
    assert booking.submission_count == (1 if booking.status == S.SUBMITTING else 0)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_with_lock_booking_the_second_transition_sees_the_first():
    # given a requested booking locked by a worker that starts the submission
    booking = BookingFactory(status=S.REQUESTED)
    first_locked = threading.Event()
    release_first = threading.Event()
    seen_by_second: list[str] = []

    def first() -> str:
        with transaction.atomic():
            mine = lock_booking(booking.pk)
            first_locked.set()
            assert release_first.wait(timeout=10)
            mine.start_submission()
            mine.save(update_fields=SAVED_FIELDS)
        return mine.status

    def second() -> str:
        assert first_locked.wait(timeout=10)
        with transaction.atomic():
            mine = lock_booking(booking.pk)  # waits for the first to commit
            seen_by_second.append(mine.status)
            mine.request_cancel()
            mine.save(update_fields=SAVED_FIELDS)
        return mine.status

    def let_first_go_once_second_waits() -> None:
        wait_until(first_locked.is_set, what="the first worker to lock the booking")
        wait_until(lambda: sessions_waiting_on_a_lock() == 1, what="the second worker to wait on the lock")
        release_first.set()

    # when the second asks for the lock while the first holds it
    results = run_concurrently(first, second, while_running=let_first_go_once_second_waits)

    # then the second one waited, saw the first's state and moved on from it: no conflict
    assert results == [S.SUBMITTING, S.CANCEL_REQUESTED]
    assert seen_by_second == [S.SUBMITTING]
    booking.refresh_from_db()
    assert (booking.status, booking.submission_count) == (S.CANCEL_REQUESTED, 1)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_locked_booking_holds_up_neither_its_partners_new_bookings_nor_rows_that_reference_it():
    # given a worker that holds a booking's row lock (its partner is joined in the same query)
    booking = BookingFactory(status=S.REQUESTED)
    locked = threading.Event()
    others_committed = threading.Event()

    def worker() -> bool:
        with transaction.atomic():
            lock_booking(booking.pk)
            locked.set()
            # Holds the lock until the other transaction is done, or gives up after 5 s.
            return others_committed.wait(timeout=5)

    def customer_and_timeline() -> str:
        assert locked.wait(timeout=10)
        with transaction.atomic():
            # a new booking on the same partner and offer, and a timeline row of the locked
            # booking: both commit with foreign key checks on rows the worker has locked
            BookingFactory(offer=booking.offer, partner=booking.partner, customer=booking.customer)
            record_event(booking, "support.note", actor=Actor.SUPPORT, summary="noted")
        others_committed.set()
        return "committed"

    # when both run
    results = run_concurrently(worker, customer_and_timeline)

    # then the other transaction committed while the worker still held its lock
    assert results == [True, "committed"], results
    assert BookingEvent.objects.filter(booking=booking, kind="support.note").count() == 1
