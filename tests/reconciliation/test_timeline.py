"""The booking's one timeline, built from what the real services record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from bookings.models import Actor, Booking, Notification
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState
from bookings.timeline import record_event
from partners.connectors.base import CallResult, ReservationSnapshot
from partners.models import InboundEvent, Operation, Outcome, ReservationStatus
from partners.services.calls import attempt_close, attempt_open
from partners.services.submission import record_create_outcome
from partners.services.webhooks import inbound_event_process, inbound_event_receive
from reconciliation.apis import TimelineRowSerializer
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.services import support
from tests.factories import InboundEventFactory, PartnerAttemptFactory, PartnerReservationFactory

S = BookingState
pytestmark = pytest.mark.django_db
PARTNER_REF = "R-5a1e"


def _snapshot(booking: Booking, status: str, version: int, modified: datetime) -> ReservationSnapshot:
    raw = {
        "id": PARTNER_REF,
        "client_reference": booking.reference,
        "status": status,
        "version": version,
        "updated_at": modified.isoformat(),
    }
    return ReservationSnapshot(
        partner_ref=PARTNER_REF,
        client_reference=booking.reference,
        status=ReservationStatus(status),
        version=version,
        modified_at=modified,
        raw=raw,
    )


def _deliver(
    partner,
    booking: Booking,
    *,
    status: str,
    version: int,
    msg_id: str,
    secret: str | None = None,
    signed_at: datetime | None = None,
    written_at: datetime | None = None,
):
    written_at = written_at or timezone.now()
    body = json.dumps(
        {
            "type": "reservation.updated",
            "timestamp": written_at.isoformat(),
            "data": {
                "id": PARTNER_REF,
                "client_reference": booking.reference,
                "product_id": "hotel-42-dbl",
                "status": status,
                "version": version,
                "created_at": written_at.isoformat(),
                "updated_at": written_at.isoformat(),
            },
        }
    )
    signed_at = signed_at or datetime.now(tz=UTC)
    signature = Webhook(secret or partner.webhook_secret).sign(msg_id, signed_at, body)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        "webhook-signature": signature,
    }
    with transaction.atomic():
        receipt = inbound_event_receive(partner=partner, raw=body.encode(), headers=headers)
    if receipt.event is not None and receipt.status == 202:
        inbound_event_process(receipt.event.pk)
    return receipt


@pytest.fixture
def story(make_booking, partner, django_capture_on_commit_callbacks, support_user):
    """A booking's life through the real services: submit, respond, look up, webhooks (one applied,
    one redelivered, one stale, one forged, one authentic but signed ten minutes ahead), and a
    support sync."""
    booking = make_booking(status=S.REQUESTED)
    record_event(
        booking, "booking.requested", actor=Actor.CUSTOMER, actor_label="customer", to_state=S.REQUESTED
    )
    with django_capture_on_commit_callbacks(execute=False):
        with transaction.atomic():
            locked = lock_booking(booking.pk)
            apply_transition(locked, "start_submission", actor=Actor.WORKER, summary="Submitting")
            create = attempt_open(
                partner=partner,
                operation=Operation.CREATE,
                booking=locked,
                idempotency_key=locked.partner_key,
            )
        response_time = timezone.now() + timedelta(milliseconds=250)
        record_create_outcome(
            booking.pk,
            create,
            CallResult(
                outcome=Outcome.OK,
                http_status=201,
                reservations=(_snapshot(booking, "pending", 1, response_time),),
                partner_time=response_time,
                latency_ms=120,
            ),
        )
        lookup = attempt_open(partner=partner, operation=Operation.LOOKUP, booking=booking)
        attempt_close(
            lookup, CallResult(outcome=Outcome.TRANSIENT, http_status=503, error="busy", latency_ms=30)
        )
        confirmed = {"status": "confirmed", "version": 2, "written_at": timezone.now()}
        _deliver(partner, booking, **confirmed, msg_id="msg_confirm")
        _deliver(partner, booking, **confirmed, msg_id="msg_confirm")  # redelivered: the same bytes
        _deliver(partner, booking, status="pending", version=1, msg_id="msg_late")  # stale, out of order
        _deliver(
            partner, booking, status="cancelled", version=3, msg_id="msg_forged", secret="whsec_Zm9yZ2Vk"
        )
        _deliver(
            partner,
            booking,
            status="confirmed",
            version=2,
            msg_id="msg_skewed",
            signed_at=datetime.now(tz=UTC) + timedelta(minutes=10),
        )
        support.support_sync(
            booking_id=booking.pk,
            operator=support.Operator.for_user(support_user),
            token="tok-1",
            note="customer called",
        )
    return Booking.objects.select_related("partner").get(pk=booking.pk), create, lookup


def test_timeline_merges_every_source_in_our_time_order(story):
    booking, _, _ = story

    rows = booking_timeline(booking)

    assert [(row.kind, row.mark) for row in rows] == [
        ("booking.requested", ""),
        ("booking.submitting", ""),
        ("partner.attempt.ok", ""),
        ("partner.observation.applied", ""),
        ("booking.pending_partner", ""),
        ("partner.attempt.transient", ""),  # a lookup no event describes: a row of its own
        ("partner.observation.applied", ""),
        ("booking.confirmed", ""),
        ("notification.queued", ""),  # the mail the confirmation owes the customer
        ("webhook.duplicate", "duplicate"),
        ("partner.observation.stale", "stale"),
        ("webhook.late", "late"),  # authentic, so on the timeline; the forged one names it but is not
        ("support.sync_requested", ""),
    ]
    assert [row.at for row in rows] == sorted(row.at for row in rows)
    assert booking.status == S.CONFIRMED


def test_timeline_attaches_raw_data_instead_of_repeating_rows(story):
    booking, create, lookup = story

    rows = booking_timeline(booking)

    attempt_rows = [r for r in rows if r.source == "attempt"]
    assert [r.source_id for r in attempt_rows] == [lookup.pk]  # the create is described by its event
    create_row = next(r for r in rows if r.kind == "partner.attempt.ok")
    assert create_row.data["attempt"]["attempt_id"] == create.pk
    assert create_row.data["attempt"]["idempotency_key"] == booking.partner_key
    assert create_row.data["attempt"]["latency_ms"] == 120
    applied_by_webhook = [r for r in rows if r.kind == "partner.observation.applied"][1]
    assert applied_by_webhook.actor == Actor.WEBHOOK
    assert applied_by_webhook.actor_label == f"{booking.partner.code}:msg_confirm"
    assert applied_by_webhook.data["observation"]["status"] == "confirmed"
    assert applied_by_webhook.data["inbound_event"]["event_id"] == "msg_confirm"
    assert applied_by_webhook.data["inbound_event"]["body"]["data"]["version"] == 2
    assert "webhook-signature" not in applied_by_webhook.data["inbound_event"]["headers"]
    inbound_ids = [r.source_id for r in rows if r.source == "inbound"]
    late = InboundEvent.objects.get(event_id="msg_skewed")
    assert inbound_ids == [late.pk]  # every other authentic delivery is described by an event
    forged = InboundEvent.objects.get(event_id="msg_forged")
    assert (forged.signature_valid, forged.booking_id) == (False, None)
    assert forged.pk not in {r.data.get("inbound_event_id") for r in rows}


def test_timeline_rows_carry_both_clocks_the_skew_and_the_actor(story):
    booking, _, _ = story

    rows = booking_timeline(booking)

    create_row = next(r for r in rows if r.kind == "partner.attempt.ok")
    assert create_row.partner_time is not None
    stale = next(r for r in rows if r.kind == "partner.observation.stale")
    assert stale.summary.endswith("ignored (stale)")
    support_row = rows[-1]
    assert support_row.actor == Actor.SUPPORT
    assert support_row.actor_label == story[0].events.get(kind="support.sync_requested").actor_label
    assert (support_row.from_state, support_row.to_state) == (S.CONFIRMED, S.CONFIRMED)
    assert support_row.data["note"] == "customer called"
    assert support_row.is_support
    late = next(r for r in rows if r.mark == "late")
    assert 595_000 <= late.skew_ms <= 601_000  # signed ten minutes ahead of our receipt
    assert late.data["signature_valid"] is True
    assert "ahead of our clock" in late.summary
    as_json = TimelineRowSerializer(support_row).data
    assert as_json["kind"] == "support.sync_requested" and as_json["at"].endswith("Z")


def test_orphan_rows_without_events_still_show(make_booking, partner):
    booking = make_booking(status=S.EXPIRED)
    reservation = PartnerReservationFactory(booking=booking, status="cancelled")
    reservation.compensation_requested_at = timezone.now() + timedelta(seconds=1)
    reservation.compensation_reason = "orphan"
    reservation.compensated_at = timezone.now() + timedelta(seconds=2)
    reservation.save()
    PartnerAttemptFactory(
        booking=booking, operation=Operation.CANCEL, outcome=Outcome.OK, http_status=200, latency_ms=40
    )

    rows = booking_timeline(Booking.objects.select_related("partner").get(pk=booking.pk))

    assert [(r.source, r.kind) for r in rows] == [
        ("attempt", "partner.attempt.ok"),
        ("compensation", "partner.compensation.requested"),
        ("compensation", "partner.compensation.verified"),
    ]


def test_timeline_runs_seven_queries_whatever_its_length(make_booking, partner, django_assert_num_queries):
    small = make_booking(status=S.PENDING_PARTNER)
    record_event(small, "booking.requested", actor=Actor.CUSTOMER)
    big = make_booking(status=S.PENDING_PARTNER)
    reservation = PartnerReservationFactory(booking=big, status="pending")
    for index in range(25):
        record_event(big, f"test.step{index}", actor=Actor.WORKER, data={"attempt_id": None})
        PartnerAttemptFactory(booking=big, operation=Operation.GET, latency_ms=index)
        InboundEventFactory(partner=partner, booking=big, reservation=reservation)
        Notification.objects.create(
            booking=big, status_version=index + 2, kind="confirmed", message="confirmed"
        )
        InboundEventFactory(
            partner=partner, state="rejected", signature_valid=False, raw_body=big.reference.encode()
        )
    small = Booking.objects.select_related("partner").get(pk=small.pk)
    big = Booking.objects.select_related("partner").get(pk=big.pk)

    with django_assert_num_queries(7):
        assert len(booking_timeline(small)) == 1
    with django_assert_num_queries(7):
        assert len(booking_timeline(big)) == 25 * 4  # refused deliveries naming it are not its story


@pytest.mark.parametrize("zone", ["UTC", "America/St_Johns"])
def test_display_formats_rows_once_as_the_date_filters_did(zone):
    from django.template import Context, Template

    from reconciliation.selectors.timeline import TimelineRow
    from reconciliation.selectors.timeline_display import NO_VALUE, timeline_display

    at = datetime(2024, 3, 1, 23, 59, 59, 987654, tzinfo=UTC)
    rows = [
        TimelineRow(
            at=at,
            kind="support.note",
            actor=Actor.SUPPORT,
            actor_label="ann",
            summary="called",
            source="event",
            source_id=7,
            partner_time=at - timedelta(milliseconds=1500),
            skew_ms=-1500,
            mark="failed",
            data={"b": 1, "a": [at]},
        ),
        TimelineRow(
            at=at.replace(microsecond=0),
            kind="booking.note",
            actor=Actor.WORKER,
            actor_label="",
            summary="",
            source="attempt",
            source_id=8,
        ),
    ]
    filters = Template('{{ t|date:"c" }}|{{ t|date:"Y-m-d" }}|{{ t|date:"H:i:s.u"|slice:":12" }}')

    with timezone.override(zone):
        shown = timeline_display(rows)
        expected = [
            filters.render(Context({"t": moment})) for moment in (at, rows[1].at, rows[0].partner_time)
        ]

    assert [f"{row['at_iso']}|{row['at_date']}|{row['at_clock']}" for row in shown] == expected[:2]
    assert expected[2].split("|")[1:] == [shown[0]["partner_date"], shown[0]["partner_clock"]]
    assert (shown[1]["partner_date"], shown[1]["partner_clock"]) == ("", "")
    assert (shown[0]["css_class"], shown[1]["css_class"]) == ("support marked", "")
    assert (shown[0]["skew"], shown[1]["skew"]) == ("-1500", NO_VALUE)
    assert (shown[0]["source_label"], shown[1]["source_label"]) == ("event #7", "attempt #8")
    assert shown[0]["raw"] == rows[0].data_json and json.loads(shown[0]["raw"]) == {"a": [str(at)], "b": 1}
    assert shown[1]["raw"] == ""
