"""Work queued after commit gets no copy from the sweeps that find it due while it waits, and a
step run inline, with no message, is still queued by the first sweep past its grace (invariant 3).

On the real Redis broker, with a real Dramatiq worker on the `reconciliation` queue only: the
partner's queue and the payments queue are not served (their workers behind, as under a backlog
of API customers on a small machine). Bookings are made through the booking service, so their
first message is the one the service queues after commit. Before that message held the claim
the sweeper takes for the same work, every booking whose row came due while it waited got one
copy from the sweeper (QA: 1,033 payment runs queued for 514 payments due): here two messages
per booking, where there is one now.

A step that runs in a worker's thread right after its commit (`bookings.ports.next_steps_inline`)
has no message and holds no claim, so if that worker dies the sweeper queues the step at the
first sweep that finds its row due, however deep the queue ahead of it (a fix that held the
sweeper back while a queue's front was younger than the row left such bookings waiting about
twice the backlog, and was reverted).
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from bookings.models import Booking
from bookings.services import BookingRequest, booking_create
from bookings.states import BookingState
from config.claims import CLAIM_OPTION, claim_key, send_holding
from config.redis_client import redis_client
from partners import messages
from payments import messages as payment_messages
from payments.models import Payment, PaymentStatus
from reconciliation.services.sweeper import SWEEP_QUEUE, SweepReport, sweep
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.reconciliation.conftest import queued
from tests.reconciliation.paying import paying_booking
from tests.sandbox_process import free_port

pytestmark = pytest.mark.integration

BOOKINGS = 4
SWEEPS = 3
S = BookingState


def _book(offer, *, pays: bool) -> Booking:
    """A customer's booking through the booking service: its first message queued after commit
    (a paying one's payment run, else its submission)."""
    start = timezone.now().date() + timedelta(days=40)
    return booking_create(
        customer=UserFactory(),
        request=BookingRequest(
            offer_id=offer.pk,
            start_date=start,
            end_date=start + timedelta(days=3),
            guests=2,
            payment_method="pm_card_visa" if pays else "",
        ),
        idempotency_key=uuid.uuid4().hex,
    ).booking


def _submissions(broker, offer) -> Counter:
    """Submissions waiting on the partner's queue, per booking id."""
    waiting = queued(broker, offer.partner.queue_name)
    return Counter(m.args[0] for m in waiting if m.actor_name == messages.SUBMIT_BOOKING)


def _runs(broker) -> Counter:
    """Payment runs waiting on the payments queue, per booking id."""
    waiting = queued(broker, payment_messages.PAYMENTS_QUEUE)
    return Counter(m.args[0] for m in waiting if m.actor_name == payment_messages.PAYMENT_RUN)


def _one_each(bookings: list[Booking]) -> dict[str, int]:
    return {str(b.pk): 1 for b in bookings}


def _sweep_when_due(broker, bookings: list[Booking]) -> SweepReport:
    """The checks the bookings' rows (and their payments') wait for come due, a sweep runs, its
    per-booking steps run, and the window of its own claims passes (so the next sweep takes
    them up again)."""
    ids = [b.pk for b in bookings]
    Booking.objects.filter(pk__in=ids, next_check_at__isnull=False).update(next_check_at=timezone.now())
    Payment.objects.filter(booking_id__in=ids, next_check_at__isnull=False).update(
        next_check_at=timezone.now()
    )
    report = sweep()
    broker.join(SWEEP_QUEUE, timeout=30_000)
    windows = [f"{broker.namespace}:reconciliation:queued:due:{pk}" for pk in ids]
    wait_until(lambda: not redis_client().exists(*windows), what="the sweep's windows to pass")
    return report


def test_work_queued_after_commit_gets_no_copy_from_the_sweeps_that_find_it_due_while_it_waits(
    broker, workers_on, offer, settings
):
    settings.RECONCILE_SYNC_AGE_S = 0  # due again at every sweep
    settings.RECONCILE_CLAIM_TTL_S = 0.2  # the sweep's own windows pass between sweeps
    plain = [_book(offer, pays=False) for _ in range(BOOKINGS)]
    paying = [_book(offer, pays=True) for _ in range(BOOKINGS)]
    with workers_on(SWEEP_QUEUE):  # the partner's and the payments queues are not served
        reports = [_sweep_when_due(broker, plain + paying) for _ in range(SWEEPS)]

    # Every sweep found every booking (and every payment) due ...
    assert [r.due for r in reports] == [{S.REQUESTED: BOOKINGS, S.AWAITING_PAYMENT: BOOKINGS}] * SWEEPS
    # ... and queued nothing: one message per booking (two each before: the first and one copy)
    assert _submissions(broker, offer) == _one_each(plain)
    assert _runs(broker) == _one_each(paying)
    assert [r.payments_queued for r in reports] == [0] * SWEEPS
    # each the first, holding the claim the sweeper takes for the same work
    for message in queued(broker, offer.partner.queue_name) + queued(broker, payment_messages.PAYMENTS_QUEUE):
        assert CLAIM_OPTION in message.options


def test_a_step_run_inline_whose_worker_died_is_queued_at_the_first_sweep_past_its_grace(
    broker, workers_on, offer, settings
):
    settings.RECONCILE_SYNC_AGE_S = 0
    settings.RECONCILE_CLAIM_TTL_S = 0.2
    # A backlog: bookings whose first messages wait on both queues, queued before the rows below
    backlog = [_book(offer, pays=False) for _ in range(BOOKINGS)]
    paying_backlog = [_book(offer, pays=True) for _ in range(BOOKINGS)]
    grace = timezone.now() + timedelta(minutes=1)
    # A worker that held the money died after the commit, before the submission it ran inline:
    # requested, checked after its grace, and no message anywhere
    held = paying_booking(
        status=S.REQUESTED,
        payment_status=PaymentStatus.AUTHORIZED,
        booking_fields={"offer": offer, "next_check_at": grace},
    ).booking
    # One that confirmed a booking died before the capture it ran inline: the payment is due
    # after its grace (`ports.money_follows`), and no message anywhere
    confirmed = paying_booking(
        status=S.CONFIRMED,
        payment_status=PaymentStatus.AUTHORIZED,
        booking_fields={"offer": offer, "confirmed_shown_at": timezone.now()},
        next_check_at=grace,
    ).booking

    with workers_on(SWEEP_QUEUE):
        early = sweep()  # before the grace: nothing of theirs is due
        broker.join(SWEEP_QUEUE, timeout=30_000)
        assert (early.due, early.payments_queued) == ({}, 0)
        # The grace passes (for the backlog too): the first sweep queues both steps
        report = _sweep_when_due(broker, [*backlog, *paying_backlog, held, confirmed])

    assert report.due == {S.REQUESTED: BOOKINGS + 1, S.AWAITING_PAYMENT: BOOKINGS}
    assert _submissions(broker, offer) == _one_each([*backlog, held])
    assert _runs(broker) == _one_each([*paying_backlog, confirmed])
    assert report.payments_queued == 1


@contextlib.contextmanager
def _our_keys_redis_not_answering():
    """Our keys' client pointed at a port nothing listens on, as a Redis that went away."""
    client = redis_client()
    pool = client.connection_pool
    client.connection_pool = redis.ConnectionPool.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        yield
    finally:
        client.connection_pool.disconnect()
        client.connection_pool = pool


def test_a_claim_redis_does_not_take_is_the_send_s_error_and_nothing_is_queued(broker, offer, make_booking):
    """A Redis that does not take the claim would not take the message: its error is the send's,
    after one wait, not two (the caller's fallback applies: the sweeper queues the step once its
    row is due)."""
    booking = make_booking(status=S.REQUESTED)

    with _our_keys_redis_not_answering(), pytest.raises(redis.ConnectionError):
        messages.send_for_booking(messages.SUBMIT_BOOKING, booking.pk)

    assert queued(broker, offer.partner.queue_name) == []


def test_a_claim_left_standing_by_a_failed_send_is_deleted_by_the_next_claim_taken(
    broker, offer, make_booking
):
    """The claim was taken, then the send failed and Redis did not answer the claim's deletion
    either: a claim with no message behind it would hold the sweeper back for its TTL. The next
    claim this process takes deletes it."""
    first, second = make_booking(status=S.REQUESTED), make_booking(status=S.REQUESTED)
    key = claim_key(messages.step_claim(messages.SUBMIT_BOOKING, first.pk))

    gone = contextlib.ExitStack()

    def send_failing_while_redis_goes(claim: dict) -> None:
        gone.enter_context(_our_keys_redis_not_answering())  # until the send_holding below returns
        raise redis.ConnectionError("the broker went away mid-send")

    with gone, pytest.raises(redis.ConnectionError):
        send_holding(messages.step_claim(messages.SUBMIT_BOOKING, first.pk), send_failing_while_redis_goes)
    assert redis_client().exists(key)  # standing, with no message behind it

    messages.send_for_booking(messages.SUBMIT_BOOKING, second.pk)

    assert not redis_client().exists(key)
    [message] = queued(broker, offer.partner.queue_name)
    assert message.args == (str(second.pk),) and CLAIM_OPTION in message.options


def test_an_owed_sync_is_sent_at_the_sweep_though_a_delayed_follow_up_holds_the_step_s_claim(
    broker, offer, make_booking
):
    """An operator's sync owed during a Redis outage is "now": a poll queued for five minutes
    later, which holds the step's claim while it waits, does not stand in for it."""
    from reconciliation.models import OwedMessage

    booking = make_booking(status=S.CONFIRMED)
    messages.send_for_booking(messages.SYNC_BOOKING, booking.pk, delay_s=300)
    OwedMessage.objects.create(
        booking=booking, actor_name=messages.SYNC_BOOKING, owed_at=timezone.now() - timedelta(minutes=5)
    )

    sweep()

    ready = [m for m in queued(broker, offer.partner.queue_name) if not m.queue_name.endswith(".DQ")]
    assert [(m.actor_name, m.args) for m in ready] == [(messages.SYNC_BOOKING, (str(booking.pk),))]
    assert OwedMessage.objects.get().sent_at is not None
