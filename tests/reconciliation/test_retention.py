"""The sweep's retention phase: old bodies of processed webhooks (the partners' and the payment
provider's) are cleared while their rows stay and still de-duplicate, expired sessions are cleared
and old login logs deleted; recent ones are kept and a dry run changes nothing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from axes.models import AccessFailureLog, AccessLog
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from bookings.models import Booking
from bookings.states import BookingState
from partners.models import InboundEvent, InboundResult, InboundState, PartnerObservation
from partners.services.webhooks import inbound_event_process, inbound_event_receive, replay_refusal
from payments.models import EventState, PaymentEvent
from payments.services.webhooks import payment_event_process
from reconciliation.selectors.timeline import SOURCE_INBOUND, SOURCE_PAYMENT_EVENT, booking_timeline
from reconciliation.services.sweeper import sweep
from tests.payments.test_webhooks import deliver, event, intent, paying_booking

S = BookingState
pytestmark = pytest.mark.django_db
OLD = timedelta(days=91)  # past WEBHOOK_BODY_RETENTION_DAYS and LOGIN_LOG_RETENTION_DAYS (90)


@pytest.fixture(autouse=True)
def _defaults(settings):
    settings.WEBHOOK_BODY_RETENTION_DAYS = 90
    settings.LOGIN_LOG_RETENTION_DAYS = 90
    settings.STRIPE_WEBHOOK_SECRET = "whsec_payments0tests0endpoint0secret"


def _signed(partner, booking: Booking, msg_id: str, *, version: int) -> tuple[bytes, dict]:
    written_at = timezone.now().isoformat()
    body = json.dumps(
        {
            "type": "reservation.updated",
            "timestamp": written_at,
            "data": {
                "id": f"R-{booking.reference}",
                "client_reference": booking.reference,
                "product_id": "hotel-42-dbl",
                "status": "confirmed",
                "version": version,
                "created_at": written_at,
                "updated_at": written_at,
            },
        }
    ).encode()
    signed_at = datetime.now(tz=UTC)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(signed_at.timestamp())),
        "webhook-signature": Webhook(partner.webhook_secret).sign(msg_id, signed_at, body.decode()),
    }
    return body, headers


def _receive(partner, body: bytes, headers: dict):
    with transaction.atomic():
        receipt = inbound_event_receive(partner=partner, raw=body, headers=headers)
    if receipt.status == 202:
        inbound_event_process(receipt.event.pk)
    return receipt


def _age(model, pk, field: str = "received_at", by: timedelta = OLD) -> None:
    model.objects.filter(pk=pk).update(**{field: timezone.now() - by})


def test_old_bodies_of_processed_partner_webhooks_are_cleared_their_rows_still_de_duplicate(
    make_booking, partner
):
    # Given a confirmed booking whose partner's webhooks were processed: one 91 days ago, one
    # today; and an open booking with a 91-day-old one
    booking = make_booking(status=S.PENDING_PARTNER)
    old_body, old_headers = _signed(partner, booking, "msg_old", version=1)
    assert _receive(partner, old_body, old_headers).status == 202
    recent = _receive(partner, *_signed(partner, booking, "msg_recent", version=1)).event
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    old = InboundEvent.objects.get(partner=partner, event_id="msg_old")
    assert (old.state, old.result) == (InboundState.PROCESSED, InboundResult.APPLIED)
    _age(InboundEvent, old.pk)
    sha = old.body_sha256
    waiting = make_booking(status=S.PENDING_PARTNER)
    open_one = _receive(partner, *_signed(partner, waiting, "msg_open", version=1)).event
    Booking.objects.filter(pk=waiting.pk).update(status=S.CANCEL_REQUESTED)  # still open
    _age(InboundEvent, open_one.pk)

    # When a dry run, then a sweep, runs
    dry = sweep(dry_run=True)
    untouched = bytes(InboundEvent.objects.get(pk=old.pk).raw_body)
    report = sweep()

    # Then the dry run counted the old one and changed nothing; the sweep cleared only its body
    assert dry.webhook_bodies_pruned == 1 and dry.as_dict()["webhook_bodies_pruned"] == 1
    assert untouched == old_body
    assert report.webhook_bodies_pruned == 1 and report.as_dict()["webhook_bodies_pruned"] == 1
    old.refresh_from_db()
    assert (bytes(old.raw_body), old.body_pruned_at is not None) == (b"", True)
    assert (old.event_id, old.body_sha256, old.body_size, old.state) == (
        "msg_old",
        sha,
        len(old_body),
        InboundState.PROCESSED,
    )
    assert sha and old.headers["webhook-id"] == "msg_old"
    assert bytes(InboundEvent.objects.get(pk=recent.pk).raw_body) != b""
    assert bytes(InboundEvent.objects.get(pk=open_one.pk).raw_body) != b""  # its booking is open
    assert sweep().webhook_bodies_pruned == 0  # nothing left to clear

    # and a redelivery of the pruned one is still recognised: acknowledged, never applied again
    observations = PartnerObservation.objects.filter(booking=booking).count()
    again = _receive(partner, old_body, old_headers)
    assert (again.status, again.event.duplicate_of_id, again.event.result) == (200, old.pk, "duplicate")
    assert PartnerObservation.objects.filter(booking=booking).count() == observations
    # its replay is refused, saying why; its timeline row says the body was cleared
    assert replay_refusal(old).code == "body_pruned"
    rows = booking_timeline(Booking.objects.select_related("partner").get(pk=booking.pk))
    shown = [
        r.data.get("inbound_event") or r.data
        for r in rows
        if (r.data.get("inbound_event") or {}).get("inbound_event_id") == old.pk
        or (r.source == SOURCE_INBOUND and r.source_id == old.pk)
    ]
    assert shown and all(d["body"] is None and d["body_pruned_at"] for d in shown)


def test_old_bodies_of_settled_payment_webhooks_are_cleared_their_ids_still_de_duplicate():
    # Given a processed delivery of the provider for a booking that went ahead, 91 days old, one
    # of today, and an old one still to process
    payment = paying_booking()
    old_body = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))
    assert deliver(old_body).status_code == 202
    old = PaymentEvent.objects.get(payment=payment)
    payment_event_process(old.pk)
    old.refresh_from_db()
    assert old.state == EventState.PROCESSED
    Booking.objects.filter(pk=payment.booking_id).update(status=S.CONFIRMED)
    _age(PaymentEvent, old.pk)
    recent = PaymentEvent.objects.create(
        event_id=f"evt_{uuid.uuid4().hex}", type="x", body=b"{}", payment=payment, state=EventState.KNOWN
    )
    pending = PaymentEvent.objects.create(
        event_id=f"evt_{uuid.uuid4().hex}", type="x", body=b"{}", payment=payment, state=EventState.RECEIVED
    )
    _age(PaymentEvent, pending.pk)

    dry = sweep(dry_run=True)
    untouched = bytes(PaymentEvent.objects.get(pk=old.pk).body)
    report = sweep()

    assert (dry.payment_bodies_pruned, untouched) == (1, old_body)
    assert report.payment_bodies_pruned == 1 and report.as_dict()["payment_bodies_pruned"] == 1
    old.refresh_from_db()
    assert (bytes(old.body), old.body_pruned_at is not None, old.state) == (b"", True, EventState.PROCESSED)
    assert bytes(PaymentEvent.objects.get(pk=recent.pk).body) == b"{}"
    assert bytes(PaymentEvent.objects.get(pk=pending.pk).body) == b"{}"  # still to process
    # a redelivery is still refused by its event id
    again = deliver(old_body)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert PaymentEvent.objects.filter(event_id=old.event_id).count() == 1
    rows = booking_timeline(Booking.objects.select_related("partner").get(pk=payment.booking_id))
    said = [
        r.data.get("payment_event") or r.data
        for r in rows
        if (r.data.get("payment_event") or {}).get("payment_event_id") == old.pk
        or (r.source == SOURCE_PAYMENT_EVENT and r.source_id == old.pk)
    ]
    assert said and all("body_cleared_at" in d["object"] for d in said)


def test_expired_sessions_are_cleared_live_ones_kept():
    live, expired = SessionStore(), SessionStore()
    for store in (live, expired):
        store["user"] = "someone"
        store.create()
    Session.objects.filter(session_key=expired.session_key).update(
        expire_date=timezone.now() - timedelta(minutes=1)
    )

    dry = sweep(dry_run=True)
    kept_by_dry_run = Session.objects.filter(session_key=expired.session_key).exists()
    report = sweep()

    assert (dry.sessions_cleared, kept_by_dry_run) == (1, True)
    assert report.sessions_cleared == 1 and report.as_dict()["sessions_cleared"] == 1
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]


def test_old_login_logs_are_deleted_recent_ones_kept():
    made = {}
    for name, model in (("log", AccessLog), ("failure", AccessFailureLog)):
        for age in ("old", "recent"):
            made[(name, age)] = model.objects.create(
                username=f"{age}-{name}", ip_address="127.0.0.1", user_agent="test", path_info="/admin/login/"
            ).pk
        _age(model, made[(name, "old")], field="attempt_time")

    dry = sweep(dry_run=True)
    counts_after_dry_run = (AccessLog.objects.count(), AccessFailureLog.objects.count())
    report = sweep()

    assert (dry.login_logs_pruned, counts_after_dry_run) == (2, (2, 2))
    assert report.login_logs_pruned == 2 and report.as_dict()["login_logs_pruned"] == 2
    assert list(AccessLog.objects.values_list("pk", flat=True)) == [made[("log", "recent")]]
    assert list(AccessFailureLog.objects.values_list("pk", flat=True)) == [made[("failure", "recent")]]
