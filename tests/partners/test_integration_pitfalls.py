"""The stack traps that docs/design.md names, each asserted against the real stack: actors are
idempotent, nothing leaves a rolled-back transaction, no partner call inside a transaction, and the key we
send the partner is ours and shows up in every log line about the call."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from bookings.services import BookingRequest, booking_create
from bookings.states import BookingState
from config.logging import ContextFilter, KeyValueFormatter
from partners import messages, tasks
from partners.models import Operation, Outcome, PartnerAttempt, PartnerReservation
from partners.services.calls import PartnerCallInTransaction
from partners.services.compensation import reservation_compensate
from partners.services.submission import submission_run
from partners.services.sync import booking_sync
from tests.factories import PartnerAttemptFactory, PartnerReservationFactory, TokenFactory, UserFactory
from tests.helpers import queued_messages, wait_until
from tests.partners.conftest import assert_at_rest, status_of, timeline, transitions, wait_for_status

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
CREATE_CALL = {"reference": "POST /v1/reservations", "legacy": "POST /api/bookings"}
BOTH = pytest.mark.parametrize("profile", ["reference", "legacy"])


def partner_calls(h) -> dict[str, int]:
    return h.sandbox.stats()["calls"]


@BOTH
def test_submit_message_delivered_twice_creates_once(harness, partner_worker, profile):
    h = harness(profile)
    h.faults(latency_ms=[300, 300])  # both deliveries overlap with the call
    booking = h.booking(status=S.REQUESTED)
    partner_worker(h.partner)

    messages.send_for_booking(messages.SUBMIT_BOOKING, booking.pk)
    messages.send_for_booking(messages.SUBMIT_BOOKING, booking.pk)  # at-least-once: the same message again

    wait_for_status(booking, S.CONFIRMED)
    wait_until(
        lambda: h.broker.client.llen(f"{h.broker.namespace}:{h.partner.queue_name}") == 0, what="both taken"
    )
    # Taken is not finished: on a busy machine the second delivery's read of the partner may still
    # be out (a lookup, not a create), so wait for the booking's calls to end before judging it.
    wait_until(
        lambda: not booking.partner_attempts.filter(outcome="in_flight").exists(), what="its calls to end"
    )
    assert_at_rest(h, booking, S.CONFIRMED)
    assert PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE).count() == 1
    assert partner_calls(h)[CREATE_CALL[profile]] == 1
    assert len(h.truth(booking)) == 1


@BOTH
def test_every_actor_run_twice_does_nothing_extra(harness, profile):
    h = harness(profile)
    booking = h.booking(status=S.REQUESTED)

    tasks.submit_booking.fn(str(booking.pk))
    tasks.submit_booking.fn(str(booking.pk))
    assert status_of(booking) == S.CONFIRMED
    after_submit = (timeline(booking), partner_calls(h))

    tasks.sync_booking.fn(str(booking.pk))
    first_sync = timeline(booking)
    tasks.sync_booking.fn(str(booking.pk))
    # a second sync reads again (its rows are on the timeline) but changes nothing
    assert timeline(booking)[len(first_sync) :] == first_sync[len(after_submit[0]) :]
    assert transitions(booking)[-1] == ("submitting", "confirmed")
    assert partner_calls(h).get(CREATE_CALL[profile]) == 1

    # cancel: the customer's cancellation runs twice, and so does each compensation
    with transaction.atomic():
        from bookings.services import booking_request_cancel

        booking_request_cancel(booking_id=booking.pk, actor="customer")
    tasks.cancel_booking.fn(str(booking.pk))
    tasks.cancel_booking.fn(str(booking.pk))
    reservation = PartnerReservation.objects.get(booking=booking)
    tasks.compensate_reservation.fn(reservation.pk)
    tasks.compensate_reservation.fn(reservation.pk)

    assert status_of(booking) == S.CANCELLED
    assert PartnerAttempt.objects.filter(booking=booking, operation=Operation.CANCEL).count() == 1
    assert timeline(booking).count("partner.compensation.verified") == 1
    assert timeline(booking).count("booking.cancelled") == 1
    assert_at_rest(h, booking, S.CANCELLED)


def test_nothing_reaches_the_broker_from_a_rolled_back_transaction(harness):
    h = harness("reference")
    offer = h.partner.offers.get()
    start = timezone.now().date() + timedelta(days=40)
    request = BookingRequest(
        offer_id=offer.pk, start_date=start, end_date=start + timedelta(days=3), guests=2
    )

    with pytest.raises(RuntimeError), transaction.atomic():
        booking_create(customer=UserFactory(), request=request, idempotency_key="rolled-back")
        raise RuntimeError("the surrounding transaction fails after the booking was made")

    assert queued_messages(h.broker, h.partner.queue_name) == []
    assert h.partner.bookings.count() == 0

    created = booking_create(customer=UserFactory(), request=request, idempotency_key="committed")
    assert [(m.actor_name, m.args) for m in queued_messages(h.broker, h.partner.queue_name)] == [
        ("submit_booking", (str(created.booking.pk),))
    ]


@BOTH
def test_a_partner_call_inside_a_transaction_is_refused_before_anything_is_sent(harness, profile):
    h = harness(profile)
    booking = h.booking(status=S.REQUESTED)

    with pytest.raises(PartnerCallInTransaction), transaction.atomic():
        submission_run(booking.pk)

    assert status_of(booking) == S.REQUESTED  # the claim rolled back with the transaction
    assert PartnerAttempt.objects.count() == 0
    assert CREATE_CALL[profile] not in partner_calls(h)

    unknown = h.booking(status=S.UNKNOWN)
    PartnerAttemptFactory(booking=unknown, fence=True)
    with pytest.raises(PartnerCallInTransaction), transaction.atomic():
        booking_sync(unknown.pk)
    reservation = PartnerReservationFactory(  # an orphan whose cancel was decided
        booking=None,
        partner=h.partner,
        partner_ref="1",
        learned_from="lookup",
        compensation_requested_at=timezone.now(),
        compensation_reason="orphan",
    )
    with pytest.raises(PartnerCallInTransaction), transaction.atomic():
        reservation_compensate(reservation.pk)
    assert partner_calls(h) == {}


def test_the_key_sent_is_the_bookings_never_the_customers(harness, partner_worker, client):
    h = harness("reference")
    partner_worker(h.partner)
    customer = UserFactory()
    token = TokenFactory(user=customer)
    start = timezone.now().date() + timedelta(days=40)

    response = client.post(
        "/api/v1/bookings",
        {
            "offer": h.partner.offers.get().pk,
            "start_date": start.isoformat(),
            "end_date": (start + timedelta(days=3)).isoformat(),
            "guests": 2,
        },
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
        HTTP_IDEMPOTENCY_KEY="customer-chosen-key-42",
    )
    assert response.status_code == 202, response.content
    booking = h.partner.bookings.get()
    wait_for_status(booking, S.CONFIRMED)

    (held,) = h.truth(booking)
    assert held["idempotency_key"] == booking.partner_key == f"bk-{booking.pk.hex}"
    assert held["client_reference"] == booking.reference
    assert "customer-chosen-key-42" not in {held["idempotency_key"], held["client_reference"]}
    assert set(PartnerAttempt.objects.filter(booking=booking).values_list("idempotency_key", flat=True)) == {
        booking.partner_key
    }


@BOTH
def test_log_lines_about_the_call_carry_the_booking_reference_and_our_key(harness, caplog, profile):
    h = harness(profile)
    booking = h.booking(status=S.REQUESTED)
    caplog.handler.addFilter(ContextFilter())  # what the console handler does in LOGGING

    with caplog.at_level(logging.INFO, logger="partners"):
        submission_run(booking.pk)

    about_the_call = [r for r in caplog.records if r.name.startswith("partners.")]
    assert {r.getMessage() for r in about_the_call} >= {"partner call", "partner observation"}
    for record in about_the_call:
        assert record.ctx["booking"] == booking.reference, record.getMessage()
        assert record.ctx["partner_key"] == booking.partner_key, record.getMessage()
    line = KeyValueFormatter().format(next(r for r in about_the_call if r.name == "partners.services.calls"))
    assert f"booking={booking.reference}" in line
    assert f"partner_key={booking.partner_key}" in line
    assert "request_id=" in line and "outcome=ok" in line
    assert h.sandbox.stats()["calls"][CREATE_CALL[profile]] == 1


def test_a_failing_attempt_is_still_recorded_before_and_after_the_call(harness):
    h = harness("reference")
    h.faults(error_5xx_rate=1)
    booking = h.booking(status=S.REQUESTED)

    submission_run(booking.pk)

    attempt = PartnerAttempt.objects.get(booking=booking)
    assert (attempt.operation, attempt.outcome, attempt.idempotency_key) == (
        Operation.CREATE,
        Outcome.AMBIGUOUS,
        booking.partner_key,
    )
    assert attempt.http_status in (500, 502, 503, 504)
    assert attempt.started_at < attempt.finished_at
    assert attempt.partner_time is not None  # the partner's Date header
    assert status_of(booking) == S.UNKNOWN
