"""An orphan the one door links to a booking automatically (our create's answer names it) against
the sandbox partner: its cancel, decided when the partner's webhook named no booking of ours, is
withdrawn when none has been sent yet, so the booking keeps its own reservation; once one was
sent, the reservation stays an orphan and the booking follows what the partner holds, never
failed as if the partner had cancelled it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from bookings.models import Booking
from bookings.states import BookingState
from partners.connectors import connector_for
from partners.connectors.base import CallResult
from partners.models import (
    InboundEvent,
    Operation,
    OrphanCase,
    OrphanClosing,
    Outcome,
    PartnerAttempt,
    PartnerReservation,
    ReservationRole,
)
from partners.services.calls import attempt_call
from partners.services.compensation import reservation_compensate
from partners.services.submission import _claim, create_request, record_create_outcome
from partners.services.sync import booking_sync
from partners.services.webhooks import inbound_event_process
from reconciliation.services.sweeper import booking_due_run, sweep
from tests.partners.conftest import WEBHOOK_SECRET, Harness, assert_at_rest, status_of, timeline

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def made_unanswered(h: Harness) -> tuple[Booking, PartnerAttempt, CallResult]:
    """A booking whose create the partner has made, its answer still in the worker's hands."""
    h.faults(webhook_delay_s=[30, 30])  # the partner's own webhook, naming the booking, comes too late
    booking = h.booking(status=S.REQUESTED)
    claimed = _claim(booking.pk)
    assert isinstance(claimed, tuple)
    row, attempt = claimed
    request = create_request(row)
    answer = attempt_call(
        attempt, lambda: connector_for(h.partner).create(request, idempotency_key=row.partner_key)
    )
    assert answer.outcome == Outcome.OK and answer.reservation is not None
    return booking, attempt, answer


def webhook_without_its_reference(h: Harness, live_server, made: dict[str, Any]) -> PartnerReservation:
    """The partner's webhook of the reservation it made, with the client reference left out, sent to
    our receiver and applied as the webhooks worker would: it names no booking of ours."""
    data = {name: value for name, value in made.items() if name != "client_reference"}
    raw = json.dumps({"type": "reservation.updated", "timestamp": made["updated_at"], "data": data}).encode()
    event_id, at = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    response = requests.post(
        f"{live_server.url}/partners/{h.partner.code}/webhooks/",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "webhook-id": event_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(WEBHOOK_SECRET).sign(event_id, at, raw.decode()),
        },
        timeout=5,
    )
    assert response.status_code == 202, response.text
    inbound_event_process(InboundEvent.objects.get(event_id=event_id).pk)
    orphan = PartnerReservation.objects.get(partner=h.partner, partner_ref=made["id"])
    assert (orphan.booking_id, orphan.role, orphan.compensation_reason) == (
        None,
        ReservationRole.ORPHAN,
        "orphan",
    )
    assert orphan.compensation_requested_at is not None  # its cancel decided, and queued
    return orphan


def cancels(reservation: PartnerReservation) -> int:
    return PartnerAttempt.objects.filter(reservation=reservation, operation=Operation.CANCEL).count()


def test_an_orphan_our_create_names_before_its_cancel_is_sent_is_the_bookings_and_stays_live(
    harness, live_server, settings
):
    # given the partner made our booking's reservation, and its webhook without our reference came
    # before our create's answer: an orphan, its cancel decided
    h = harness("reference")
    booking, attempt, answer = made_unanswered(h)
    orphan = webhook_without_its_reference(h, live_server, answer.reservation.raw)

    # when our create's answer names it ours, before any worker took its cancel up
    record_create_outcome(booking.pk, attempt, answer)

    # then it is the booking's, its cancel withdrawn, its case closed as linked, saying so
    orphan.refresh_from_db()
    assert (orphan.booking_id, orphan.role) == (booking.pk, ReservationRole.PRIMARY)
    assert (orphan.compensation_requested_at, orphan.compensation_reason) == (None, "")
    case = OrphanCase.objects.get(reservation=orphan)
    assert (case.state, case.closed_because, case.booking_id) == ("closed", OrphanClosing.LINKED, booking.pk)
    linked = case.events.get(kind="orphan.linked")
    assert linked.data["cancel_withdrawn"] is True
    assert linked.summary == (
        f"{orphan.partner_ref} linked to {booking.reference}; its cancel, not sent yet, withdrawn; "
        "case closed"
    )
    assert status_of(booking) == S.CONFIRMED

    # and the cancel's message, taken up now, cancels nothing, nor does the sweeper send it again
    reservation_compensate(orphan.pk)
    assert cancels(orphan) == 0
    settings.RECONCILE_SYNC_AGE_S = settings.PARTNER_RETRY_MAX_S = 0
    assert sweep(dry_run=True, partner=h.partner).compensations_requeued == 0
    assert_at_rest(h, booking, S.CONFIRMED)  # the partner holds it live, as the booking's


def test_an_orphan_whose_cancel_was_sent_stays_one_and_its_booking_is_not_failed_as_cancelled(
    harness, live_server
):
    # given the same orphan, whose cancel a worker took up first: made at the partner, verified
    h = harness("reference")
    booking, attempt, answer = made_unanswered(h)
    orphan = webhook_without_its_reference(h, live_server, answer.reservation.raw)
    reservation_compensate(orphan.pk)
    orphan.refresh_from_db()
    assert orphan.status == "cancelled" and orphan.compensated_at is not None

    # when our create's answer names it ours
    record_create_outcome(booking.pk, attempt, answer)

    # then it is not linked: we cancelled it, the partner did not, so the booking is not failed
    # as `partner_cancelled`; its timeline says why it does not take the reservation
    orphan.refresh_from_db()
    assert (orphan.booking_id, orphan.role, cancels(orphan)) == (None, ReservationRole.ORPHAN, 1)
    assert status_of(booking) == S.SUBMITTING
    refused = booking.events.get(kind="orphan.not_linked")
    assert refused.summary == (
        f"The partner answers {orphan.partner_ref} for {booking.reference}, but it was found an orphan "
        f"and its cancel was already sent: not linked, {booking.reference} follows what the partner holds"
    )
    assert OrphanCase.objects.get(reservation=orphan).events.filter(kind="orphan.not_linked").exists()

    # when a sync reads it again: still not linked, said once
    booking_sync(booking.pk)
    assert booking.partner_reservations.count() == 0
    assert timeline(booking).count("orphan.not_linked") == 1

    # then, nothing live at the partner for it, the booking expires at its deadline
    Booking.objects.filter(pk=booking.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    booking_due_run(booking.pk)
    assert status_of(booking) == S.EXPIRED
    assert h.live(booking) == []
