"""The webhook receiver (invariant 9): verified, deduplicated, stored raw, acknowledged fast,
processed asynchronously through the one door."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks.webhooks import Webhook

from bookings.states import BookingState
from config.errors import Conflict
from partners.connectors.base import CallResult
from partners.connectors.reference import parse_reservation
from partners.models import (
    InboundEvent,
    InboundResult,
    InboundState,
    Operation,
    Outcome,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
)
from partners.services.calls import attempt_open
from partners.services.submission import record_create_outcome
from partners.services.webhooks import inbound_event_process, inbound_event_replay
from tests.helpers import queued_messages, wait_until
from tests.partners.conftest import WEBHOOK_SECRET, timeline, transitions

S = BookingState
# The terms every delivery below states (`reservation`): its bookings are made on them, since the
# one door compares a partner's terms with the booking's.
STAY = {
    "start_date": date(2027, 3, 1),
    "end_date": date(2027, 3, 4),
    "guests": 2,
    "total_price": Decimal("360.00"),
    "currency": "EUR",
}


@pytest.fixture
def make_booking(make_booking):
    return lambda partner, status=S.REQUESTED, **fields: make_booking(partner, status, **{**STAY, **fields})


def reservation(ref="R-1", *, client_reference="BK-NOBODY", status="confirmed", version=1) -> dict:
    return {
        "id": ref,
        "client_reference": client_reference,
        "product_id": "hotel-42-dbl",
        "start_date": "2027-03-01",
        "end_date": "2027-03-04",
        "guests": 2,
        "total_price": "360.00",
        "currency": "EUR",
        "status": status,
        "reason": None,
        "version": version,
        "created_at": "2027-01-01T12:00:00.000+01:00",
        "updated_at": f"2027-01-01T12:00:{version:02d}.000+01:00",
    }


def body(**kwargs) -> bytes:
    data = {
        "type": "reservation.updated",
        "timestamp": "2027-01-01T12:00:05.000+01:00",
        "data": reservation(**kwargs),
    }
    return json.dumps(data, separators=(",", ":")).encode()


def signed(
    raw: bytes, *, event_id: str | None = None, at: datetime | None = None, secret: str = WEBHOOK_SECRET
):
    event_id = event_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {
        "HTTP_WEBHOOK_ID": event_id,
        "HTTP_WEBHOOK_TIMESTAMP": str(int(at.timestamp())),
        "HTTP_WEBHOOK_SIGNATURE": Webhook(secret).sign(event_id, at, raw.decode()),
    }


@pytest.fixture
def post(client, ref_partner):
    def send(raw: bytes, headers: dict, code: str | None = None):
        url = f"/partners/{code or ref_partner.code}/webhooks/"
        return client.post(url, data=raw, content_type="application/json", **headers)

    return send


@pytest.fixture
def webhooks_queue(broker):
    broker.flush("webhooks")
    yield "webhooks"
    broker.flush("webhooks")


def test_valid_delivery_is_stored_raw_acknowledged_and_queued_after_commit(
    post, ref_partner, broker, webhooks_queue, django_capture_on_commit_callbacks
):
    raw = body()
    headers = signed(raw, event_id="msg_1")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = post(raw, headers)

    assert response.status_code == 202
    assert response.json() == {"status": "accepted", "message": "Stored; it will be processed shortly."}
    event = InboundEvent.objects.get()
    assert (event.event_id, bytes(event.raw_body), event.signature_valid, event.state) == (
        "msg_1",
        raw,
        True,
        InboundState.RECEIVED,
    )
    assert set(event.headers) >= {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert "authorization" not in event.headers and "cookie" not in event.headers
    assert len(callbacks) == 1
    assert [(m.actor_name, m.args) for m in queued_messages(broker, webhooks_queue)] == [
        ("process_inbound_event", (event.pk,))
    ]
    assert PartnerReservation.objects.count() == 0  # not applied on receipt: a worker does it


# Accept headers a sender may send: a webhook's sender reads our status code alone. DRF's
# negotiation refused each before the receiver ran (406), nothing stored, redelivered for hours.
ACCEPTS = [
    "text/plain",
    "application/xml, text/html;q=0.9",
    "))not a media type((;q=x",
]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_a_delivery_is_stored_and_answered_in_json_whatever_its_accept_header_says(post, ref_partner, accept):
    raw = body()
    headers = {**signed(raw, event_id="msg_accept"), "HTTP_ACCEPT": accept}
    forged = {**signed(raw, secret="whsec_" + "V3JvbmdXcm9uZ1dyb25nV3JvbmdXcm9uZzA="), "HTTP_ACCEPT": accept}

    accepted, again, refused = post(raw, headers), post(raw, headers), post(raw, forged)
    unknown = post(raw, headers, code="nobody-here")

    assert (accepted.status_code, accepted["Content-Type"]) == (202, "application/json")
    assert accepted.json()["status"] == "accepted"
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_signature")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    stored = InboundEvent.objects.get(event_id="msg_accept", duplicate_of=None)
    assert (bytes(stored.raw_body), stored.signature_valid) == (raw, True)
    assert stored.state == InboundState.RECEIVED
    assert InboundEvent.objects.filter(signature_valid=False).count() == 1  # the forgery's evidence


def test_stored_delivery_is_applied_once_through_the_one_door(post, ref_partner, make_booking):
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)
    post(raw, signed(raw))
    event = InboundEvent.objects.get()

    inbound_event_process(event.pk)
    inbound_event_process(event.pk)  # the actor run twice (at-least-once delivery)

    event.refresh_from_db()
    assert (event.state, event.result, event.booking_id) == (
        InboundState.PROCESSED,
        InboundResult.APPLIED,
        booking.pk,
    )
    assert PartnerObservation.objects.count() == 1
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert transitions(booking) == [("pending_partner", "confirmed")]


@pytest.mark.django_db(transaction=True)
def test_delivery_is_processed_by_a_real_worker(
    post, ref_partner, make_booking, partner_worker, webhooks_queue
):
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    partner_worker(ref_partner)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)

    assert post(raw, signed(raw)).status_code == 202

    wait_until(lambda: InboundEvent.objects.filter(state=InboundState.PROCESSED).exists(), what="processing")
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert InboundEvent.objects.get().result == InboundResult.APPLIED


@pytest.mark.parametrize("debug", [False, True])
def test_the_receiver_answers_at_its_url_without_the_trailing_slash_too(client, ref_partner, settings, debug):
    # Senders take the URL verbatim and do not follow a redirect for a POST: a 301 (a 500
    # under DEBUG) from APPEND_SLASH would lose every delivery.
    settings.DEBUG = debug
    raw = body()

    response = client.post(
        f"/partners/{ref_partner.code}/webhooks", data=raw, content_type="application/json", **signed(raw)
    )

    assert (response.status_code, response.json()["status"]) == (202, "accepted")
    assert InboundEvent.objects.get().state == InboundState.RECEIVED


def _assert_refused(
    response,
    status: int,
    code: str,
    *,
    signature_valid: bool,
    state: str = InboundState.REJECTED,
    result: str = InboundResult.REJECTED,
):
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    event = InboundEvent.objects.order_by("-id").first()
    assert (event.state, event.result, event.signature_valid) == (state, result, signature_valid)
    assert event.error
    assert PartnerReservation.objects.count() == 0
    return event


def _assert_invalid(response):
    return _assert_refused(
        response, 400, "malformed_body", signature_valid=True, state=InboundState.INVALID, result=""
    )


def test_forged_signature_is_401_recorded_never_applied(
    post, ref_partner, make_booking, broker, webhooks_queue, django_capture_on_commit_callbacks
):
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference)
    forged = signed(raw, secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")

    with django_capture_on_commit_callbacks(execute=True):
        response = post(raw, forged)

    event = _assert_refused(response, 401, "invalid_signature", signature_valid=False)
    assert bytes(event.raw_body) == raw
    assert queued_messages(broker, webhooks_queue) == []
    booking.refresh_from_db()
    assert booking.status == S.PENDING_PARTNER


def test_tampered_body_is_401(post, ref_partner):
    raw = body(status="pending")
    headers = signed(raw)
    response = post(raw.replace(b'"pending"', b'"confirmed"'), headers)
    _assert_refused(response, 401, "invalid_signature", signature_valid=False)


@pytest.mark.parametrize("age", [timedelta(minutes=6), timedelta(minutes=-6)])
def test_authentic_but_stale_or_future_timestamp_is_401_and_not_applied(post, ref_partner, age):
    raw = body()
    response = post(raw, signed(raw, at=datetime.now(UTC) - age))
    event = _assert_refused(
        response, 401, "timestamp_out_of_tolerance", signature_valid=True, result=InboundResult.LATE
    )
    assert "300 s tolerance" in event.error


def test_a_forged_delivery_out_of_tolerance_is_an_invalid_signature(post, ref_partner):
    raw = body()
    forged = signed(raw, at=datetime.now(UTC) - timedelta(minutes=6), secret="whsec_Zm9yZ2Vk")
    event = _assert_refused(post(raw, forged), 401, "invalid_signature", signature_valid=False)
    assert event.error.startswith("no v1 signature in the webhook-signature header matches")


NOT_A_LIST = "the webhook-signature header is not a space-separated list of v1,<base64> signatures"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        pytest.param({"HTTP_WEBHOOK_SIGNATURE": "v1,!!!not-base64!!!"}, NOT_A_LIST, id="bad-base64"),
        pytest.param({"HTTP_WEBHOOK_SIGNATURE": "no-comma-at-all"}, NOT_A_LIST, id="no-version"),
        pytest.param({"HTTP_WEBHOOK_SIGNATURE": "v1,abc v1"}, NOT_A_LIST, id="second-part-malformed"),
        pytest.param(
            {"HTTP_WEBHOOK_SIGNATURE": "v2,c2lnbmF0dXJl"},
            "the webhook-signature header holds no v1 signature",
            id="other-version-only",
        ),
        pytest.param(
            {"HTTP_WEBHOOK_SIGNATURE": "v1,c2lnbmF0dXJl"},
            "no v1 signature in the webhook-signature header matches the delivery (signed with "
            "another secret, or its body, id or timestamp changed)",
            id="wrong-signature",
        ),
        pytest.param(
            {"HTTP_WEBHOOK_TIMESTAMP": "yesterday"},
            "the webhook-timestamp header is not unix seconds",
            id="bad-timestamp",
        ),
        pytest.param(
            {"HTTP_WEBHOOK_SIGNATURE": ""},
            "the webhook-signature header is missing or empty",
            id="empty-signature",
        ),
        pytest.param({"HTTP_WEBHOOK_ID": ""}, "the webhook-id header is missing or empty", id="empty-id"),
    ],
)
def test_malformed_signature_headers_are_401_not_500_and_say_what_is_wrong(
    post, ref_partner, headers, message
):
    # Our own one-line words naming the header, never the library's ("Missing required headers",
    # "No matching signature found") or a Python exception's ("not enough values to unpack").
    raw = body()
    response = post(raw, {**signed(raw), **headers})
    event = _assert_refused(response, 401, "invalid_signature", signature_valid=False)
    assert (response.json()["error"]["message"], event.error) == (message, message)


@pytest.mark.parametrize("missing", ["HTTP_WEBHOOK_ID", "HTTP_WEBHOOK_TIMESTAMP", "HTTP_WEBHOOK_SIGNATURE"])
def test_a_missing_signature_header_is_401_naming_it(post, ref_partner, missing):
    raw = body()
    headers = {name: value for name, value in signed(raw).items() if name != missing}
    response = post(raw, headers)
    _assert_refused(response, 401, "invalid_signature", signature_valid=False)
    header = missing.removeprefix("HTTP_").lower().replace("_", "-")
    assert response.json()["error"]["message"] == f"the {header} header is missing or empty"


def test_missing_signature_headers_are_401(post, ref_partner):
    response = post(body(), {})
    _assert_refused(response, 401, "invalid_signature", signature_valid=False)


def test_partner_without_a_secret_refuses_everything(post, ref_partner):
    ref_partner.webhook_secret = ""
    ref_partner.save(update_fields=["webhook_secret"])
    raw = body()
    _assert_refused(post(raw, signed(raw)), 401, "invalid_signature", signature_valid=False)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json at all", id="not-json"),
        pytest.param(b'["a list"]', id="not-an-object"),
        pytest.param(b'{"type": "reservation.updated"}', id="no-data"),
        pytest.param(
            b'{"type": "reservation.updated", "data": {"id": "R-1", "status": "teleported"}}', id="bad-status"
        ),
    ],
)
def test_malformed_body_with_a_valid_signature_is_400_quarantined(post, ref_partner, raw):
    response = post(raw, signed(raw))
    _assert_invalid(response)


@pytest.mark.parametrize("value", ["BK-\u0000", "R-\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("field", ["id", "client_reference"])
@pytest.mark.parametrize("age", [timedelta(0), timedelta(hours=1)], ids=["fresh", "late"])
def test_an_authentic_delivery_naming_unstorable_text_is_refused_not_a_crash(
    post, ref_partner, field, age, value
):
    # The bounds refuse a NUL or a lone surrogate (a JSON "\ud800" escape decodes to one); the
    # lookup of the booking it names must not send it to the database (PostgreSQL refuses to
    # compare text holding a NUL, psycopg to encode a surrogate: a 500 where a 400 or 401 is owed).
    data = json.loads(body())
    data["data"][field] = value
    raw = json.dumps(data).encode()

    response = post(raw, signed(raw, at=datetime.now(UTC) - age))

    if age:
        _assert_refused(
            response, 401, "timestamp_out_of_tolerance", signature_valid=True, result=InboundResult.LATE
        )
    else:
        _assert_invalid(response)
    assert bytes(InboundEvent.objects.get().raw_body) == raw


def test_an_event_id_longer_than_we_keep_is_refused_never_cut_into_another(post, ref_partner):
    # Cut to the column, two authentic events sharing their first 200 characters would become one:
    # the second answered "duplicate" and never applied (nor delivered again).
    prefix = "msg_" + "a" * 250
    first, second = body(ref="R-1"), body(ref="R-2")

    answers = [post(raw, signed(raw, event_id=prefix + end)) for raw, end in ((first, "1"), (second, "2"))]

    assert [(a.status_code, a.json()["error"]["code"]) for a in answers] == [(400, "malformed_body")] * 2
    stored = InboundEvent.objects.filter(partner=ref_partner)
    assert set(stored.values_list("state", "signature_valid")) == {(InboundState.INVALID, True)}
    assert "webhook-id is longer than 200 characters" in stored.first().error
    assert PartnerReservation.objects.count() == 0


def signed_bytes(raw: bytes, *, event_id: str = "msg_bytes", at: datetime | None = None) -> dict:
    """Signed as the Standard Webhooks spec says, over the raw body (the library's `sign` takes
    text, so it cannot sign a body that is not UTF-8)."""
    stamp = str(int((at or datetime.now(UTC)).timestamp()))
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, f"{event_id}.{stamp}.".encode() + raw, hashlib.sha256).digest()
    return {
        "HTTP_WEBHOOK_ID": event_id,
        "HTTP_WEBHOOK_TIMESTAMP": stamp,
        "HTTP_WEBHOOK_SIGNATURE": "v1," + base64.b64encode(mac).decode(),
    }


def test_a_signed_body_that_is_not_utf8_is_authentic_but_unreadable(post, ref_partner):
    # The signature covers the bytes, so it verifies: the body, not the signature, is at fault.
    raw = b"\xff\xfe{}"
    response = post(raw, signed_bytes(raw))
    event = _assert_invalid(response)
    assert response.json()["error"]["message"] == "body is not UTF-8 text (byte 0xff at offset 0)"
    assert (bytes(event.raw_body), event.error) == (raw, "body is not UTF-8 text (byte 0xff at offset 0)")


def test_a_body_in_another_unicode_encoding_is_unreadable_not_read(post, ref_partner):
    # JSON over HTTP here is UTF-8; Python's json.loads would also read UTF-16 from bytes.
    raw = json.dumps(json.loads(body())).encode("utf-16")
    _assert_invalid(post(raw, signed_bytes(raw)))


def test_a_late_signed_body_that_is_not_utf8_is_late_not_a_crash(post, ref_partner):
    raw = b"\xff\xfe{}"
    response = post(raw, signed_bytes(raw, at=datetime.now(UTC) - timedelta(hours=1)))
    _assert_refused(
        response, 401, "timestamp_out_of_tolerance", signature_valid=True, result=InboundResult.LATE
    )


def test_a_body_that_is_not_utf8_signed_over_other_bytes_is_401(post, ref_partner):
    response = post(b"\xff\xfe{}", signed(b"{}"))
    _assert_refused(response, 401, "invalid_signature", signature_valid=False)


def test_a_signed_body_that_is_not_json_says_where_in_our_words(post, ref_partner):
    raw = b"{'single': 'quotes'}"
    response = post(raw, signed(raw))
    _assert_invalid(response)
    assert response.json()["error"]["message"] == "body is not JSON (unreadable at line 1, column 2)"


def test_malformed_body_delivered_again_is_refused_again_not_a_crash(post, ref_partner):
    raw = b"not json at all"
    headers = signed(raw, event_id="msg_bad")

    first, second = post(raw, headers), post(raw, headers)

    assert (first.status_code, second.status_code) == (400, 400)
    assert InboundEvent.objects.filter(event_id="msg_bad", state=InboundState.INVALID).count() == 2


def test_unsupported_event_type_is_acknowledged_and_recorded_not_applied(
    post, ref_partner, broker, webhooks_queue, django_capture_on_commit_callbacks
):
    raw = json.dumps({"type": "invoice.paid", "data": {"id": "INV-1"}}).encode()
    with django_capture_on_commit_callbacks(execute=True):
        response = post(raw, signed(raw))

    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    event = InboundEvent.objects.get()
    assert (event.state, event.result) == (InboundState.PROCESSED, InboundResult.UNSUPPORTED)
    assert queued_messages(broker, webhooks_queue) == []


def test_oversized_body_is_413_kept_as_bounded_evidence(post, ref_partner, settings):
    settings.WEBHOOK_MAX_BYTES = 1024
    settings.WEBHOOK_EVIDENCE_BYTES = 512
    raw = body()[:-1] + b', "pad": "' + b"x" * 2000 + b'"}'
    response = post(raw, signed(raw))
    event = _assert_refused(response, 413, "payload_too_large", signature_valid=False)
    assert bytes(event.raw_body) == raw[:512]
    assert (event.body_size, event.body_sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
    assert not event.evidence_complete


def test_body_bigger_than_django_reads_is_413_with_its_first_bytes(post, ref_partner, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    settings.WEBHOOK_EVIDENCE_BYTES = 100
    raw = b'{"pad": "' + b"x" * 5000 + b'"}'
    response = post(raw, signed(raw))
    event = _assert_refused(response, 413, "payload_too_large", signature_valid=False)
    assert bytes(event.raw_body) == raw[:100]
    assert (event.body_size, event.body_sha256) == (len(raw), "")  # never read whole: no hash


def test_replayed_event_id_is_acknowledged_recorded_and_changes_nothing(
    post, ref_partner, make_booking, broker, webhooks_queue, django_capture_on_commit_callbacks
):
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)
    headers = signed(raw, event_id="msg_once")
    with django_capture_on_commit_callbacks(execute=True):
        assert post(raw, headers).status_code == 202
    original = InboundEvent.objects.get()
    inbound_event_process(original.pk)
    before = timeline(booking)
    broker.flush(webhooks_queue)

    with django_capture_on_commit_callbacks(execute=True):
        again = post(raw, signed(raw, event_id="msg_once"))  # the partner's redelivery

    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    copy = InboundEvent.objects.exclude(pk=original.pk).get()
    assert (copy.duplicate_of_id, copy.state, copy.result) == (
        original.pk,
        InboundState.PROCESSED,
        InboundResult.DUPLICATE,
    )
    assert queued_messages(broker, webhooks_queue) == []
    assert PartnerObservation.objects.count() == 1
    assert timeline(booking) == [*before, "webhook.duplicate"]
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED


def test_a_copy_delivered_before_its_original_was_applied_is_on_the_booking_s_timeline_too(
    post, ref_partner, make_booking, broker, webhooks_queue, django_capture_on_commit_callbacks
):
    # A partner that sends each event twice, the copy right behind the original: the original
    # still waits for a worker, so it names no booking of ours yet (seen on a busy machine).
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(raw, signed(raw, event_id="msg_twice")).status_code == 202
        again = post(raw, signed(raw, event_id="msg_twice"))

    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert InboundEvent.objects.get(duplicate_of__isnull=False).booking_id == booking.pk
    assert timeline(booking).count("webhook.duplicate") == 1


@pytest.mark.parametrize("processed", [True, False], ids=["original-applied", "original-queued"])
def test_an_event_id_reused_with_other_content_is_not_applied_but_said_and_synced(
    post,
    ref_partner,
    make_booking,
    broker,
    clean_queues,
    webhooks_queue,
    django_capture_on_commit_callbacks,
    processed,
):
    # The id orders nothing but deliveries: a second content under it is a partner's bug. Answered
    # "duplicate" as before (asking again would send the same), but no longer silently: the
    # timeline says so and the booking is read from the partner at once.
    queue = clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    first = body(client_reference=booking.reference, status="pending", version=1)
    other = body(client_reference=booking.reference, status="cancelled", version=2)
    assert post(first, signed(first, event_id="msg_X")).status_code == 202
    original = InboundEvent.objects.get()
    if processed:
        inbound_event_process(original.pk)
    broker.flush(queue)

    with django_capture_on_commit_callbacks(execute=True):
        again = post(other, signed(other, event_id="msg_X"))

    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    copy = InboundEvent.objects.exclude(pk=original.pk).get()
    assert (copy.duplicate_of_id, copy.result, copy.booking_id) == (
        original.pk,
        InboundResult.DUPLICATE,
        booking.pk,
    )
    assert "with other content: not applied" in copy.error
    assert timeline(booking)[-1] == "webhook.duplicate.other_content"
    assert [(m.actor_name, m.args) for m in queued_messages(broker, queue)] == [
        ("sync_booking", (str(booking.pk),))
    ]
    booking.refresh_from_db()
    assert booking.status == S.PENDING_PARTNER


def duplicates_counted(code: str) -> float:
    """The deliveries' metric of this partner's duplicates, as /metrics shows it."""
    response = Client().get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            if sample.name == "bookings_webhook_deliveries_total" and sample.labels == {
                "partner": code,
                "result": "duplicate",
            }:
                return sample.value
    return 0.0


@pytest.fixture
def duplicate_budget(settings):
    """Duplicates stored at most 3 an hour per partner, counted in a namespace of this test's own."""
    settings.WEBHOOK_DUPLICATE_PARTNER_RATE = "3/hour"
    settings.API_THROTTLE_NAMESPACE = f"throttle-{uuid.uuid4().hex}"
    settings.METRICS_OPEN, settings.METRICS_TOKEN = True, ""


