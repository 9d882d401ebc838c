"""The provider's webhooks at /payments/webhooks/: verified over the raw body with our endpoint
secret (Stripe-Signature), stored once per event id, applied through the one door by a worker's
service, never moving a payment back, and refused whole when their money is in another currency.
Deliveries are built and signed here as the provider signs them; the connector's tests and the
fault tests cover the real provider's own."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
import redis
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from bookings import customer_view
from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Booking
from bookings.states import BookingState
from config.claims import CLAIM_OPTION
from config.redis_client import redis_client
from payments.connector import CallResult, refund_truth
from payments.messages import PAYMENTS_QUEUE
from payments.models import (
    CallOutcome,
    EventState,
    OperationKind,
    OperationState,
    Payment,
    PaymentEvent,
    PaymentOperation,
    PaymentStatus,
)
from payments.selectors import due_payments
from payments.services import runs
from payments.services.deliveries import held_deliveries_settle
from payments.services.operations import operation_open
from payments.services.webhooks import payment_event_process
from reconciliation.services.sweeper import sweep
from tests.bookings.conftest import postgres_only, run_concurrently
from tests.factories import BookingFactory
from tests.helpers import sessions_waiting_on_a_lock, wait_until
from tests.payments.conftest import WEBHOOK_SECRET, kinds
from tests.reconciliation.conftest import queued
from tests.sandbox_process import free_port

S = BookingState
P = PaymentStatus
URL = "/payments/webhooks/"


@pytest.fixture(autouse=True)
def _secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET


def paying_booking(
    status: str = S.AWAITING_PAYMENT, payment_status: str = P.AUTHORIZING, **fields
) -> Payment:
    facts = PaymentFacts(state="authorizing", currency="EUR", amount=Decimal("360.00"))
    booking = BookingFactory(status=status, customer_money=money_of(facts).as_json())
    return Payment.objects.create(
        booking=booking,
        amount=Decimal("360.00"),
        currency="EUR",
        payment_method="pm_card_visa",
        status=payment_status,
        **fields,
    )


def intent(payment: Payment, status: str, *, currency: str = "eur", received: int = 0) -> dict:
    return {
        "id": payment.provider_intent_id or "pi_" + uuid.uuid4().hex[:24],
        "object": "payment_intent",
        "amount": 36_000,
        "amount_received": received,
        "currency": currency,
        "status": status,
        "metadata": {"payment": str(payment.pk), "booking": payment.booking.reference},
        "latest_charge": "ch_" + uuid.uuid4().hex[:24],
        "last_payment_error": None,
        "cancellation_reason": None,
    }


def intent_news(status: str, *, received: int = 0) -> Callable[[Payment], tuple[str, dict]]:
    """The provider's delivery of its intent in `status`, for a payment given later."""
    kind = {"requires_capture": "payment_intent.amount_capturable_updated"}.get(
        status, f"payment_intent.{status}"
    )
    return lambda payment: (kind, intent(payment, status, received=received))


def event(kind: str, obj: dict, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or "evt_" + uuid.uuid4().hex[:24],
            "object": "event",
            "type": kind,
            "created": int(time.time()),
            "data": {"object": obj},
        }
    ).encode()


def signature(body: bytes, secret: str = WEBHOOK_SECRET, *, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def deliver(body: bytes, sig: str | None = None):
    sig = signature(body) if sig is None else sig
    return Client().post(URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sig)


def test_a_signed_event_is_stored_acknowledged_and_applied_by_the_one_door(db):
    payment = paying_booking()
    body = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))

    response = deliver(body)
    stored = PaymentEvent.objects.get()
    payment_event_process(stored.pk)

    assert (response.status_code, response.json()["status"]) == (202, "accepted")
    assert (stored.payment, bytes(stored.body)) == (payment, body)
    stored.refresh_from_db()
    payment.refresh_from_db()
    assert (stored.state, stored.tries, payment.status) == (EventState.PROCESSED, 1, P.AUTHORIZED)
    booking = payment.booking
    booking.refresh_from_db()
    assert (booking.status, booking.customer_money["code"]) == (S.REQUESTED, "held")
    assert kinds(booking)[-2:] == ["payment.authorized", "booking.requested"]


def test_a_redelivered_event_is_stored_once(db):
    payment = paying_booking()
    body = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))

    first, again = deliver(body), deliver(body)

    assert (first.status_code, again.status_code, again.json()["status"]) == (202, 200, "duplicate")
    assert PaymentEvent.objects.count() == 1


