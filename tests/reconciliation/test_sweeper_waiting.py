"""The sweeper tells a message lost from one still waiting in its queue (reconciliation.queue_heads).

On the real Redis broker, with nobody serving the partner's, the payments and the notifications
queues (their workers starved behind a backlog): work whose message was queued when its row was
made due, and which waited past its grace, is not queued again while that message waits (before,
the sweep queued one copy of each beside it: a backlog's queues held about twice the work). Once
Redis has lost the queues (the embedded one keeps no data across a restart), the next sweep
queues every item again, whatever was queued since, also when Redis lost them a moment after they
were queued (within their grace) and newer work waits before their copies.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from functools import partial
from uuid import uuid4

import dramatiq
import pytest
from django.utils import timezone

from bookings import notifications
from bookings.models import Booking, Notification
from bookings.states import BookingState
from partners import messages
from payments import messages as payment_messages
from payments.models import Payment, PaymentStatus
from reconciliation import tasks
from reconciliation.queue_heads import read_front
from reconciliation.services.sweeper import SWEEP_QUEUE, sweep
from tests.factories import NotificationFactory
from tests.reconciliation.conftest import queued

S = BookingState
pytestmark = pytest.mark.django_db

EACH = 3  # items of each kind
GRACE_S = 2.0  # every grace involved: short, so that the test waits past it for real


@pytest.fixture
def short_graces(settings) -> None:
    settings.BOOKING_SUBMIT_GRACE = timedelta(seconds=GRACE_S)
    settings.PAYMENTS_RUN_GRACE_S = GRACE_S
    settings.NOTIFICATION_REQUEUE_AFTER_S = GRACE_S
    settings.RECONCILE_SYNC_AGE_S = 0  # a swept booking is due again at once


def _backlog(make_booking) -> dict[str, list]:
    """Items of each kind, made due as the services do (the row due after its grace, its message
    queued as soon as it is written), their messages left waiting: nobody serves these queues."""

    def due_after_grace() -> dict:
        return {"next_check_at": timezone.now() + timedelta(seconds=GRACE_S)}

    def booking(status: str, send) -> Booking:
        made = make_booking(status=status, **due_after_grace())
        send(made)
        return made

    def paying(made: Booking) -> None:
        Payment.objects.create(
            booking=made,
            amount=Decimal("360.00"),
            currency="EUR",
            payment_method="pm_card_visa",
            status=PaymentStatus.PENDING,
            **due_after_grace(),
        )
        payment_messages.send_run(made.pk)

    def mail() -> Notification:
        owed = NotificationFactory(booking=make_booking(status=S.CONFIRMED))
        notifications.queue(owed.pk)
        return owed

    submit = partial(messages.send_for_booking, messages.SUBMIT_BOOKING)
    cancel = partial(messages.send_for_booking, messages.CANCEL_BOOKING)
    return {
        "submissions": [booking(S.REQUESTED, lambda b: submit(b.pk)) for _ in range(EACH)],
        "cancellations": [booking(S.CANCEL_REQUESTED, lambda b: cancel(b.pk)) for _ in range(EACH)],
        "paying": [booking(S.AWAITING_PAYMENT, paying) for _ in range(EACH)],
        "mails": [mail() for _ in range(EACH)],
    }


def _sweep_and_run_its_steps(broker, partner, django_capture_on_commit_callbacks):
    """One sweep, and its per-booking steps run as the reconciliation queue's worker would."""
    with django_capture_on_commit_callbacks(execute=True):
        report = sweep(partner=partner)
    for message in queued(broker, SWEEP_QUEUE):
        with django_capture_on_commit_callbacks(execute=True):
            tasks.sweep_bookings.fn(*message.args)
    broker.flush(SWEEP_QUEUE)
    return report


def _queued(broker, queue_name: str, actor_name: str) -> Counter:
    return Counter(str(m.args[0]) for m in queued(broker, queue_name) if m.actor_name == actor_name)


def _messages_of(broker, partner_queue: str, items: dict[str, list]) -> dict[str, Counter]:
    """The messages waiting for the items, per kind, by item id (others on the queues left out)."""
    waiting = {
        "submissions": _queued(broker, partner_queue, messages.SUBMIT_BOOKING),
        "cancellations": _queued(broker, partner_queue, messages.CANCEL_BOOKING),
        "paying": _queued(broker, payment_messages.PAYMENTS_QUEUE, payment_messages.PAYMENT_RUN),
        "mails": _queued(broker, notifications.NOTIFICATIONS_QUEUE, notifications.SEND_NOTIFICATION),
    }
    return {kind: Counter({str(i.pk): waiting[kind][str(i.pk)] for i in items[kind]}) for kind in items}


