"""Webhook faults of the reference partner (the legacy protocol has no webhooks), end to end:
the sandbox signs and delivers to our live server, a real worker applies them."""

from __future__ import annotations

import pytest
import requests

from bookings.states import BookingState
from partners.models import (
    InboundEvent,
    InboundResult,
    InboundState,
    Operation,
    PartnerAttempt,
    PartnerObservation,
)
from partners.services.sync import booking_sync
from tests.helpers import wait_until
from tests.partners.conftest import WEBHOOK_SECRET, assert_at_rest, book, timeline, wait_for_status

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def events_of(booking) -> list[InboundEvent]:
    return list(InboundEvent.objects.filter(booking=booking).order_by("received_at", "id"))


def webhook_observations(booking) -> list[tuple[int, str]]:
    return list(
        PartnerObservation.objects.filter(booking=booking, source="webhook")
        .order_by("received_at", "id")
        .values_list("version", "result")
    )


def delivered(h, count: int) -> list[dict]:
    """Wait until the sandbox has delivered `count` webhook attempts (2xx or not)."""
    return wait_until(
        lambda: len(a := h.sandbox.webhook_attempts()) >= count and a, what=f"{count} deliveries"
    )


def all_delivered(h, events: int) -> bool:
    """The partner's outbox is done (every copy delivered) and we have processed everything."""
    by_status = h.sandbox.stats()["webhooks"]["events_by_status"]
    return (
        by_status == {"delivered": events}
        and not InboundEvent.objects.filter(state=InboundState.RECEIVED).exists()
    )


def test_duplicated_webhooks_are_acknowledged_and_applied_once(harness, partner_worker):
    h = harness("reference")
    h.faults(webhook_duplicate_rate=1, async_confirm_delay_s=0.3, time_scale=10)
    partner_worker(h.partner)

    booking = book(h)
    wait_for_status(booking, S.CONFIRMED)
    # every event (v1 pending, v2 confirmed) is delivered two or three times under one id
    wait_until(lambda: all_delivered(h, 2), what="every copy delivered and processed")

    assert_at_rest(h, booking, S.CONFIRMED)
    deliveries = [a for a in h.sandbox.webhook_attempts() if a["response_code"] in (200, 202)]
    originals = InboundEvent.objects.filter(duplicate_of__isnull=True)
    copies = InboundEvent.objects.filter(duplicate_of__isnull=False)
    assert originals.count() == 2
    assert copies.count() == len(deliveries) - 2 >= 2
    assert {a["response_code"] for a in deliveries if a["attempt"] > 1} == {200}  # "already received"
    assert {e.result for e in copies} == {InboundResult.DUPLICATE}
    assert {e.duplicate_of_id for e in copies} <= {e.pk for e in originals}
    # The timeline says each event came again once, however many copies came.
    repeated = copies.values("duplicate_of").distinct().count()
    assert timeline(booking).count("webhook.duplicate") == repeated == 2
    assert PartnerObservation.objects.filter(booking=booking, source="webhook").count() == 2  # once each
    assert [(e.from_state, e.to_state) for e in booking.events.exclude(to_state="")][-1] == (
        "pending_partner",
        "confirmed",
    )


def test_out_of_order_webhooks_the_older_is_ignored_as_stale(harness, partner_worker):
    h = harness("reference")
    # v1 (pending) is held back until v2 (confirmed) has been delivered
    h.faults(webhook_reorder_rate=1, async_confirm_delay_s=0.5)
    partner_worker(h.partner, threads=1)  # one thread: applied in the order they arrive

    booking = book(h)
    wait_until(lambda: PartnerAttempt.objects.filter(booking=booking, outcome="ok").exists(), what="create")
    h.faults(webhook_reorder_rate=0)  # v2, enqueued when it settles, is not held
    wait_until(lambda: len(webhook_observations(booking)) == 2, what="both webhooks")

    assert_at_rest(h, booking, S.CONFIRMED)
    first, second = events_of(booking)
    assert (first.partner_timestamp, second.partner_timestamp) != (None, None)
    assert webhook_observations(booking) == [(2, "applied"), (1, "stale")]
    assert (first.result, second.result) == (InboundResult.APPLIED, InboundResult.STALE)
    assert timeline(booking)[-1] == "partner.observation.stale"
    assert booking.partner_reservations.get().version == 2


def test_late_webhooks_after_a_sync_change_nothing(harness, partner_worker):
    h = harness("reference")
    h.faults(async_confirm_delay_s=0.2, webhook_delay_s=[3, 3])
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.PENDING_PARTNER)
    wait_until(lambda: h.truth(booking)[0]["status"] == "confirmed", what="the partner to confirm")

    booking_sync(booking.pk)  # the sweeper's sync learns it first (GET)

    assert wait_for_status(booking, S.CONFIRMED)
    wait_until(lambda: len(webhook_observations(booking)) == 2, what="the late webhooks")
    assert_at_rest(h, booking, S.CONFIRMED)
    # v1 (pending) would have regressed it: stale; v2 (confirmed) is what we hold: duplicate
    assert webhook_observations(booking) == [(1, "stale"), (2, "duplicate")]
    kinds = timeline(booking)
    assert kinds.index("booking.confirmed") < kinds.index("partner.observation.duplicate")
    assert [(e.from_state, e.to_state) for e in booking.events.exclude(to_state="")] == [
        ("", "requested"),
        ("requested", "submitting"),
        ("submitting", "pending_partner"),
        ("pending_partner", "confirmed"),
    ]