@pytest.mark.parametrize(
    "accept",
    ["text/plain", "application/xml, text/html;q=0.9", "))not a media type((;q=x"],
)
def test_a_delivery_is_stored_and_answered_in_json_whatever_its_accept_header_says(db, accept):
    # The provider reads our status code alone: DRF's negotiation answered 406 before the receiver
    # ran, nothing stored, and the provider delivered it again for a day.
    payment = paying_booking()
    body = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))

    def send(sig: str):
        return Client().post(
            URL, body, content_type="application/json", HTTP_STRIPE_SIGNATURE=sig, HTTP_ACCEPT=accept
        )

    accepted, again, refused = send(signature(body)), send(signature(body)), send(signature(body, "whsec_x"))

    assert (accepted.status_code, accepted["Content-Type"]) == (202, "application/json")
    assert accepted.json()["status"] == "accepted"
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert (refused.status_code, refused.json()["error"]["code"]) == (400, "invalid_signature")
    assert bytes(PaymentEvent.objects.get().body) == body


@pytest.mark.parametrize("debug", [False, True])
def test_the_receiver_answers_at_its_url_without_the_trailing_slash_too(db, settings, debug):
    # Stripe takes the endpoint's URL verbatim and does not follow a redirect for a POST.
    settings.DEBUG = debug
    body = event("payment_intent.amount_capturable_updated", intent(paying_booking(), "requires_capture"))

    response = Client().post(
        URL.rstrip("/"), body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature(body)
    )

    assert (response.status_code, response.json()["status"]) == (202, "accepted")
    assert PaymentEvent.objects.count() == 1


@pytest.mark.parametrize("signed", ["another secret", "no signature", "changed body"])
def test_an_event_not_signed_with_our_secret_is_refused_and_not_stored(db, signed):
    payment = paying_booking()
    body = event("payment_intent.succeeded", intent(payment, "succeeded", received=36_000))
    sig = {
        "another secret": signature(body, "whsec_not_ours"),
        "no signature": "",
        "changed body": signature(body.replace(b"succeeded", b"canceled")),
    }[signed]

    response = deliver(body, sig)

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_signature")
    assert PaymentEvent.objects.count() == 0


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(lambda raw: signature(raw, "whsec_not_ours"), id="another-secret"),
        pytest.param(lambda raw: signature(raw, at=int(time.time()) - 3600), id="too-old"),
        pytest.param(lambda raw: signature(raw, at=int(time.time()) + 3600), id="ahead"),
        pytest.param(lambda raw: "v1=" + signature(raw).split("v1=")[1], id="no-timestamp"),
        pytest.param(lambda raw: "", id="none"),
    ],
)
def test_a_body_that_is_not_utf8_without_a_valid_signature_is_an_invalid_signature(db, sig):
    raw = b"\xff\xfe{}"

    response = deliver(raw, sig(raw))

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_signature")
    assert PaymentEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("offset_s", "words"),
    [
        (86_400, r"86\d\d\d s ahead of"),
        (-3_600, r"36\d\d s before"),
        # a t= too large for a float (the skew was once computed in one: a 500)
        pytest.param(10**400, r"more than 10\^12 s ahead of", id="t-beyond-a-float"),
    ],
)
def test_an_event_signed_too_far_from_our_clock_is_refused_and_said_apart_from_a_bad_signature(
    db, offset_s, words
):
    # The SDK refuses a signature made too long ago, not one made "later": a captured delivery
    # signed ahead could be replayed for as long as it stays ahead. Either way it is said as
    # what it is: the signature verifies, the clocks are apart (not a wrong secret).
    body = event("payment_intent.succeeded", intent(paying_booking(), "succeeded", received=36_000))

    response = deliver(body, signature(body, at=int(time.time()) + offset_s))

    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (400, "timestamp_out_of_tolerance")
    said = rf"The Stripe-Signature verifies, but was made {words} our clock: more than the 300 s allowed\."
    assert re.fullmatch(said, error["message"]), error["message"]
    assert PaymentEvent.objects.count() == 0


def test_an_old_signature_that_does_not_verify_is_a_bad_signature_not_a_late_one(db):
    body = event("payment_intent.succeeded", intent(paying_booking(), "succeeded", received=36_000))

    response = deliver(body, signature(body, "whsec_not_ours", at=int(time.time()) - 3_600))

    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_signature")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1]", id="not-an-object"),
        pytest.param(b"{}", id="no-id"),
        pytest.param(b'{"id": "evt_1", "type": 5}', id="type-not-text"),
        pytest.param(b'{"id": "evt_\\u0000", "type": "payment_intent.succeeded"}', id="nul-in-id"),
        pytest.param(b'{"id": "evt_1", "type": "payment_intent.\\u0000"}', id="nul-in-type"),
        # A lone surrogate escape: no Unicode character, so no text psycopg can store.
        pytest.param(b'{"id": "evt_\\ud800", "type": "payment_intent.succeeded"}', id="surrogate-in-id"),
        pytest.param(b'{"id": "evt_1", "type": "payment_intent.\\udfff"}', id="surrogate-in-type"),
        pytest.param(b'{"id": "evt_' + b"a" * 260 + b'", "type": "x"}', id="id-longer-than-we-keep"),
        # The SDK decodes the body as UTF-8 before checking the signature made over its bytes.
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
    ],
)
def test_a_signed_body_that_is_no_event_is_refused_as_malformed_and_not_stored(db, raw):
    # The signature verifies: "invalid_signature" would send whoever operates the provider's side
    # after their secret. An id is never cut to fit: two events would become one.
    response = deliver(raw)

    assert (response.status_code, response.json()["error"]["code"]) == (400, "malformed_body")
    assert "the body is no event" in response.json()["error"]["message"]
    assert PaymentEvent.objects.count() == 0


