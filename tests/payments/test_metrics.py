"""The payment side's figures in /metrics move with the real thing: calls to a real payment
provider (the sandbox's `payments` profile) by operation and outcome, with their duration; the
webhook receiver's answers, a delivery signed with another secret among them; and the payments,
operations and deliveries the database holds, read at the scrape. Counters are process-wide, so
each test compares the figures before and after.

The endpoint, its protection and the other figures: tests/config/test_metrics.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import stripe
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from payments import connector
from payments.connector import AuthorizeRequest
from payments.models import (
    EventState,
    OperationKind,
    OperationState,
    Payment,
    PaymentEvent,
    PaymentOperation,
    PaymentStatus,
)
from reconciliation.services import settlement
from tests.factories import BookingFactory
from tests.payments.conftest import WEBHOOK_SECRET
from tests.payments.test_webhooks import URL, deliver, event, intent, paying_booking, signature

P = PaymentStatus
CALLS = "bookings_payment_calls_total"
SECONDS = "bookings_payment_call_duration_seconds"
DELIVERIES = "bookings_payment_webhook_deliveries_total"


def scrape() -> dict[tuple[str, frozenset], float]:
    response = Client().get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
def metrics_open(settings):
    settings.METRICS_OPEN, settings.METRICS_TOKEN = True, ""


def authorize_request(method: str) -> AuthorizeRequest:
    return AuthorizeRequest(
        payment_id=str(uuid.uuid4()),
        booking_reference="BK-METRICS",
        amount=Decimal("360.00"),
        currency="EUR",
        payment_method=method,
    )


def key(kind: str = "authorize") -> str:
    return f"{uuid.uuid4()}:{kind}:1"


# --- the provider's calls, counted where they are made --------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(60)
def test_calls_to_the_provider_are_counted_by_operation_and_outcome_with_their_duration(
    provider, metrics_open, db, broker
):
    before = scrape()

    held = connector.authorize(authorize_request("pm_card_visa"), key=key())
    declined = connector.authorize(authorize_request("pm_card_chargeDeclined"), key=key())
    read = connector.retrieve(held.truth.intent_id, currency="EUR")
    provider.set_faults(rate_limit_rate=1)
    refused_for_now = connector.capture(
        held.truth.intent_id, amount=Decimal("360.00"), currency="EUR", key=key("capture")
    )
    provider.set_faults(rate_limit_rate=0)
    unsendable = connector.capture(  # an amount not sent exactly: no call, not counted
        held.truth.intent_id, amount=Decimal("0.001"), currency="EUR", key=key("capture")
    )
    captured = connector.capture(
        held.truth.intent_id, amount=Decimal("360.00"), currency="EUR", key=key("capture")
    )
    after = scrape()

    assert [r.outcome for r in (held, declined, read, refused_for_now, captured)] == [
        "ok",
        "declined",
        "ok",
        "transient",
        "ok",
    ]
    assert moved(before, after, CALLS, operation="authorize", outcome="ok") == 1
    assert moved(before, after, CALLS, operation="authorize", outcome="declined") == 1
    assert moved(before, after, CALLS, operation="retrieve", outcome="ok") == 1
    assert moved(before, after, CALLS, operation="capture", outcome="transient") == 1
    assert moved(before, after, CALLS, operation="capture", outcome="ok") == 1
    assert unsendable.error_code == "amount_unsendable"
    assert moved(before, after, CALLS, operation="capture", outcome="refused") == 0
    assert moved(before, after, f"{SECONDS}_count", operation="authorize") == 2
    assert moved(before, after, f"{SECONDS}_bucket", operation="authorize", le="+Inf") == 2
    assert moved(before, after, f"{SECONDS}_bucket", operation="capture", le="10.0") == 2
    assert 0 < moved(before, after, f"{SECONDS}_sum", operation="authorize") < 10


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_the_settlement_s_reads_count_each_try(provider, metrics_open, db, broker, monkeypatch):
    monkeypatch.setattr(connector, "READ_BACKOFF_S", 0.01)
    held = connector.authorize(authorize_request("pm_card_visa"), key=key())
    start, end = timezone.now() - timedelta(hours=1), timezone.now() + timedelta(hours=1)
    before = scrape()

    intents, refunds = settlement.provider_listing(start, end)
    provider.set_faults(rate_limit_rate=1)
    with pytest.raises(settlement.ProviderUnavailable):
        settlement.provider_listing(start, end)
    provider.set_faults(rate_limit_rate=0)
    after = scrape()

    assert [i["id"] for i in intents] == [held.truth.intent_id] and refunds == []
    assert moved(before, after, CALLS, operation="list_intents", outcome="ok") == 1
    assert moved(before, after, CALLS, operation="list_refunds", outcome="ok") == 1
    # a 429 is worth another try: each of the listing's tries is one call
    tries = connector.READ_TRIES
    assert moved(before, after, CALLS, operation="list_intents", outcome="transient") == tries
    assert moved(before, after, f"{SECONDS}_count", operation="list_intents") == 1 + tries


def test_a_read_that_fails_is_counted_by_how_it_failed(monkeypatch):
    from config.metrics import events

    monkeypatch.setattr(connector, "READ_BACKOFF_S", 0)
    counted = events.PAYMENT_CALLS.labels("retrieve_refund", "refused")
    before = counted._value.get()

    def not_found():
        raise stripe.InvalidRequestError("No such refund", "id", http_status=404)

    with pytest.raises(connector.ReadFailed):
        connector.read_again(not_found, operation="retrieve_refund")

    assert counted._value.get() - before == 1  # refused: asked once, not again


# --- the webhook receiver's answers -------------------------------------------------------------
@pytest.mark.django_db
def test_every_answer_of_the_webhook_receiver_is_counted_by_its_code(metrics_open, settings, broker):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    payment = paying_booking()
    news = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))
    before = scrape()

    answers = [
        deliver(news),
        deliver(news),
        deliver(news, signature(news, "whsec_a_machine_with_the_wrong_secret")),
        deliver(news, signature(news, "whsec_a_machine_with_the_wrong_secret")),
        deliver(news, signature(news, at=int(timezone.now().timestamp()) - 3600)),
        deliver(b"not json"),
        deliver(event("customer.created", {"id": "cus_1", "object": "customer"})),
    ]
    settings.WEBHOOK_MAX_BYTES = 10  # ours
    answers.append(Client().post(URL, news, content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1"))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10  # Django's, before ours
    answers.append(Client().post(URL, news, content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1"))
    after = scrape()

    assert [a.status_code for a in answers] == [202, 200, 400, 400, 400, 400, 200, 413, 413]
    assert {
        result: moved(before, after, DELIVERIES, result=result)
        for result in (
            "accepted",
            "duplicate",
            "invalid_signature",
            "timestamp_out_of_tolerance",
            "malformed_body",
            "ignored",
            "payload_too_large",
            "known",
        )
    } == {
        "accepted": 1,
        "duplicate": 1,
        "invalid_signature": 2,
        "timestamp_out_of_tolerance": 1,
        "malformed_body": 1,
        "ignored": 1,
        "payload_too_large": 2,
        "known": 0,
    }


# --- what the database holds, read at the scrape --------------------------------------------------
def payment(status: str, **fields) -> Payment:
    return Payment.objects.create(
        booking=BookingFactory(),
        amount=Decimal("100.00"),
        currency="EUR",
        payment_method="pm_card_visa",
        status=status,
        **fields,
    )


def delivery(state: str, *, received_at) -> PaymentEvent:
    return PaymentEvent.objects.create(
        event_id="evt_" + uuid.uuid4().hex,
        type="payment_intent.succeeded",
        body=b"{}",
        state=state,
        received_at=received_at,
    )


@pytest.mark.django_db
def test_payments_by_status_in_doubt_and_overdue_are_read_from_the_rows(metrics_open, settings, broker):
    settings.PAYMENTS_RUN_GRACE_S = 60
    now = timezone.now()
    payment(P.AUTHORIZED, next_check_at=now + timedelta(hours=1))  # due later
    payment(P.AUTHORIZED, next_check_at=now - timedelta(seconds=30))  # due, within the grace
    payment(P.CAPTURED, next_check_at=now - timedelta(minutes=10))  # overdue
    payment(
        P.UNKNOWN, status_changed_at=now - timedelta(minutes=20), next_check_at=now - timedelta(minutes=5)
    )
    payment(P.UNKNOWN, status_changed_at=now - timedelta(minutes=2))
    payment(P.VOIDED)

    figures = scrape()

    by_status = {
        s: figures.get(("bookings_payments_by_status", frozenset({("status", s)}))) for s in P.values
    }
    assert by_status == {
        **dict.fromkeys(P.values, 0.0),
        P.AUTHORIZED: 2.0,
        P.CAPTURED: 1.0,
        P.UNKNOWN: 2.0,
        P.VOIDED: 1.0,
    }
    assert figures[("bookings_payments_in_doubt", frozenset())] == 2
    assert 20 * 60 <= figures[("bookings_payments_in_doubt_oldest_seconds", frozenset())] < 21 * 60
    assert figures[("bookings_payments_overdue", frozenset())] == 2


@pytest.mark.django_db
def test_open_operations_and_deliveries_not_applied_or_set_aside_are_read_from_the_rows(metrics_open, broker):
    now = timezone.now()
    capturing = payment(P.AUTHORIZED)
    PaymentOperation.objects.create(
        payment=capturing,
        kind=OperationKind.CAPTURE,
        seq=1,
        idempotency_key=key("capture"),
        opened_at=now - timedelta(minutes=30),
    )
    refunded = payment(P.CAPTURED)
    PaymentOperation.objects.create(
        payment=refunded,
        kind=OperationKind.REFUND,
        seq=1,
        idempotency_key=key("refund"),
        state=OperationState.SUCCEEDED,
        opened_at=now - timedelta(days=1),
    )
    delivery(EventState.RECEIVED, received_at=now - timedelta(minutes=15))
    delivery(EventState.RECEIVED, received_at=now - timedelta(seconds=5))
    delivery(EventState.FAILED, received_at=now - timedelta(days=2))
    delivery(EventState.PROCESSED, received_at=now - timedelta(days=3))

    figures = scrape()

    def kinds(name: str) -> dict[str, float]:
        return {k: figures[(name, frozenset({("kind", k)}))] for k in OperationKind.values}

    assert kinds("bookings_payment_operations_open") == {
        **dict.fromkeys(OperationKind.values, 0.0),
        "capture": 1.0,
    }
    ages = kinds("bookings_payment_operations_open_oldest_seconds")
    assert 30 * 60 <= ages.pop("capture") < 31 * 60 and set(ages.values()) == {0.0}
    assert figures[("bookings_payment_events_unapplied", frozenset())] == 2
    assert 15 * 60 <= figures[("bookings_payment_events_unapplied_oldest_seconds", frozenset())] < 16 * 60
    assert figures[("bookings_payment_events_set_aside", frozenset())] == 1


@pytest.mark.django_db
def test_with_nothing_in_doubt_or_waiting_the_ages_are_zero(metrics_open, broker):
    payment(P.CAPTURED)

    figures = scrape()

    for name in (
        "bookings_payments_in_doubt",
        "bookings_payments_in_doubt_oldest_seconds",
        "bookings_payments_overdue",
        "bookings_payment_events_unapplied",
        "bookings_payment_events_unapplied_oldest_seconds",
        "bookings_payment_events_set_aside",
    ):
        assert figures[(name, frozenset())] == 0, name