def test_early_webhook_arrives_before_the_response_and_links_by_client_reference(harness, partner_worker):
    h = harness("reference")
    h.faults(webhook_early_rate=1)
    partner_worker(h.partner)

    booking = book(h)
    wait_for_status(booking, S.CONFIRMED)
    wait_until(lambda: len(PartnerObservation.objects.filter(booking=booking)) == 2, what="both answers")

    assert_at_rest(h, booking, S.CONFIRMED)
    create = PartnerAttempt.objects.get(booking=booking, operation=Operation.CREATE)
    (event,) = events_of(booking)
    assert event.received_at < create.finished_at  # it came before the POST's response
    reservation = booking.partner_reservations.get()
    assert reservation.client_reference == booking.reference
    # one of the two answers was applied, the other recognised as the same news
    assert sorted(PartnerObservation.objects.filter(booking=booking).values_list("result", flat=True)) == [
        "applied",
        "duplicate",
    ]
    assert [(e.from_state, e.to_state) for e in booking.events.exclude(to_state="")][-1] == (
        "submitting",
        "confirmed",
    )


def test_bad_signatures_are_refused_recorded_and_never_applied_until_the_secret_is_right(
    harness, partner_worker
):
    h = harness("reference")
    h.faults(async_confirm_delay_s=0.3, time_scale=50)  # the partner redelivers with short backoff
    h.partner.webhook_secret = "whsec_" + "V3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZzA="
    h.partner.save(update_fields=["webhook_secret"])
    partner_worker(h.partner)

    booking = book(h)
    wait_for_status(booking, S.PENDING_PARTNER)
    wait_until(lambda: InboundEvent.objects.filter(state=InboundState.REJECTED).count() >= 3, what="refusals")

    refused = InboundEvent.objects.filter(state=InboundState.REJECTED)
    assert {(e.signature_valid, e.result) for e in refused} == {(False, InboundResult.REJECTED)}
    assert webhook_observations(booking) == []
    assert booking.partner_reservations.get().version == 1  # v2 (confirmed) never applied
    assert {a["response_code"] for a in h.sandbox.webhook_attempts()} == {401}  # the partner saw it

    h.partner.webhook_secret = WEBHOOK_SECRET
    h.partner.save(update_fields=["webhook_secret"])

    wait_for_status(booking, S.CONFIRMED)
    assert_at_rest(h, booking, S.CONFIRMED)
    assert (2, "applied") in webhook_observations(booking)


def test_a_replayed_delivery_is_acknowledged_and_changes_nothing(harness, partner_worker, live_server):
    h = harness("reference")
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.CONFIRMED)
    (event,) = wait_until(
        lambda: (
            events_of(booking) if events_of(booking) and events_of(booking)[0].state == "processed" else None
        ),
        what="the webhook",
    )
    before = timeline(booking)

    # someone replays the captured request (same id, signature and body) within the tolerance
    response = requests.post(
        f"{live_server.url}/partners/{h.partner.code}/webhooks/",
        data=bytes(event.raw_body),
        headers={k: v for k, v in event.headers.items() if k.startswith("webhook-")},
        timeout=5,
    )

    assert (response.status_code, response.json()["status"]) == (200, "duplicate")
    copy = InboundEvent.objects.get(duplicate_of=event)
    assert copy.result == InboundResult.DUPLICATE
    assert timeline(booking) == [*before, "webhook.duplicate"]
    assert_at_rest(h, booking, S.CONFIRMED)


def test_webhook_for_a_reservation_nobody_asked_for_is_compensated(harness, partner_worker):
    h = harness("reference")
    partner_worker(h.partner)
    # a reservation made at the partner that no booking of ours wants
    stray = h.sandbox.request(
        "POST",
        "/v1/reservations",
        json={
            "client_reference": "BK-STRAY1",
            "product_id": "hotel-42-dbl",
            "start_date": "2027-03-01",
            "end_date": "2027-03-04",
            "guests": 2,
            "total_price": "360.00",
            "currency": "EUR",
        },
    ).json()

    wait_until(lambda: h.sandbox.truth("BK-STRAY1")[0]["status"] == "cancelled", what="the orphan's cancel")

    event = InboundEvent.objects.filter(reservation__partner_ref=stray["id"]).earliest("received_at")
    assert (event.result, event.booking_id) == (InboundResult.UNLINKED, None)
    orphan = event.reservation
    wait_until(lambda: orphan.__class__.objects.get(pk=orphan.pk).compensated_at, what="verification")
    orphan.refresh_from_db()
    assert (orphan.role, orphan.compensation_reason, orphan.status) == ("orphan", "orphan", "cancelled")
