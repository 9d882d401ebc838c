"""The honest-status contract against a real sandbox partner and a real worker: a booking that
expires while its create is fenced is never `failed` before the partner's reservation is
cancelled and verified; a confirmed booking the partner cancels is `disrupted`, never `pending`.

What the customer was shown, change by change, is read back from the timeline (each numbered
change rides on a row) and from the customer's Redis channel."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from bookings import live
from bookings.models import Booking, BookingEvent, Notification
from bookings.services import BookingRequest, booking_create
from bookings.states import BookingState
from config.redis_client import redis_client
from partners.models import PartnerReservation
from partners.services.submission import submission_run
from reconciliation.services.sweeper import booking_due_run
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.partners.conftest import assert_at_rest, book, status_of, timeline

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def shown(booking: Booking) -> tuple[str, str, int]:
    return Booking.objects.values_list("customer_status", "customer_message", "status_version").get(
        pk=booking.pk
    )


def shown_history(booking: Booking) -> list[tuple[str, str, int]]:
    """Every change the customer was shown after the first view, in order, from the timeline."""
    rows = BookingEvent.objects.filter(booking=booking, data__has_key="customer_view").order_by("id")
    return [
        (
            row.data["customer_view"]["to"],
            row.data["customer_view"]["message"],
            row.data["customer_view"]["status_version"],
        )
        for row in rows
    ]


def row_index(booking: Booking, kind: str, **data) -> int:
    rows = list(BookingEvent.objects.filter(booking=booking).order_by("id"))
    return next(
        i
        for i, row in enumerate(rows)
        if row.kind == kind and all(row.data.get(k) == v for k, v in data.items())
    )


def test_expired_while_fenced_shows_releasing_until_the_partner_released_it(harness, partner_worker):
    # given a create the partner commits and never answers (the call times out: a fence),
    # made by this test with no worker running, so nothing resolves the fence yet
    h = harness("reference")
    h.faults(timeout_after_commit_rate=1)
    booking = book(h)
    submission_run(booking.pk)
    assert status_of(booking) == S.UNKNOWN
    assert len(h.live(booking)) == 1

    # when its deadline passes and the sweeper expires it
    Booking.objects.filter(pk=booking.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    booking_due_run(booking.pk)

    # then the customer is told we are making sure the partner releases it, not "failed"
    assert status_of(booking) == S.EXPIRED
    assert shown(booking) == ("pending", "releasing", 4)
    assert len(h.live(booking)) == 1

    # when a worker learns what the partner holds and cancels it
    h.faults(timeout_after_commit_rate=0)
    partner_worker(h.partner)
    wait_until(lambda: shown(booking)[0] == "failed", what="the booking to show failed", timeout_s=30)

    # then "failed" came only once the partner's cancellation was verified, numbered once
    assert h.live(booking) == []
    assert PartnerReservation.objects.get(booking=booking).compensated_at is not None
    assert shown_history(booking) == [
        ("pending", "submitting", 2),
        ("pending", "checking", 3),
        ("pending", "releasing", 4),
        ("failed", "not_confirmed_in_time", 5),
    ]
    failed_at = row_index(booking, "customer.view_changed")
    assert row_index(booking, "partner.compensation.verified") < failed_at
    assert_at_rest(h, booking, S.EXPIRED)
    assert list(Notification.objects.filter(booking=booking).values_list("status_version", "kind")) == [
        (5, "not_confirmed")
    ]


def test_a_confirmed_booking_the_partner_cancels_is_disrupted_never_pending(harness, partner_worker):
    # given a partner that cancels every confirmed reservation on its own, a second later
    h = harness("reference")
    h.faults(partner_cancel_rate=1, partner_cancel_delay_s=[1, 1])
    partner_worker(h.partner)
    customer = UserFactory()
    listener = redis_client().pubsub()
    listener.subscribe(live.customer_channel(customer.pk))
    wait_until(
        lambda: (m := listener.get_message(timeout=0.1)) and m["type"] == "subscribe", what="subscribed"
    )

    # when the customer books, the partner confirms, then cancels
    offer = h.partner.offers.get()
    start = timezone.now().date() + timedelta(days=40)
    booking = booking_create(
        customer=customer,
        request=BookingRequest(
            offer_id=offer.pk, start_date=start, end_date=start + timedelta(days=3), guests=2
        ),
        idempotency_key=f"disrupted-{uuid.uuid4().hex}",
    ).booking
    published: list[dict] = []

    def disrupted_published() -> bool:
        message = listener.get_message(timeout=0.1)
        if message and message["type"] == "message":
            published.append(json.loads(message["data"]))
        return bool(published) and published[-1]["status"] == "disrupted"

    try:
        wait_until(disrupted_published, what="the disruption published", timeout_s=30)
    finally:
        listener.close()

    # then the customer saw confirmed, then disrupted (what the partner did), never pending again
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_cancelled_confirmed")
    history = shown_history(booking)
    statuses = [status for status, _, _ in history]
    assert statuses[statuses.index("confirmed") :] == ["confirmed", "disrupted"]
    assert history[-1][1] == "disrupted_partner_cancelled"
    assert [version for _, _, version in history] == list(range(2, 2 + len(history)))
    # every view was published once, the booking's first (as it was created) included
    assert [(p["status"], p["message_code"], p["status_version"]) for p in published] == [
        ("pending", "received", 1),
        *history,
    ]
    assert published[-1]["reference"] == booking.reference
    assert list(Notification.objects.filter(booking=booking).values_list("kind", flat=True)) == [
        "confirmed",
        "disrupted",
    ]
    assert "booking.needs_attention" in timeline(booking)