def _each_once(items: dict[str, list]) -> dict[str, Counter]:
    return {kind: Counter({str(item.pk): 1 for item in items[kind]}) for kind in items}


def _redis_lost(broker) -> None:
    """What a restart of a Redis without persistence does to the run: every queue and claim gone."""
    broker.flush_all()
    claims = list(broker.client.scan_iter(f"{broker.namespace}:reconciliation:queued:*"))
    if claims:
        broker.client.delete(*claims)


def test_work_waiting_in_a_backlog_gets_no_copy_and_work_lost_with_redis_is_queued_again(
    broker, partner, partner_queue, make_booking, short_graces, django_capture_on_commit_callbacks
):
    # Given work of each kind whose message waits on its queue, past its grace
    items = _backlog(make_booking)
    time.sleep(GRACE_S + 0.5)

    # When the sweeper runs
    report = _sweep_and_run_its_steps(broker, partner, django_capture_on_commit_callbacks)

    # Then the bookings were due, and nothing was queued beside the messages still waiting
    assert _messages_of(broker, partner_queue, items) == _each_once(items)
    assert sum(report.due.values()) == 3 * EACH
    assert (report.payments_queued, report.notifications_requeued) == (0, 0)
    assert _queued(broker, partner_queue, messages.SYNC_BOOKING) == {}

    # When Redis loses its queues, and work queued since then waits on each of them
    _redis_lost(broker)
    messages.send_for_booking(messages.SYNC_BOOKING, make_booking(status=S.PENDING_PARTNER).pk)
    payment_messages.send_run(uuid4())
    notifications.queue(NotificationFactory(booking=make_booking(status=S.CONFIRMED)).pk)
    report = _sweep_and_run_its_steps(broker, partner, django_capture_on_commit_callbacks)

    # Then the next sweep queued every lost item again, once
    assert (report.payments_queued, report.notifications_requeued) == (EACH, EACH)
    assert _messages_of(broker, partner_queue, items) == _each_once(items)


def test_work_lost_with_redis_moments_after_it_was_queued_is_queued_again_behind_newer_work(
    broker, partner, partner_queue, make_booking, short_graces, django_capture_on_commit_callbacks
):
    # Given work of each kind whose messages Redis lost a moment after they were queued, and
    # newer work queued on each queue since, all of it waiting
    items = _backlog(make_booking)
    _redis_lost(broker)
    _backlog(make_booking)
    time.sleep(GRACE_S + 0.5)

    # When the sweeper runs, once the lost work's grace has passed
    report = _sweep_and_run_its_steps(broker, partner, django_capture_on_commit_callbacks)

    # Then every lost item is queued again, once, though newer messages still wait before it
    assert _messages_of(broker, partner_queue, items) == _each_once(items)
    assert (report.payments_queued, report.notifications_requeued) == (EACH, EACH)


def test_a_queue_s_front_is_read_as_when_it_joined_the_queue_and_what_it_holds(broker, partner_queue):
    assert read_front(partner_queue) is None  # empty: the grace alone decides

    before = timezone.now()
    first, second = str(uuid4()), str(uuid4())
    messages.send(messages.SYNC_BOOKING, first, queue_name=partner_queue)
    messages.send(messages.SUBMIT_BOOKING, second, queue_name=partner_queue)
    front = read_front(partner_queue)
    assert before - timedelta(milliseconds=1) <= front.joined_at <= timezone.now()
    assert front.items == {(messages.SYNC_BOOKING, first), (messages.SUBMIT_BOOKING, second)}

    # A message that waited on the delay queue joined this one when it was due there (its eta).
    broker.flush(partner_queue)
    made = dramatiq.Message(
        queue_name=partner_queue, actor_name=messages.SYNC_BOOKING, args=("x",), kwargs={}, options={}
    )
    eta_ms = made.message_timestamp + 60_000
    broker.do_enqueue(partner_queue, "moved", made.copy(options={"eta": eta_ms}).encode())
    assert read_front(partner_queue).joined_at.timestamp() == eta_ms / 1000

    # A front that cannot be read leaves the grace to decide, as an empty queue does.
    broker.flush(partner_queue)
    broker.do_enqueue(partner_queue, "garbled", b"not a message")
    assert read_front(partner_queue) is None