def test_a_replayed_capture_is_counted_stored_within_its_budget_and_told_once(
    post,
    ref_partner,
    make_booking,
    broker,
    webhooks_queue,
    django_capture_on_commit_callbacks,
    duplicate_budget,
):
    # Anyone holding a captured delivery can send it again while its signature is fresh: each copy
    # is answered as a redelivery and counted, but rows stop at the budget and the timeline says
    # it once.
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)
    captured = signed(raw, event_id="msg_captured")
    with django_capture_on_commit_callbacks(execute=True):
        assert post(raw, captured).status_code == 202
    original = InboundEvent.objects.get()
    inbound_event_process(original.pk)
    broker.flush(webhooks_queue)
    counted_before = duplicates_counted(ref_partner.code)

    with django_capture_on_commit_callbacks(execute=True):
        replies = [post(raw, captured) for _ in range(20)]

    assert {(r.status_code, r.json()["status"]) for r in replies} == {(200, "duplicate")}
    assert InboundEvent.objects.filter(duplicate_of=original).count() == 3
    assert timeline(booking).count("webhook.duplicate") == 1
    assert duplicates_counted(ref_partner.code) - counted_before == 20
    assert queued_messages(broker, webhooks_queue) == []
    assert PartnerObservation.objects.count() == 1


