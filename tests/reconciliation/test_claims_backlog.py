"""A partner's backlog is not multiplied by the sweeps that run while it drains (invariant 3).

On the real Redis broker, with real Dramatiq workers: the `reconciliation` queue is served, the
partner's queue is not (its worker stalled, as when a worker host is cut off or starved). Sweep
after sweep finds the same bookings due again, past the window of the sweep's own claims; each
sweep message runs and wants to submit again. Before the step's claim was held until a worker
takes the message up, every round added one more submission per booking to the stalled queue
(the cluster chaos runs processed up to 11 per booking); now the queue holds one each, and the
claim ends when the submission is taken up.
"""

from __future__ import annotations

from collections import Counter

from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from config.claims import CLAIM_OPTION
from config.redis_client import redis_client
from partners import messages
from reconciliation.services.sweeper import SWEEP_QUEUE, sweep
from tests.helpers import wait_until
from tests.reconciliation.conftest import queued

BOOKINGS = 5
ROUNDS = 4


def _sweeper_submissions(broker, queue_name: str) -> Counter:
    """Submissions the sweeper's due path queued on a partner's queue, per booking id."""
    return Counter(
        m.args[0]
        for m in queued(broker, queue_name)
        if m.actor_name == messages.SUBMIT_BOOKING and CLAIM_OPTION in m.options
    )


def _sweep_round(broker, bookings: list[Booking]) -> None:
    """Make the bookings due, sweep, and wait until the sweep's messages have run and the
    window of its claims has passed (so the next round queues them again)."""
    Booking.objects.filter(pk__in=[b.pk for b in bookings]).update(next_check_at=timezone.now())
    report = sweep()
    assert report.due == {BookingState.REQUESTED: BOOKINGS}
    broker.join(SWEEP_QUEUE, timeout=30_000)
    claims = [f"{broker.namespace}:reconciliation:queued:due:{b.pk}" for b in bookings]
    wait_until(lambda: not redis_client().exists(*claims), what="the sweep's claims to expire")


def test_a_stalled_partner_queue_holds_one_sweeper_submission_per_booking_however_many_sweeps(
    broker, workers_on, offer, make_booking, settings
):
    settings.RECONCILE_SYNC_AGE_S = 0  # due again at every sweep
    settings.RECONCILE_CLAIM_TTL_S = 0.2  # the sweep's own claims lapse between rounds
    queue_name = offer.partner.queue_name
    broker.flush(queue_name)
    bookings = [make_booking(status=BookingState.REQUESTED) for _ in range(BOOKINGS)]

    with workers_on(SWEEP_QUEUE):  # the partner's queue has no worker: it only grows
        for _ in range(ROUNDS):
            _sweep_round(broker, bookings)

    assert _sweeper_submissions(broker, queue_name) == {str(b.pk): 1 for b in bookings}


def test_the_step_claim_ends_when_a_worker_takes_the_message_up(
    broker, workers_on, offer, make_booking, settings
):
    settings.RECONCILE_SYNC_AGE_S = 0
    settings.RECONCILE_CLAIM_TTL_S = 0.2
    queue_name = offer.partner.queue_name
    broker.flush(queue_name)
    bookings = [make_booking(status=BookingState.REQUESTED) for _ in range(BOOKINGS)]
    step_claims = [
        f"{broker.namespace}:reconciliation:queued:{messages.SUBMIT_BOOKING}:{b.pk}" for b in bookings
    ]
    with workers_on(SWEEP_QUEUE):
        _sweep_round(broker, bookings)
    tokens = dict(zip(step_claims, redis_client().mget(step_claims), strict=True))
    assert all(tokens.values())
    sent = {m.message_id for m in queued(broker, queue_name)}

    with workers_on(queue_name):  # the stalled worker is back (its partner refuses connections)
        wait_until(
            lambda: not sent & {m.message_id for m in queued(broker, queue_name)},
            what="the submissions to be taken up",
        )
        # The claims they held end. Each failed try's retry, queued by the submission itself,
        # holds the step's claim anew (a token of its own) while it waits.
        wait_until(
            lambda: all(redis_client().get(key) != token for key, token in tokens.items()),
            what="their claims to end",
        )

    with workers_on(SWEEP_QUEUE):
        _sweep_round(broker, [Booking.objects.get(pk=b.pk) for b in bookings])
    assert _sweeper_submissions(broker, queue_name) == {str(b.pk): 1 for b in bookings}