@pytest.mark.parametrize("metadata", ["x", ["a"], 5])
@pytest.mark.parametrize("ours", [False, True], ids=["unknown-intent", "our-intent"])
def test_an_intent_whose_metadata_is_no_object_is_not_a_crash(db, metadata, ours):
    payment = paying_booking(
        S.CONFIRMED, P.AUTHORIZED, provider_intent_id="pi_" + uuid.uuid4().hex[:24] if ours else ""
    )
    obj = {**intent(payment, "succeeded", received=36_000), "metadata": metadata}

    response = deliver(event("payment_intent.succeeded", obj))

    if not ours:  # nothing names a payment of ours
        assert (response.status_code, response.json()["status"]) == (200, "ignored")
        return
    assert (response.status_code, response.json()["status"]) == (202, "accepted")
    payment_event_process(PaymentEvent.objects.get().pk)
    stored = PaymentEvent.objects.get()
    payment.refresh_from_db()
    assert (stored.state, payment.status) == (EventState.FAILED, P.AUTHORIZED)
    assert "metadata is not an object" in stored.error


@pytest.mark.parametrize("intent_id", ["pi_\u0000", "pi_\ud800"], ids=["nul", "lone-surrogate"])
def test_an_intent_id_the_database_cannot_compare_names_nothing_of_ours(db, intent_id):
    obj = {**intent(paying_booking(), "succeeded"), "id": intent_id, "metadata": {}}

    response = deliver(event("payment_intent.succeeded", obj))

    assert (response.status_code, response.json()["status"]) == (200, "ignored")


def _applied(body: bytes, payment: Payment) -> PaymentEvent:
    assert deliver(body).status_code == 202
    payment_event_process(PaymentEvent.objects.get().pk)
    payment.refresh_from_db()
    return PaymentEvent.objects.get()


def test_an_intent_receiving_more_than_it_holds_is_refused_and_plans_no_refund(db):
    # Applied, 999,999.99 captured of a 360.00 payment would have made the next run refund the
    # difference: money the customer never paid.
    payment = paying_booking(S.CONFIRMED, P.AUTHORIZED, provider_intent_id="pi_" + uuid.uuid4().hex[:24])

    obj = intent(payment, "succeeded", received=99_999_999)

    stored = _applied(event("payment_intent.succeeded", obj), payment)

    assert (stored.state, payment.status, payment.captured_amount) == (EventState.FAILED, P.AUTHORIZED, 0)
    assert "intent received 999999.99 of 360.00" in stored.error
    assert kinds(payment.booking)[-1] == "payment.webhook.refused"


def test_text_the_database_cannot_hold_is_refused_at_our_edge_not_retried_in_the_worker(db):
    # A lone surrogate in a decline's words would reach the payment's row, where psycopg cannot
    # encode it: the worker would fail on every try instead of refusing the delivery once.
    payment = paying_booking(provider_intent_id="pi_" + uuid.uuid4().hex[:24])
    declined = {"code": "card_declined", "decline_code": "generic_decline", "message": "No \ud800"}
    obj = {**intent(payment, "requires_payment_method"), "last_payment_error": declined}

    stored = _applied(event("payment_intent.payment_failed", obj), payment)

    assert (stored.state, stored.tries, payment.status) == (EventState.FAILED, 1, P.AUTHORIZING)
    assert "decline message is not text" in stored.error
    assert kinds(payment.booking)[-1] == "payment.webhook.refused"


def test_a_hold_of_another_amount_than_ours_is_refused_not_taken_as_authorized(db):
    payment = paying_booking()
    obj = {**intent(payment, "requires_capture"), "amount": 1}

    stored = _applied(event("payment_intent.amount_capturable_updated", obj), payment)

    assert (stored.state, payment.status) == (EventState.FAILED, P.AUTHORIZING)
    assert "it holds 0.01, the payment is 360.00" in stored.error