def test_each_other_content_under_an_id_is_told_once(
    post, ref_partner, make_booking, clean_queues, django_capture_on_commit_callbacks, duplicate_budget
):
    clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    first = body(client_reference=booking.reference, status="pending", version=1)
    assert post(first, signed(first, event_id="msg_Y")).status_code == 202
    others = [
        body(client_reference=booking.reference, status=new, version=2) for new in ("cancelled", "confirmed")
    ]

    with django_capture_on_commit_callbacks(execute=True):
        statuses = [post(other, signed(other, event_id="msg_Y")).status_code for other in [*others, *others]]

    assert statuses == [200] * 4
    told = booking.events.filter(kind="webhook.duplicate.other_content")
    hashes = sorted(hashlib.sha256(other).hexdigest() for other in others)
    assert sorted(event.data["body_sha256"] for event in told) == hashes


def test_without_redis_a_replay_is_not_stored_but_other_content_is(
    post,
    ref_partner,
    make_booking,
    clean_queues,
    django_capture_on_commit_callbacks,
    duplicate_budget,
    settings,
):
    clean_queues(ref_partner)
    settings.API_THROTTLE_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens: refused at once
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="pending", version=1)
    other = body(client_reference=booking.reference, status="cancelled", version=2)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(raw, signed(raw, event_id="msg_Z")).status_code == 202
        replays = [post(raw, signed(raw, event_id="msg_Z")).status_code for _ in range(3)]
        changed = post(other, signed(other, event_id="msg_Z")).status_code

    assert (replays, changed) == ([200] * 3, 200)
    copies = InboundEvent.objects.filter(duplicate_of__isnull=False)
    assert [c.body_sha256 for c in copies] == [hashlib.sha256(other).hexdigest()]
    assert timeline(booking).count("webhook.duplicate") == 1


