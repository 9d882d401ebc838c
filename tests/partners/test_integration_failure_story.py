"""The failure story at the top of docs/design.md, end to end, made impossible.

1. We call the partner to create a reservation. The call times out, but the partner did create it.
2. A naive retry would create a second reservation. Ours is a retry with the same key: the
   partner answers with the reservation it already made.
3. The first call's late callback arrives; it must not overwrite our status.
4. At the end: one live reservation at the partner, the booking confirmed, nothing regressed,
   and the booking's timeline tells the story in order.
"""

from __future__ import annotations

import pytest

from bookings.states import BookingState
from partners.models import Capability, Operation, PartnerAttempt, PartnerObservation
from tests.helpers import wait_until
from tests.partners.conftest import assert_at_rest, book, timeline, transitions, wait_for_status

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_failure_story_timeout_retry_late_callback(harness, partner_worker):
    # a partner that honours idempotency keys, sends webhooks, confirms asynchronously, and
    # offers no lookup: after an ambiguous create the only way to learn is to retry
    h = harness(
        "reference",
        capabilities=[Capability.IDEMPOTENCY_KEYS, Capability.WEBHOOKS, Capability.ASYNC_CONFIRMATION],
    )
    h.faults(timeout_after_commit_rate=1, async_confirm_delay_s=0.3, webhook_delay_s=[2.5, 2.5])
    partner_worker(h.partner)

    # 1. the customer books; the worker's create commits at the partner, then the call times out
    booking = book(h, key="customer-own-key-1")
    wait_until(lambda: h.truth(booking), what="the partner to commit the create")
    h.faults(timeout_after_commit_rate=0)  # the partner answers again (its webhooks stay late)

    # 2. the retry (same Idempotency-Key) gets the reservation already made; 3. late callbacks
    wait_for_status(booking, S.CONFIRMED)
    wait_until(
        lambda: PartnerObservation.objects.filter(booking=booking, source="webhook").count() == 2,
        what="the late callbacks",
    )

    # 4. one live reservation at the partner, made once and confirmed by it
    assert_at_rest(h, booking, S.CONFIRMED)
    (held,) = h.truth(booking)
    assert held["status"] == "confirmed"
    assert held["idempotency_key"] == booking.partner_key != "customer-own-key-1"
    assert [(v["version"], v["status"], v["cause"]) for v in held["history"]] == [
        (1, "pending", "create"),
        (2, "confirmed", "settle"),
    ]
    first, retry = PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE).order_by("id")
    assert (first.outcome, first.http_status, first.resolution) == (
        "ambiguous",
        None,
        "partner_holds_reservation",
    )
    assert (retry.outcome, retry.http_status) == ("ok", 200)  # 200: the same reservation, replayed
    assert first.idempotency_key == retry.idempotency_key == booking.partner_key
    assert h.sandbox.stats()["calls"]["POST /v1/reservations"] == 2

    # nothing regressed: the late pending callback was ignored as stale
    assert transitions(booking) == [
        ("", "requested"),
        ("requested", "submitting"),
        ("submitting", "unknown"),
        ("unknown", "confirmed"),
    ]
    # The two late callbacks are due 0.3 s apart: a loaded machine may deliver them either way round.
    answer, *callbacks = (
        PartnerObservation.objects.filter(booking=booking)
        .order_by("id")
        .values_list("source", "version", "result")
    )
    assert answer == ("response", 2, "applied")  # the retry's answer
    assert sorted(callbacks) == [
        ("webhook", 1, "stale"),  # the first call's late callback (pending)
        ("webhook", 2, "duplicate"),  # the confirmation's callback
    ]

    # and the timeline tells it
    told = timeline(booking)
    assert told[:8] == [
        "booking.requested",  # customer
        "booking.submitting",  # worker: attempt committed before the call
        "partner.attempt.ambiguous",  # the call timed out after the partner committed
        "booking.unknown",  # fenced: no new create until we know
        "partner.attempt.ok",  # the retry with the same key: the partner's own reservation
        "partner.observation.applied",
        "booking.confirmed",
        "sync.completed",
    ]
    assert sorted(told[8:]) == [
        "partner.observation.duplicate",  # callback v2 (confirmed): already known
        "partner.observation.stale",  # late callback v1 (pending): ignored
    ]
    events = {e.kind: e for e in booking.events.all()}
    assert events["booking.confirmed"].actor == "worker"
    assert events["partner.observation.stale"].actor == "webhook"
    assert events["partner.observation.stale"].partner_time is not None
    assert events["booking.unknown"].data == {
        "strategy": "replay_idempotent_create",
        "customer_view": {"from": "pending", "to": "pending", "message": "checking", "status_version": 3},
    }
    # what the customer saw: pending (received, placing, checking), then confirmed, in order
    assert booking.customer_status == "confirmed"
    assert events["booking.confirmed"].data["customer_view"]["status_version"] == booking.status_version == 4