@pytest.mark.parametrize(
    ("captured", "given_back", "why"),
    [
        (36_001, 0, "charge captures 360.01 and gives back 0.00 of 360.00 authorized"),
        (36_000, 36_001, "charge captures 360.00 and gives back 360.01 of 360.00 authorized"),
    ],
)
def test_a_charge_counting_more_than_was_authorized_is_refused_and_records_no_refund(
    db, captured, given_back, why
):
    payment = paying_booking(
        S.CONFIRMED,
        P.CAPTURED,
        provider_intent_id="pi_" + uuid.uuid4().hex[:24],
        captured_amount=Decimal("360.00"),
    )
    charge = {
        "id": "ch_" + uuid.uuid4().hex[:24],
        "object": "charge",
        "payment_intent": payment.provider_intent_id,
        "amount": 36_000,
        "amount_captured": captured,
        "amount_refunded": given_back,
        "captured": True,
        "currency": "eur",
    }

    stored = _applied(event("charge.refunded", charge), payment)

    assert (payment.captured_amount, payment.refunded_amount) == (Decimal("360.00"), Decimal("0.00"))
    assert (stored.state, why in stored.error) == (EventState.FAILED, True)


def test_an_event_about_nothing_of_ours_is_acknowledged_and_kept_as_ignored(db):
    stranger = paying_booking()
    body = event("payment_intent.succeeded", {**intent(stranger, "succeeded"), "metadata": {}})

    response = deliver(body)

    assert (response.status_code, response.json()["status"]) == (200, "ignored")
    assert PaymentEvent.objects.get().state == EventState.IGNORED


def test_money_in_another_currency_is_refused_whole_and_changes_nothing(db):
    payment = paying_booking()
    deliver(
        event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture", currency="usd"))
    )

    payment_event_process(PaymentEvent.objects.get().pk)

    stored = PaymentEvent.objects.get()
    payment.refresh_from_db()
    assert (stored.state, payment.status) == (EventState.FAILED, P.AUTHORIZING)
    assert "currency 'usd' is not the payment's EUR" in stored.error
    assert kinds(payment.booking)[-1] == "payment.webhook.refused"


def test_an_older_event_arriving_after_a_newer_one_moves_nothing_back(db):
    payment = paying_booking(S.CONFIRMED, P.AUTHORIZED, provider_intent_id="pi_" + "a" * 24)
    newer = event("payment_intent.succeeded", intent(payment, "succeeded", received=36_000))
    older = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))

    responses = []
    for body in (newer, older):
        responses.append(deliver(body).json()["status"])
        payment_event_process(PaymentEvent.objects.latest("id").pk)

    payment.refresh_from_db()
    assert (payment.status, payment.captured_amount) == (P.CAPTURED, Decimal("360.00"))
    # The older word is recognised on receipt as nothing new: stored, never applied.
    assert responses == ["accepted", "known"]
    assert list(PaymentEvent.objects.order_by("id").values_list("state", flat=True)) == [
        EventState.PROCESSED,
        EventState.KNOWN,
    ]


@pytest.mark.parametrize("word", ["requires_confirmation", "requires_action", "processing"])
def test_a_word_from_before_the_hold_moves_neither_our_status_nor_the_provider_s_back(db, word):
    # It names no status of ours, so the state machine never saw it; the provider's word kept
    # beside ours (the console shows both) was overwritten backwards, and the timeline said
    # "Nothing new".
    payment = paying_booking(
        S.CONFIRMED, P.AUTHORIZED, provider_intent_id="pi_" + "a" * 24, provider_status="requires_capture"
    )
    older = event("payment_intent.amount_capturable_updated", intent(payment, word))

    answer = deliver(older).json()["status"]

    payment.refresh_from_db()
    assert (answer, payment.status, payment.provider_status) == ("known", P.AUTHORIZED, "requires_capture")
    from bookings.services import lock_booking
    from payments.connector import intent_truth
    from payments.services.observations import lock_payment, truth_apply

    with transaction.atomic():  # the one door's own guard, for a word that was news when read
        locked = lock_payment(lock_booking(payment.booking.pk))
        truth = intent_truth(intent(payment, word), "EUR")
        truth_apply(booking=payment.booking, payment=locked, truth=truth, source="test", actor="worker")

    payment.refresh_from_db()
    assert payment.provider_status == "requires_capture"
    assert kinds(payment.booking)[-1] == "payment.observation.stale"


def test_an_older_event_applied_under_the_lock_is_recorded_as_stale(db):
    # The one door's own guard, for a word that was news when the worker read the row and is
    # old by the time it holds the lock.
    payment = paying_booking(S.CONFIRMED, P.CAPTURED, provider_intent_id="pi_" + "a" * 24)
    older = intent(payment, "requires_capture")
    booking = payment.booking

    from bookings.services import lock_booking
    from payments.connector import intent_truth
    from payments.services.observations import lock_payment, truth_apply

    with transaction.atomic():
        locked = lock_payment(lock_booking(booking.pk))
        changed = truth_apply(
            booking=booking, payment=locked, truth=intent_truth(older, "EUR"), source="test", actor="worker"
        )

    payment.refresh_from_db()
    assert (changed, payment.status) == (False, P.CAPTURED)
    assert kinds(booking)[-1] == "payment.observation.stale"