def test_a_forged_delivery_cannot_claim_the_event_id_of_the_real_one(post, ref_partner):
    raw = body()
    forged = signed(raw, event_id="msg_x", secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    assert post(raw, forged).status_code == 401

    assert post(raw, signed(raw, event_id="msg_x")).status_code == 202


def test_unknown_partner_is_404_and_stores_nothing(post, ref_partner):
    raw = body()
    response = post(raw, signed(raw), code="no-such-partner")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert InboundEvent.objects.count() == 0


def test_event_for_an_unknown_reservation_opens_an_orphan_case(
    post, ref_partner, broker, clean_queues, django_capture_on_commit_callbacks
):
    queue = clean_queues(ref_partner)
    raw = body(ref="R-stranger", client_reference="BK-UNKNOWN", status="confirmed")
    assert post(raw, signed(raw)).status_code == 202
    event = InboundEvent.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        inbound_event_process(event.pk)

    event.refresh_from_db()
    assert (event.result, event.booking_id) == (InboundResult.UNLINKED, None)
    orphan = PartnerReservation.objects.get(partner_ref="R-stranger")
    assert (orphan.role, orphan.compensation_reason) == ("orphan", "orphan")
    assert event.reservation_id == orphan.pk
    assert [(m.actor_name, m.args) for m in queued_messages(broker, queue)] == [
        ("compensate_reservation", (orphan.pk,))
    ]


def test_out_of_order_events_the_older_one_is_ignored_as_stale(post, ref_partner, make_booking):
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    v3 = body(client_reference=booking.reference, status="cancelled", version=3)
    v2 = body(client_reference=booking.reference, status="confirmed", version=2)
    post(v3, signed(v3))
    post(v2, signed(v2))
    first, second = InboundEvent.objects.order_by("id")

    inbound_event_process(first.pk)
    inbound_event_process(second.pk)

    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.result, second.result) == (InboundResult.APPLIED, InboundResult.STALE)
    reservation = PartnerReservation.objects.get()
    assert (reservation.status, reservation.version) == ("cancelled", 3)
    booking.refresh_from_db()
    assert booking.status == S.FAILED  # the partner cancelled it before it was confirmed
    assert "partner.observation.stale" in timeline(booking)


