"""The honest-status contract against a real sandbox partner and a real worker: a booking that
expires while its create is fenced is never `failed` before the partner's reservation is
cancelled and verified; a confirmed booking the partner cancels is `disrupted`, never `pending`;
a cancel the partner will not make stays `cancelling`, with support, told and mailed once; a
booking shown `failed` again after a late listing is not mailed "could not be confirmed" twice.

What the customer was shown, change by change, is read back from the timeline (each numbered
change rides on a row) and from the customer's Redis channel."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
import requests
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from bookings import live
from bookings.models import Actor, Booking, BookingEvent, Notification
from bookings.notifications import compose
from bookings.services import BookingRequest, booking_create, booking_request_cancel
from bookings.states import BookingState
from config.redis_client import redis_client
from partners.models import PartnerReservation
from partners.services.compensation import booking_cancel_run, reservation_compensate
from partners.services.listing import change_listing_walk
from partners.services.submission import submission_run
from partners.services.sync import booking_sync
from reconciliation.services.support import support_action_run
from reconciliation.services.support.permissions import Operator
from reconciliation.services.support.previews import preview
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


def mailed(booking: Booking) -> list[tuple[int, str]]:
    return list(Notification.objects.filter(booking=booking).values_list("status_version", "kind"))


def test_an_unconfirmed_booking_the_partner_will_not_cancel_stays_cancelling_with_support(harness, settings):
    # given a booking the partner holds pending (it would confirm it only half a minute later)
    settings.PARTNER_COMPENSATION_MAX_TRIES = 1
    h = harness("reference")
    h.faults(async_confirm_delay_s=30)
    booking = book(h)
    submission_run(booking.pk)
    assert status_of(booking) == S.PENDING_PARTNER

    # when the customer cancels it and the partner refuses every call from then on: the cancel's
    # one try and the read that would verify it are refused, and support is handed the booking
    h.faults(rate_limit_rate=1)
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    booking_cancel_run(booking.pk)
    reservation = PartnerReservation.objects.get(booking=booking)
    reservation_compensate(reservation.pk)

    # then the customer is told what is true: they asked to cancel, it is not done, support has it;
    # still `cancelling`, never `pending` again, and mailed that once (they did not cause it)
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "compensation_failed")
    assert len(h.live(booking)) == 1
    assert shown_history(booking) == [
        ("pending", "submitting", 2),
        ("pending", "partner_confirming", 3),
        ("cancelling", "cancelling", 4),
        ("cancelling", "cancel_with_support", 5),
    ]
    assert mailed(booking) == [(5, "cancel_not_done")]
    mail = compose(Notification.objects.get(booking=booking))
    assert mail.subject == f"Your booking {booking.reference} is not cancelled yet"
    assert "The partner has not confirmed your cancellation, so our support team is taking it up" in mail.body
    assert "nor to cancel again" in mail.body

    # and neither the API nor the page offers to cancel again; asking again changes nothing
    api = APIClient()
    api.force_authenticate(booking.customer)
    answer = api.get(f"/api/v1/bookings/{booking.reference}")
    assert (answer.json()["status"], answer.json()["message_code"]) == ("cancelling", "cancel_with_support")
    assert (answer.json()["links"]["cancel"], answer.json()["if_cancelled"]) == (None, None)
    assert answer.json()["deadline"] is None and "Retry-After" in answer  # support's news is awaited
    page = Client()
    page.force_login(booking.customer)
    shown_page = page.get(f"/bookings/{booking.reference}/").content.decode()
    assert "our support team is taking your cancellation up with them" in shown_page
    assert "Waiting for our support team" in shown_page
    assert f"/bookings/{booking.reference}/cancel/" not in shown_page
    assert "cannot be cancelled now" in page.get(f"/bookings/{booking.reference}/cancel/").content.decode()
    again = api.post(f"/api/v1/bookings/{booking.reference}/cancel")
    assert (again.status_code, again.json()["status_version"]) == (202, 5)
    assert page.post(f"/bookings/{booking.reference}/cancel/").status_code == 302
    booking.refresh_from_db()
    assert (booking.status, booking.status_version) == (S.NEEDS_ATTENTION, 5)
    assert mailed(booking) == [(5, "cancel_not_done")]

    # when support gets the partner to cancel it, the sync records that, and support resolves it
    h.faults(rate_limit_rate=0)
    requests.post(
        f"{h.sandbox.base_url}/v1/reservations/{reservation.partner_ref}/cancel",
        headers=h.sandbox.auth,
        timeout=5,
    ).raise_for_status()
    booking_sync(booking.pk, actor=Actor.SUPPORT, actor_label="ops:alice")
    assert h.live(booking) == []
    assert shown(booking) == ("cancelling", "cancel_with_support", 5)  # support's to settle still
    support_action_run(
        "resolve",
        booking_id=booking.pk,
        operator=Operator(label="ops:alice"),
        token="resolve-cancelled",
        outcome="cancelled",
        note="The partner cancelled it on the phone.",
    )

    # then it is cancelled after all, and mailed so
    assert shown(booking) == ("cancelled", "cancelled", 6)
    assert mailed(booking) == [(5, "cancel_not_done"), (6, "cancelled")]


def test_a_booking_shown_failed_again_after_a_late_listing_is_mailed_once(harness):
    # given a booking the partner declined: shown failed, and mailed so
    h = harness("legacy")
    h.faults(reject_rate=1)
    booking = book(h)
    submission_run(booking.pk)
    status, message, failed_version = shown(booking)
    assert (status_of(booking), status, message) == (S.REJECTED, "failed", "declined")
    assert mailed(booking) == [(failed_version, "not_confirmed")]

    # when the partner's change listing shows a reservation for it nobody knew of (a create whose
    # answer was lost): failed is no longer true, so the customer is told it is being released
    h.faults(reject_rate=0)
    stray = requests.post(
        f"{h.sandbox.base_url}/api/bookings",
        json={
            "ref": booking.reference,
            "item": booking.offer.product_id,
            "from": booking.start_date.isoformat(),
            "to": booking.end_date.isoformat(),
            "pax": booking.guests,
            "amount": str(booking.total_price),
            "ccy": booking.currency,
        },
        headers=h.sandbox.auth,
        timeout=5,
    ).json()
    change_listing_walk(h.partner.pk)
    assert shown(booking)[:2] == ("pending", "releasing")

    # and once the partner cancelled it and our read verified that, failed again
    late = PartnerReservation.objects.get(booking=booking, partner_ref=str(stray["booking_no"]))
    reservation_compensate(late.pk)
    assert h.live(booking) == []
    assert shown_history(booking)[-3:] == [
        ("failed", "declined", failed_version),
        ("pending", "releasing", failed_version + 1),
        ("failed", "declined", failed_version + 2),
    ]

    # then the second failed told the customer nothing their last mail did not: one mail
    assert mailed(booking) == [(failed_version, "not_confirmed")]


def test_support_s_cancel_drives_the_cancel_that_did_not_complete_again(harness, partner_worker, settings):
    # given an unconfirmed booking whose customer's cancel the partner refused through its one
    # try and the verifying read: support has it, the customer is told it is not cancelled yet
    settings.PARTNER_COMPENSATION_MAX_TRIES = 1
    h = harness("reference")
    h.faults(async_confirm_delay_s=30)
    booking = book(h)
    submission_run(booking.pk)
    h.faults(rate_limit_rate=1)
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    booking_cancel_run(booking.pk)
    reservation = PartnerReservation.objects.get(booking=booking)
    reservation_compensate(reservation.pk)
    assert shown(booking)[:2] == ("cancelling", "cancel_with_support")
    assert len(h.live(booking)) == 1

    # when the partner answers again and support cancels on the customer's behalf (the console's
    # Cancel, its preview naming the cancel it drives again)
    h.faults(rate_limit_rate=0)
    effects = preview("cancel", booking, live=False).effects
    assert any(f"Cancel {reservation.partner_ref} (pending) again" in step for step in effects)
    support_action_run(
        "cancel", booking_id=booking.pk, operator=Operator(label="ops:alice"), token="cancel-stalled"
    )
    partner_worker(h.partner)

    # then that cancel is made and verified with tries of its own, and the booking is cancelled:
    # it does not go back to support
    wait_until(lambda: status_of(booking) == S.CANCELLED, what="the booking to be cancelled", timeout_s=30)
    assert h.live(booking) == []
    assert shown(booking)[:2] == ("cancelled", "cancelled")
    assert [kind for _, kind in mailed(booking)] == ["cancel_not_done", "cancelled"]