def test_the_echo_of_our_own_answer_is_stored_as_known_and_applies_nothing(
    db, django_capture_on_commit_callbacks
):
    # Our authorization's answer went through the one door first; the provider's webhook for it
    # says the same: stored (and deduplicated), no message, no timeline row of its own making.
    payment = paying_booking(
        S.REQUESTED, P.AUTHORIZED, provider_intent_id="pi_" + "b" * 24, provider_status="requires_capture"
    )
    body = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))
    written = kinds(payment.booking)

    with django_capture_on_commit_callbacks() as queued_after_commit:
        first, again = deliver(body), deliver(body)

    stored = PaymentEvent.objects.get()
    assert queued_after_commit == []  # no message for a worker
    assert (first.status_code, first.json()["status"]) == (202, "known")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert (stored.state, stored.processed_at is not None, stored.payment) == (
        EventState.KNOWN,
        True,
        payment,
    )
    assert kinds(payment.booking) == written


def test_news_received_then_made_known_by_our_own_answer_is_known_without_a_lock(db):
    # Received while the authorization's answer was still out; by the time the worker reads it
    # our own answer has applied the same: stored as known, nothing applied twice.
    payment = paying_booking()
    intent_id = "pi_" + "c" * 24
    body = event(
        "payment_intent.amount_capturable_updated",
        {**intent(payment, "requires_capture"), "id": intent_id},
    )
    assert deliver(body).json()["status"] == "accepted"
    Payment.objects.filter(pk=payment.pk).update(
        status=P.AUTHORIZED, provider_intent_id=intent_id, provider_status="requires_capture"
    )
    written = kinds(payment.booking)

    payment_event_process(PaymentEvent.objects.get().pk)

    stored = PaymentEvent.objects.get()
    assert (stored.state, stored.tries) == (EventState.KNOWN, 1)
    assert kinds(payment.booking) == written


@pytest.mark.parametrize("in_flight", [False, True], ids=["no-call-out", "call-out"])
def test_a_delivery_is_judged_on_one_locked_read_of_its_payment_then_stored_in_one_insert(
    in_flight, db, django_capture_on_commit_callbacks
):
    # The receiver's whole work in the database: the payment found by the intent (or our id in
    # its metadata) and locked in one statement; for a delivery that brings news, whether one of
    # our calls on it is out (a statement of its own, which sees any record that the lock waited
    # for); then the delivery's row. Held while a call is out, queued otherwise.
    payment = paying_booking()
    if in_flight:
        operation_open(payment, kind=OperationKind.AUTHORIZE, amount=payment.amount)
    body = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))

    with (
        django_capture_on_commit_callbacks() as queued_after_commit,
        CaptureQueriesContext(connection) as statements,
    ):
        assert deliver(body).json()["status"] == "accepted"

    reads = [q["sql"] for q in statements if q["sql"].startswith("SELECT")]
    writes = [q["sql"] for q in statements if q["sql"].startswith(("INSERT", "UPDATE", "DELETE"))]
    assert len(reads) == 2 and '"payments_payment"' in reads[0] and '"payments_paymentoperation"' in reads[1]
    if connection.features.has_select_for_update:
        assert "FOR NO KEY UPDATE" in reads[0]
    assert len(writes) == 1 and writes[0].startswith('INSERT INTO "payments_paymentevent"')
    assert PaymentEvent.objects.get().state == EventState.RECEIVED
    assert len(queued_after_commit) == (0 if in_flight else 1)


@postgres_only
@pytest.mark.django_db(transaction=True)
def test_news_that_waited_on_a_records_lock_is_judged_after_that_record_and_queued(broker):
    # given a payment whose authorization is out, and the run recording its answer: it holds
    # the payment's row lock and has closed the operation, not yet committed
    payment = paying_booking()
    operation = operation_open(payment, kind=OperationKind.AUTHORIZE, amount=payment.amount)
    body = event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture"))
    locked, release = threading.Event(), threading.Event()

    def record() -> None:
        with transaction.atomic():
            Payment.objects.select_for_update(no_key=True).get(pk=payment.pk)
            PaymentOperation.objects.filter(pk=operation.pk).update(
                state=OperationState.SUCCEEDED, closed_at=timezone.now()
            )
            locked.set()
            assert release.wait(timeout=10)

    def receive() -> str:
        assert locked.wait(timeout=10)
        return deliver(body).json()["status"]

    def commit_once_the_receiver_waits() -> None:
        wait_until(locked.is_set, what="the record to lock the payment")
        wait_until(lambda: sessions_waiting_on_a_lock() == 1, what="the receiver to wait on the lock")
        release.set()

    # when a delivery that says more than the record applied arrives meanwhile
    results = run_concurrently(record, receive, while_running=commit_once_the_receiver_waits)

    # then it is judged after the record: no call is out any more, so it is queued to be applied,
    # not held for a record that has already settled what it held
    assert results == [None, "accepted"]
    stored = PaymentEvent.objects.get()
    assert stored.state == EventState.RECEIVED
    assert [list(message.args) for message in queued(broker, PAYMENTS_QUEUE)] == [[stored.pk]]