def test_early_webhook_links_by_client_reference_and_the_late_response_is_a_duplicate(
    post, ref_partner, make_booking
):
    # given a create in flight (attempt committed, no answer yet)
    booking = make_booking(ref_partner, S.SUBMITTING)
    attempt = attempt_open(
        partner=ref_partner, operation=Operation.CREATE, booking=booking, idempotency_key=booking.partner_key
    )
    data = reservation(ref="R-early", client_reference=booking.reference, status="confirmed", version=1)
    raw = json.dumps({"type": "reservation.updated", "data": data}).encode()

    # when the partner's webhook arrives before the response
    post(raw, signed(raw))
    inbound_event_process(InboundEvent.objects.get().pk)

    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert PartnerReservation.objects.get().booking_id == booking.pk
    attempt.refresh_from_db()
    assert attempt.resolution == "partner_holds_reservation"

    # and then the response to the POST
    response = CallResult(outcome=Outcome.OK, http_status=201, reservations=(parse_reservation(data),))
    record_create_outcome(booking.pk, attempt, response)

    observations = list(PartnerObservation.objects.order_by("id").values_list("source", "result"))
    assert observations == [("webhook", "applied"), ("response", "duplicate")]
    assert PartnerReservation.objects.count() == 1
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert transitions(booking) == [("submitting", "confirmed")]
    attempt.refresh_from_db()
    assert attempt.outcome == Outcome.OK
    assert not PartnerAttempt.objects.fencing().exists()


