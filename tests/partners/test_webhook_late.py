"""Authentic but late webhooks: a delivery whose signature verifies but whose timestamp is out of
tolerance is not applied (the tolerance stays: a replayed capture looks the same), but the
booking it names is synced from the partner at once; it is counted, and partner health shows a
partner whose deliveries keep arriving out of tolerance with its measured skew."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bookings.states import BookingState
from partners.models import InboundEvent, InboundResult, InboundState, PartnerObservation
from reconciliation.selectors.partner_health import partner_health
from reconciliation.selectors.timeline import booking_timeline
from tests.helpers import queued_messages, wait_until
from tests.partners.conftest import assert_at_rest, book, wait_for_status
from tests.partners.test_webhooks import body, signed

S = BookingState


@pytest.fixture
def post(client, ref_partner):
    def send(raw: bytes, headers: dict):
        url = f"/partners/{ref_partner.code}/webhooks/"
        return client.post(url, data=raw, content_type="application/json", **headers)

    return send


def health_of(partner):
    return next(row for row in partner_health() if row.partner.pk == partner.pk)


def test_an_authentic_late_delivery_is_not_applied_but_syncs_the_booking_it_names_at_once(
    post, ref_partner, make_booking, broker, clean_queues, django_capture_on_commit_callbacks
):
    queue = clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)

    with django_capture_on_commit_callbacks(execute=True):
        response = post(raw, signed(raw, at=datetime.now(UTC) + timedelta(minutes=7)))

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "timestamp_out_of_tolerance"
    assert "ahead of our clock" in error["message"] and "synced from the partner" in error["message"]
    event = InboundEvent.objects.get()
    assert (event.state, event.result, event.signature_valid, event.booking_id) == (
        InboundState.REJECTED,
        InboundResult.LATE,
        True,
        booking.pk,
    )
    assert bytes(event.raw_body) == raw  # whole, so support can still replay it
    assert PartnerObservation.objects.count() == 0
    booking.refresh_from_db()
    assert booking.status == S.PENDING_PARTNER
    assert [(m.actor_name, m.args) for m in queued_messages(broker, queue)] == [
        ("sync_booking", (str(booking.pk),))
    ]
    [row] = [row for row in booking_timeline(booking) if row.source == "inbound"]
    assert (row.kind, row.mark) == ("webhook.late", "late")


def test_late_redeliveries_pull_the_truth_at_most_once_per_interval(
    post, ref_partner, make_booking, broker, clean_queues, django_capture_on_commit_callbacks
):
    queue = clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)
    headers = signed(raw, event_id="msg_skewed", at=datetime.now(UTC) - timedelta(minutes=9))

    with django_capture_on_commit_callbacks(execute=True):
        answers = [post(raw, headers).status_code for _ in range(3)]  # the partner's redeliveries

    assert answers == [401, 401, 401]
    assert InboundEvent.objects.filter(result=InboundResult.LATE, event_id="msg_skewed").count() == 3
    assert len(queued_messages(broker, queue)) == 1


def test_a_late_delivery_naming_no_booking_of_ours_is_recorded_and_syncs_nothing(
    post, ref_partner, broker, clean_queues, django_capture_on_commit_callbacks
):
    queue = clean_queues(ref_partner)
    raw = body(ref="R-unknown", client_reference="BK-NOBODY")

    with django_capture_on_commit_callbacks(execute=True):
        response = post(raw, signed(raw, at=datetime.now(UTC) - timedelta(hours=3)))

    assert response.status_code == 401
    event = InboundEvent.objects.get()
    assert (event.result, event.booking_id) == (InboundResult.LATE, None)
    assert "synced" not in event.error
    assert queued_messages(broker, queue) == []


def test_partner_health_counts_late_deliveries_with_their_measured_skew(post, ref_partner, make_booking):
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    for minutes in (6, 8, 10):
        raw = body(client_reference=booking.reference)
        post(raw, signed(raw, at=datetime.now(UTC) + timedelta(minutes=minutes)))

    health = health_of(ref_partner)

    assert health.deliveries["late"] == 3
    # The median: 8 minutes ahead, less the stamp's truncated second and the post's own time (a
    # loaded machine can take seconds between signing and receipt).
    assert 475_000 <= health.late_skew_ms <= 480_500
    assert any("signed outside the time tolerance" in problem for problem in health.problems)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_partner_clock_minutes_ahead_gets_its_bookings_confirmed_by_the_sync_its_webhooks_trigger(
    harness, partner_worker
):
    h = harness("reference")
    # Its clock ten minutes ahead: every webhook is signed out of tolerance. It confirms 2 s after
    # the create (40 s scaled), by webhook only: without the sync the delivery triggers, nothing
    # here would ask it again (no sweeper runs).
    h.faults(clock_skew_s=600, async_confirm_delay_s=40, time_scale=20)
    partner_worker(h.partner)

    booking = book(h)

    wait_for_status(booking, S.CONFIRMED, timeout_s=20)
    late = InboundEvent.objects.filter(partner=h.partner, result=InboundResult.LATE).order_by("received_at")
    assert late.exists() and {(e.signature_valid, e.booking_id) for e in late} == {(True, booking.pk)}
    wait_until(  # the partner records each answer once it has it
        lambda: 401 in {a["response_code"] for a in h.sandbox.webhook_attempts()}, what="the 401 recorded"
    )
    sources = set(PartnerObservation.objects.filter(booking=booking).values_list("source", flat=True))
    assert "webhook" not in sources and "lookup" in sources  # the pulled truth, never the late body
    assert_at_rest(h, booking, S.CONFIRMED)
    health = wait_until(lambda: (row := health_of(h.partner)).deliveries["late"] and row, what="health")
    assert 590_000 <= health.late_skew_ms <= 601_000