@pytest.mark.parametrize("news", [False, True], ids=["echo", "news"])
def test_a_delivery_while_our_call_is_open_waits_unqueued_for_its_record(
    news, db, django_capture_on_commit_callbacks
):
    # The provider sends its webhook as it answers our call, before our record of the answer
    # commits: held (stored, not queued), then settled in the record's transaction. An echo of
    # the answer is known without a message; a delivery that says more is queued then.
    payment = paying_booking()
    intent_id = "pi_" + "d" * 24
    operation_open(payment, kind=OperationKind.AUTHORIZE, amount=payment.amount)
    body = event(
        "payment_intent.amount_capturable_updated",
        {**intent(payment, "requires_capture"), "id": intent_id},
    )

    with django_capture_on_commit_callbacks() as queued_at_receipt:
        assert deliver(body).json()["status"] == "accepted"
    # our answer, as the record applies it (here the answer said less when the delivery is news)
    status = P.AUTHORIZING if news else P.AUTHORIZED
    Payment.objects.filter(pk=payment.pk).update(
        status=status, provider_intent_id=intent_id, provider_status="requires_capture"
    )
    payment.refresh_from_db()
    with django_capture_on_commit_callbacks() as queued_by_record, transaction.atomic():
        held_deliveries_settle(payment)

    stored = PaymentEvent.objects.get()
    assert (queued_at_receipt, stored.tries) == ([], 0)
    if news:
        assert (stored.state, len(queued_by_record)) == (EventState.RECEIVED, 1)
    else:
        assert (stored.state, queued_by_record) == (EventState.KNOWN, [])