def test_replay_service_reprocesses_a_stored_delivery_through_the_one_door(post, ref_partner, make_booking):
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)
    post(raw, signed(raw))
    event = InboundEvent.objects.get()
    inbound_event_process(event.pk)

    replayed = inbound_event_replay(event.pk, actor_label="support@example.com")

    assert (replayed.state, replayed.result) == (InboundState.PROCESSED, InboundResult.DUPLICATE)
    assert list(PartnerObservation.objects.values_list("result", flat=True)) == ["applied", "duplicate"]
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED


def test_replay_applies_an_authentic_delivery_refused_as_too_old(post, ref_partner, make_booking):
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    raw = body(client_reference=booking.reference, status="confirmed", version=2)
    post(raw, signed(raw, at=datetime.now(UTC) - timedelta(hours=2)))  # e.g. a partner clock far off
    event = InboundEvent.objects.get()
    assert event.state == InboundState.REJECTED

    replayed = inbound_event_replay(event.pk, actor_label="support@example.com")

    assert replayed.result == InboundResult.APPLIED
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED


def test_replay_refuses_a_forged_delivery(post, ref_partner):
    raw = body()
    post(raw, signed(raw, secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="))

    with pytest.raises(Conflict) as refused:
        inbound_event_replay(InboundEvent.objects.get().pk, actor_label="support@example.com")

    assert refused.value.code == "signature_mismatch"
    assert PartnerReservation.objects.count() == 0


def test_partner_clock_skew_is_estimated_from_the_delivery(post, ref_partner):
    raw = body()
    partner_clock = datetime.now(UTC) + timedelta(seconds=90)
    posted_from = timezone.now()

    post(raw, signed(raw, at=partner_clock))

    ref_partner.refresh_from_db()
    assert 88_000 <= ref_partner.clock_skew_ms <= 92_000
    assert posted_from <= ref_partner.clock_skew_measured_at <= timezone.now()


@pytest.mark.parametrize(
    "date",
    [
        "Thu, 01 Jan 1970 00:00:00 GMT",
        format_datetime(datetime.now(UTC) - timedelta(days=30), usegmt=True),  # past the column's ±24.8 days
        "Fri, 31 Dec 9999 23:59:59 -0100",  # past what a datetime holds in UTC
    ],
    ids=["1970", "a-month-behind", "past-9999"],
)
def test_a_date_header_no_clock_writes_is_passed_over_for_the_signed_time(post, ref_partner, date):
    # given an authentic delivery whose (unsigned) Date says what no partner clock would
    raw = body()
    partner_clock = datetime.now(UTC) + timedelta(seconds=90)  # within the signature's tolerance

    first = post(raw, {**signed(raw, event_id="msg_far_date", at=partner_clock), "HTTP_DATE": date})
    again = post(raw, {**signed(raw, event_id="msg_far_date", at=partner_clock), "HTTP_DATE": date})

    # then it is stored and acknowledged as any, its redelivery answered as a duplicate
    assert (first.status_code, first.json()["status"]) == (202, "accepted")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    original = InboundEvent.objects.get(duplicate_of__isnull=True)
    assert (original.event_id, original.headers["date"]) == ("msg_far_date", date)
    # and the partner's clock is read from the signed time instead
    ref_partner.refresh_from_db()
    assert 88_000 <= ref_partner.clock_skew_ms <= 92_000
