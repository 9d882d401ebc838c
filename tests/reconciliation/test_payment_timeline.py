"""A paying booking's payment on its one timeline: each operation asked of the provider attached to
the rows that name its key, else a row of its own; each provider delivery attached to the first row
its processing wrote, else a row of its own (not processed yet, or set aside); two more queries,
whatever the length."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from decimal import Decimal

import pytest

from bookings.models import Booking
from bookings.states import BookingState
from payments.models import OperationKind, PaymentEvent, PaymentStatus
from payments.services.operations import operation_open
from payments.services.webhooks import payment_event_process, payment_event_receive
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.services.support import Operator, new_token
from reconciliation.services.support import payments as money
from tests.reconciliation.paying import paying_booking

S = BookingState
P = PaymentStatus
pytestmark = pytest.mark.django_db
SECRET = "whsec_timeline0tests0secret"


@pytest.fixture(autouse=True)
def _secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET


def deliver(payment, kind: str, status: str, *, received: int = 0, currency: str = "eur") -> PaymentEvent:
    body = json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:24]}",
            "object": "event",
            "type": kind,
            "created": int(time.time()),
            "data": {
                "object": {
                    "id": payment.provider_intent_id,
                    "object": "payment_intent",
                    "amount": 36_000,
                    "amount_received": received,
                    "currency": currency,
                    "status": status,
                    "metadata": {"payment": str(payment.pk)},
                    "latest_charge": None,
                }
            },
        }
    ).encode()
    at = int(time.time())
    mac = hmac.new(SECRET.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    receipt = payment_event_receive(raw=body, signature=f"t={at},v1={mac}")
    assert receipt.status == 202, receipt
    return receipt.event


def rows(booking):
    return booking_timeline(Booking.objects.select_related("partner").get(pk=booking.pk))


def test_an_operation_is_attached_to_the_rows_naming_its_key_else_a_row_of_its_own():
    named = paying_booking()
    money.support_refund(
        booking_id=named.booking_id, operator=Operator.shell(), token=new_token(), amount="10"
    )
    unnamed = paying_booking(status=S.CONFIRMED, payment_status=P.AUTHORIZED)
    operation = operation_open(unnamed, kind=OperationKind.CAPTURE, amount=Decimal("360.00"))

    [support_row] = [r for r in rows(named.booking) if r.kind == "support.refund_requested"]
    [own] = rows(unnamed.booking)

    attached = support_row.data["payment_operation"]
    assert (attached["kind"], attached["amount"], attached["state"], attached["tries"]) == (
        "refund",
        "10.00",
        "open",
        0,
    )
    assert [r.source for r in rows(named.booking)] == ["event"]  # no second row for the same operation
    assert (own.source, own.source_id, own.kind, own.mark) == (
        "payment_operation",
        operation.pk,
        "payment.operation.open",
        "in_flight",
    )
    assert own.summary == "Capture 360.00 EUR (#1): open: its outcome is not known after 0 tries"
    assert own.data["idempotency_key"] == f"{unnamed.pk}:capture:1"


def test_a_processed_delivery_is_attached_to_the_row_it_wrote_and_an_unprocessed_one_shows_alone():
    payment = paying_booking(status=S.AWAITING_PAYMENT, payment_status=P.AUTHORIZING)
    processed = deliver(payment, "payment_intent.amount_capturable_updated", "requires_capture")
    payment_event_process(processed.pk)
    waiting = deliver(payment, "payment_intent.succeeded", "succeeded", received=36_000)

    timeline = rows(payment.booking)

    [applied] = [r for r in timeline if r.kind == "payment.authorized"]
    assert applied.data["payment_event"]["event_id"] == processed.event_id
    assert applied.data["payment_event"]["object"] == {
        "id": payment.provider_intent_id,
        "object": "payment_intent",
        "status": "requires_capture",
        "amount": 36_000,
        "amount_received": 0,
        "currency": "eur",
    }
    assert sum("payment_event" in r.data for r in timeline) == 1  # attached once
    [alone] = [r for r in timeline if r.source == "payment_event"]
    assert (alone.source_id, alone.kind, alone.actor_label, alone.mark) == (
        waiting.pk,
        "payment.webhook.received",
        waiting.event_id,
        "",
    )


def test_a_refused_delivery_is_attached_to_its_refusal():
    payment = paying_booking(status=S.AWAITING_PAYMENT, payment_status=P.AUTHORIZING)
    refused = deliver(payment, "payment_intent.amount_capturable_updated", "requires_capture", currency="usd")
    payment_event_process(refused.pk)

    [row] = [r for r in rows(payment.booking) if r.kind == "payment.webhook.refused"]

    assert (row.data["payment_event"]["state"], row.data["payment_event"]["event_id"]) == (
        "failed",
        refused.event_id,
    )
    assert not [r for r in rows(payment.booking) if r.source == "payment_event"]


def test_a_paying_booking_s_timeline_runs_nine_queries_whatever_its_length(django_assert_num_queries):
    short = paying_booking()
    long = paying_booking(status=S.AWAITING_PAYMENT, payment_status=P.AUTHORIZING)
    for _ in range(10):
        payment_event_process(
            deliver(long, "payment_intent.amount_capturable_updated", "requires_capture").pk
        )
        deliver(long, "payment_intent.succeeded", "succeeded", received=36_000)
    for index in range(10):
        operation = operation_open(long, kind=OperationKind.REFUND, amount=Decimal("1.00"))
        operation.state = "succeeded" if index % 2 else "refused"
        operation.save(update_fields=["state"])
    short = Booking.objects.select_related("partner").get(pk=short.booking_id)
    long = Booking.objects.select_related("partner").get(pk=long.booking_id)

    with django_assert_num_queries(9):
        booking_timeline(short)
    with django_assert_num_queries(9):
        # authorized and requested, 9 duplicates, 10 deliveries waiting, 10 operations unnamed
        assert len(booking_timeline(long)) == 2 + 9 + 10 + 10