def test_a_stored_event_whose_message_was_lost_is_queued_by_the_sweeper_once(db, broker, settings):
    payment = paying_booking()
    deliver(event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture")))
    PaymentEvent.objects.update(
        received_at=timezone.now() - timedelta(seconds=settings.RECONCILE_INBOUND_STALE_S + 1)
    )

    first, second = sweep(), sweep()

    assert (first.payment_events_requeued, second.payment_events_requeued) == (1, 0)


def test_a_stale_event_waiting_on_a_stalled_queue_holds_one_sweeper_copy_however_many_sweeps(
    db, broker, settings
):
    # Given a stored delivery whose message was lost, and nobody serving the payments queue
    payment = paying_booking()
    deliver(event("payment_intent.amount_capturable_updated", intent(payment, "requires_capture")))
    PaymentEvent.objects.update(
        received_at=timezone.now() - timedelta(seconds=settings.RECONCILE_INBOUND_STALE_S + 1)
    )
    broker.flush(PAYMENTS_QUEUE)

    # When sweep after sweep finds it stale
    reports = [sweep() for _ in range(4)]

    # Then one copy waits, carrying its claim, which a worker's ReleaseClaims ends when it takes
    # it up: not a window that lapses while the copy still waits and lets the next sweep queue more
    assert [r.payment_events_requeued for r in reports] == [1, 0, 0, 0]
    [copy] = queued(broker, PAYMENTS_QUEUE)
    key, _token = copy.options[CLAIM_OPTION]
    assert redis_client().pttl(key) > settings.RECONCILE_INBOUND_STALE_S * 1000


@pytest.fixture
def redis_unreachable(broker) -> Iterator[None]:
    """The broker's and our own keys' Redis clients pointed at a closed port: every send refused."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    clients = [broker.client, redis_client()]
    pools = [client.connection_pool for client in clients]
    for client in clients:
        client.connection_pool = redis.ConnectionPool.from_url(url)
    yield
    for client, pool in zip(clients, pools, strict=True):
        client.connection_pool.disconnect()
        client.connection_pool = pool


@pytest.mark.parametrize(
    ("before", "news", "step"),
    [
        (P.AUTHORIZING, intent_news("requires_capture"), "capture"),  # its recheck an hour away
        (P.AUTHORIZED, intent_news("succeeded", received=36_000), "refund"),
    ],
    ids=["hold-to-capture", "capture-to-refund"],
)
def test_news_that_wants_a_run_while_redis_is_down_leaves_it_due_and_raises_nothing_after_commit(
    before, news, step, transactional_db, redis_unreachable, settings, caplog
):
    # Given news of the provider's that asks for a run (a hold for a confirmed booking: its
    # capture; a capture for one cancelled free: its refund), and our Redis not answering
    status = S.CONFIRMED if step == "capture" else S.CANCELLED
    payment = paying_booking(status, before, provider_intent_id="pi_" + uuid.uuid4().hex[:24])
    Booking.objects.filter(pk=payment.booking_id).update(confirmed_shown_at=timezone.now())
    kind, obj = news(payment)
    answer = deliver(event(kind, obj))
    later: list[str] = []

    # When a worker applies it, in a transaction with more to do after its commit
    with caplog.at_level(logging.WARNING, logger="bookings.ports"), transaction.atomic():
        payment_event_process(PaymentEvent.objects.get().pk)
        transaction.on_commit(lambda: later.append("ran"))

    # Then the webhook was acknowledged, the news applied, nothing raised after the commit, the
    # callbacks after it ran, and the step is due for the sweeper within the grace of its message
    assert answer.status_code == 202
    payment.refresh_from_db()
    assert PaymentEvent.objects.get().state == EventState.PROCESSED
    assert runs.plan_for(payment.booking, payment, open_operation=False).step == step
    assert later == ["ran"]
    assert "booking payment run not queued; the sweeper will queue it" in caplog.messages
    assert payment.next_check_at <= timezone.now() + timedelta(seconds=settings.PAYMENTS_RUN_GRACE_S)
    grace_later = timezone.now() + timedelta(seconds=settings.PAYMENTS_RUN_GRACE_S + 1)
    assert (payment.booking_id, payment.booking.partner.code) in due_payments(now=grace_later, limit=10)


def test_a_body_larger_than_an_event_may_be_is_refused(db, settings):
    settings.WEBHOOK_MAX_BYTES = 100
    payment = paying_booking()

    response = deliver(event("payment_intent.succeeded", intent(payment, "succeeded")))

    assert response.status_code == 413 and PaymentEvent.objects.count() == 0


# --- a refund the card refused after it was made (charge.refund.updated) ------------------------
FAILED_REFUND = "re_" + "f" * 24


def refunded_in_full(*, refund_state: str = OperationState.SUCCEEDED) -> tuple[Payment, PaymentOperation]:
    """A cancelled booking's payment, captured and refunded in full by our operation (as the run
    recorded its answer), and told so."""
    payment = paying_booking(
        S.CANCELLED,
        P.CAPTURED,
        provider_intent_id="pi_" + "r" * 24,
        provider_status="succeeded",
        captured_amount=Decimal("360.00"),
        refunded_amount=Decimal("360.00"),
    )
    told = PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00"), Decimal("360.00"))
    with transaction.atomic():  # the view as the customer was shown it: cancelled, refunded
        customer_view.refresh(payment.booking, actor="worker", payment=told)
    operation = PaymentOperation.objects.create(
        payment=payment,
        kind=OperationKind.REFUND,
        seq=1,
        idempotency_key=f"{payment.pk}:refund:1",
        amount=Decimal("360.00"),
        state=refund_state,
        calls_in_doubt=1 if refund_state == OperationState.OPEN else 0,
        provider_object_id="" if refund_state == OperationState.OPEN else FAILED_REFUND,
        closed_at=None if refund_state == OperationState.OPEN else timezone.now(),
    )
    return payment, operation


def refund_object(payment: Payment, operation: PaymentOperation, status: str = "failed", **extra) -> dict:
    return {
        "id": FAILED_REFUND,
        "object": "refund",
        "amount": 36_000,
        "balance_transaction": "txn_" + "a" * 24,
        "charge": "ch_" + "c" * 24,
        "currency": "eur",
        "metadata": {"operation": operation.idempotency_key},
        "payment_intent": payment.provider_intent_id,
        "reason": "requested_by_customer",
        "status": status,
        **({"failure_reason": "expired_or_canceled_card"} if status == "failed" else {}),
        **extra,
    }


def charge_object(payment: Payment, refunded: int) -> dict:
    return {
        "id": "ch_" + "c" * 24,
        "object": "charge",
        "amount": 36_000,
        "amount_captured": 36_000,
        "amount_refunded": refunded,
        "captured": True,
        "currency": "eur",
        "payment_intent": payment.provider_intent_id,
    }


def money_mails(payment: Payment) -> list[str]:
    return list(payment.booking.notifications.filter(kind="money").values_list("money__code", flat=True))


def test_a_refund_the_card_refused_is_no_longer_refunded_and_its_copies_change_nothing(db):
    payment, operation = refunded_in_full()
    body = event("charge.refund.updated", refund_object(payment, operation))

    first = deliver(body)
    payment_event_process(PaymentEvent.objects.get().pk)
    again = deliver(body)  # the provider's redelivery: the same event
    copy = deliver(event("charge.refund.updated", refund_object(payment, operation)))  # another event

    assert [r.json()["status"] for r in (first, again, copy)] == ["accepted", "duplicate", "known"]
    payment.refresh_from_db()
    operation.refresh_from_db()
    assert (payment.refunded_amount, payment.failed_refunds_owed) == (Decimal("0.00"), Decimal("360.00"))
    assert (operation.state, operation.failure_reason) == (OperationState.FAILED, "expired_or_canceled_card")
    assert operation.failed_at is not None
    booking = payment.booking
    booking.refresh_from_db()
    assert booking.customer_money == {
        **booking.customer_money,
        "code": "refund_failed",
        "refund_failed": "360.00",
    }
    assert booking.customer_money["refunded"] == "0.00"
    assert money_mails(payment) == ["refund_failed"]  # told once
    assert kinds(booking).count("payment.refund.failed") == 1
    assert payment.next_check_at is None  # support's: automation never asks the card again


def test_an_older_total_after_the_failure_never_counts_the_refund_again(db):
    payment, operation = refunded_in_full()
    deliver(event("charge.refund.updated", refund_object(payment, operation)))
    payment_event_process(PaymentEvent.objects.get().pk)
    # the charge.refunded of the refund, held back at the provider, arrives after its failure
    older = deliver(event("charge.refunded", charge_object(payment, refunded=36_000)))
    newer = deliver(event("charge.refunded", charge_object(payment, refunded=0)))

    payment.refresh_from_db()
    assert [older.json()["status"], newer.json()["status"]] == ["known", "known"]
    assert (payment.refunded_amount, payment.failed_refunds_owed) == (Decimal("0.00"), Decimal("360.00"))


def test_an_older_total_after_the_failure_was_paid_back_another_way_never_counts_it_either(db):
    """Support paid the 360 owed back by bank transfer: owed back 0, paid back another way 360.
    The provider still holds the refund failed; a total of it from before the failure, read less
    only what is owed back, would count it again as refunded: given back twice in our ledger."""
    payment, operation = refunded_in_full()
    deliver(event("charge.refund.updated", refund_object(payment, operation)))
    payment_event_process(PaymentEvent.objects.get().pk)
    Payment.objects.filter(pk=payment.pk).update(
        failed_refunds_owed=Decimal("0.00"), refunded_outside=Decimal("360.00")
    )

    older = deliver(event("charge.refunded", charge_object(payment, refunded=36_000)))

    payment.refresh_from_db()
    assert older.json()["status"] == "known"
    assert (payment.refunded_amount, payment.failed_refunds_owed, payment.refunded_outside) == (
        Decimal("0.00"),
        Decimal("0.00"),
        Decimal("360.00"),
    )


def test_a_refund_the_provider_says_succeeded_changes_nothing(db):
    payment, operation = refunded_in_full()
    written = kinds(payment.booking)

    response = deliver(event("charge.refund.updated", refund_object(payment, operation, "succeeded")))

    payment.refresh_from_db()
    assert (response.status_code, response.json()["status"]) == (202, "known")
    assert (payment.refunded_amount, payment.failed_refunds_owed) == (Decimal("360.00"), Decimal("0.00"))
    assert kinds(payment.booking) == written and money_mails(payment) == []


def test_a_late_failure_after_support_refunded_again_changes_nothing(db):
    # the failure was applied, and support's refund (a new operation, a new key) gave it back
    payment, first = refunded_in_full(refund_state=OperationState.FAILED)
    PaymentOperation.objects.create(
        payment=payment,
        kind=OperationKind.REFUND,
        seq=2,
        idempotency_key=f"{payment.pk}:refund:2",
        amount=Decimal("360.00"),
        state=OperationState.SUCCEEDED,
        provider_object_id="re_" + "s" * 24,
        closed_at=timezone.now(),
    )
    written = kinds(payment.booking)

    late = deliver(event("charge.refund.updated", refund_object(payment, first)))

    payment.refresh_from_db()
    assert (late.status_code, late.json()["status"]) == (202, "known")
    assert (payment.refunded_amount, payment.failed_refunds_owed) == (Decimal("360.00"), Decimal("0.00"))
    assert kinds(payment.booking) == written and money_mails(payment) == []


def test_a_failure_while_the_refund_s_answer_is_lost_is_never_counted_by_that_answer(db):
    # the refund's call timed out (its operation open, no id known); its failure comes first,
    # applied by the sweeper's copy; then the call under its key is answered (replayed: succeeded)
    payment, operation = refunded_in_full(refund_state=OperationState.OPEN)
    Payment.objects.filter(pk=payment.pk).update(refunded_amount=Decimal("0.00"))
    assert deliver(event("charge.refund.updated", refund_object(payment, operation))).json()["status"] == (
        "accepted"
    )
    payment_event_process(PaymentEvent.objects.get().pk)
    replayed = CallResult(
        CallOutcome.OK,
        http_status=200,
        replayed=True,
        object_id=FAILED_REFUND,
        refund=refund_truth(refund_object(payment, operation, "succeeded"), "EUR"),
    )

    runs._record(payment.booking_id, operation.pk, replayed, first_call=False, actor="worker", actor_label="")

    payment.refresh_from_db()
    operation.refresh_from_db()
    assert (operation.state, operation.provider_object_id) == (OperationState.FAILED, FAILED_REFUND)
    assert (payment.refunded_amount, payment.failed_refunds_owed) == (Decimal("0.00"), Decimal("360.00"))
    assert (
        payment.booking.__class__.objects.get(pk=payment.booking_id).customer_money["code"] == "refund_failed"
    )
