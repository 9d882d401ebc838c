"""Poison partner data is quarantined, never looped on: a signed webhook whose content cannot be
parsed or is out of range is `invalid` (400 at receipt, or set aside by the worker on its first
run), never retried, counted in partner health, and the booking it names is synced from the
partner instead. Processing runs at most its configured tries; the sweeper re-queues only what a
retry can still change."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from bookings.states import BookingState
from partners.messages import send_inbound_event
from partners.models import (
    InboundEvent,
    InboundState,
    Operation,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
)
from partners.services import webhooks
from partners.services.webhooks import inbound_event_process
from reconciliation.selectors.partner_health import partner_health
from reconciliation.services.sweeper import sweep
from tests.factories import InboundEventFactory
from tests.helpers import queued_messages, wait_until
from tests.partners.conftest import book, wait_for_status
from tests.partners.test_webhooks import reservation, signed

S = BookingState
OUT_OF_RANGE = [
    pytest.param({"version": 2**70}, "version", id="version-2^70"),
    pytest.param({"version": -1}, "version", id="version-negative"),
    pytest.param({"updated_at": "9999-12-31T23:59:59Z"}, "updated_at", id="year-9999"),
    pytest.param({"created_at": "0001-01-01T00:00:00Z"}, "created_at", id="year-1"),
    pytest.param({"total_price": "12,5 Euro"}, "total_price", id="price-not-a-number"),
    pytest.param({"currency": "EURO"}, "currency", id="currency"),
    pytest.param({"currency": "XYZ"}, "currency", id="currency-made-up"),  # not a mismatch
]


def webhook_body(booking_reference: str, **overrides) -> bytes:
    data = {**reservation("R-poison", client_reference=booking_reference), **overrides}
    return json.dumps({"type": "reservation.updated", "data": data}).encode()


@pytest.fixture
def post(client, ref_partner):
    def send(raw: bytes, headers: dict):
        return client.post(
            f"/partners/{ref_partner.code}/webhooks/", data=raw, content_type="application/json", **headers
        )

    return send


def syncs_queued(broker, partner) -> list[tuple]:
    return [(m.actor_name, m.args) for m in queued_messages(broker, partner.queue_name)]


def health_of(partner):
    return next(row for row in partner_health() if row.partner.pk == partner.pk)


@pytest.mark.parametrize(("override", "field"), OUT_OF_RANGE)
def test_a_signed_webhook_with_a_value_out_of_range_is_refused_at_receipt_as_invalid(
    post, ref_partner, make_booking, broker, clean_queues, django_capture_on_commit_callbacks, override, field
):
    clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = webhook_body(booking.reference, **override)

    with django_capture_on_commit_callbacks(execute=True):
        response = post(raw, signed(raw))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_body" and field in error["message"]
    event = InboundEvent.objects.get()
    assert (event.state, event.signature_valid, event.booking_id) == (InboundState.INVALID, True, booking.pk)
    assert field in event.error
    assert PartnerReservation.objects.count() == 0 and PartnerObservation.objects.count() == 0
    assert syncs_queued(broker, ref_partner) == [("sync_booking", (str(booking.pk),))]
    assert queued_messages(broker, "webhooks") == []  # nothing for a worker to retry
    health = health_of(ref_partner)
    assert health.deliveries["invalid"] == 1
    assert any("content we cannot use" in problem for problem in health.problems)


def test_a_stored_delivery_that_cannot_be_read_is_set_aside_on_its_first_run(
    ref_partner, make_booking, broker, clean_queues, django_capture_on_commit_callbacks
):
    # stored before the bounds existed: the worker reads it with the same parser, and refuses it
    clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    event = InboundEventFactory(
        partner=ref_partner,
        state=InboundState.RECEIVED,
        raw_body=webhook_body(booking.reference, version=2**70),
    )

    with django_capture_on_commit_callbacks(execute=True):
        inbound_event_process(event.pk)
    inbound_event_process(event.pk)  # the actor again (at-least-once delivery)

    event.refresh_from_db()
    assert (event.state, event.tries, event.booking_id) == (InboundState.INVALID, 1, booking.pk)
    assert "version out of range" in event.error
    assert syncs_queued(broker, ref_partner) == [("sync_booking", (str(booking.pk),))]
    assert PartnerObservation.objects.count() == 0


def test_processing_runs_at_most_its_tries_then_the_delivery_is_set_aside(
    ref_partner, make_booking, monkeypatch, settings
):
    settings.WEBHOOK_PROCESS_MAX_TRIES = 3
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = webhook_body(booking.reference)
    event = InboundEventFactory(partner=ref_partner, state=InboundState.RECEIVED, raw_body=raw)

    def database_gone(**kwargs):  # the edge: the database failing under the one door
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(webhooks, "observation_apply", database_gone)
    for _ in range(3):  # each run of the actor, Dramatiq's retries or the sweeper's re-queues alike
        with pytest.raises(OperationalError):
            inbound_event_process(event.pk)
    inbound_event_process(event.pk)  # a fourth message: not applied, not raised

    event.refresh_from_db()
    assert (event.state, event.tries, event.booking_id) == (InboundState.FAILED, 3, booking.pk)
    assert event.error.startswith("gave up after 3 tries: OperationalError: server closed")
    assert health_of(ref_partner).deliveries["failed"] == 1


def test_the_sweeper_requeues_only_received_deliveries(ref_partner, broker, settings):
    broker.flush("webhooks")
    stale = timezone.now() - timedelta(seconds=settings.RECONCILE_INBOUND_STALE_S + 5)
    waiting = InboundEventFactory(partner=ref_partner, state=InboundState.RECEIVED, received_at=stale)
    for state in (InboundState.INVALID, InboundState.FAILED, InboundState.REJECTED, InboundState.PROCESSED):
        InboundEventFactory(partner=ref_partner, state=state, received_at=stale)

    report = sweep(partner=ref_partner)

    assert report.inbound_requeued == 1
    assert [(m.actor_name, m.args) for m in queued_messages(broker, "webhooks")] == [
        ("process_inbound_event", (waiting.pk,))
    ]
    broker.flush("webhooks")


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_sets_poison_aside_once_and_nothing_loops(
    ref_partner, make_booking, broker, partner_worker, clean_queues
):
    clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    poison = InboundEventFactory(
        partner=ref_partner, state=InboundState.RECEIVED, raw_body=webhook_body(booking.reference, version=-1)
    )
    partner_worker(ref_partner)

    send_inbound_event(poison.pk)

    wait_until(
        lambda: InboundEvent.objects.get(pk=poison.pk).state == InboundState.INVALID, what="quarantine"
    )
    poison.refresh_from_db()
    assert poison.tries == 1
    assert queued_messages(broker, "webhooks") == [] and queued_messages(broker, "webhooks.DQ") == []
    assert sweep(partner=ref_partner).inbound_requeued == 0


# --- a partner that signs garbage ----------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_partner_sending_out_of_range_values_is_refused_each_time_and_its_booking_goes_to_support(
    harness, partner_worker
):
    """Its webhooks are refused at receipt and its booking synced at once; its answers to that
    sync are refused too, so the booking, whose truth cannot be read, goes to support."""
    h = harness("reference")
    h.faults(async_confirm_delay_s=40, time_scale=20)  # settles in 2 s; redeliveries come fast
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.PENDING_PARTNER)
    h.faults(garbage_values_rate=1.0)  # from now on every answer and webhook carries one

    wait_until(
        lambda: InboundEvent.objects.filter(partner=h.partner, state=InboundState.INVALID).count() >= 3,
        what="the settlement's webhook refused, and refused again when redelivered",
        timeout_s=30,
    )

    # the creation's webhook came before the garbage and was applied; every later one was refused
    refused = list(InboundEvent.objects.filter(partner=h.partner, state=InboundState.INVALID).order_by("id"))
    assert {(d.signature_valid, d.booking_id, d.tries) for d in refused} == {(True, booking.pk, 0)}
    assert not InboundEvent.objects.filter(partner=h.partner, state=InboundState.RECEIVED).exists()
    wait_until(  # the partner records each answer once it has it
        lambda: Counter(a["response_code"] for a in h.sandbox.webhook_attempts())[400] >= 3,
        what="the partner to have been answered 400 three times",
    )
    webhook_versions = PartnerObservation.objects.filter(booking=booking, source="webhook")
    assert set(webhook_versions.values_list("version", flat=True)) <= {1}  # none after the garbage
    first = refused[0].received_at
    pulled = wait_until(
        lambda: PartnerAttempt.objects.filter(
            booking=booking, operation__in=[Operation.GET, Operation.LOOKUP], started_at__gte=first
        ).first(),
        what="the booking's truth pulled from the partner",
    )
    assert pulled.started_at - first < timedelta(seconds=5)  # at once, not at the next sweep
    health = health_of(h.partner)
    assert health.deliveries["invalid"] >= len(refused)  # more may have come since
    assert any("content we cannot use" in problem for problem in health.problems)
    wait_for_status(booking, S.NEEDS_ATTENTION, timeout_s=20)
    booking.refresh_from_db()
    assert booking.attention_reason == "partner_data_refused"
