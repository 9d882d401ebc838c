"""Request bodies against gunicorn as the Procfile runs it (config/request_bodies.py).

A body sent chunked (`Transfer-Encoding: chunked`, no Content-Length): Django reads bodies by
their Content-Length only, so a chunked one is read (bounded by the body limit) and handed on
with its length. Before, such a body was read as empty: every field "required", no 413, a signed
webhook's signature refused. A body the application refuses unread is dropped before the
connection closes, so the client reads the answer instead of a reset."""

from __future__ import annotations

import io
import json
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from http.client import HTTPConnection
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from bookings.models import Booking
from config.request_bodies import DRAIN_FOR_S, RequestBodyMiddleware
from partners.models import InboundEvent
from payments.models import PaymentEvent
from tests.config.test_outages import _database_url
from tests.factories import OfferFactory, PartnerFactory, TokenFactory, UserFactory
from tests.helpers import unique_code
from tests.own_servers import ProjectProcesses
from tests.partners.conftest import WEBHOOK_SECRET
from tests.partners.test_webhook_abuse import delivery, signed_headers
from tests.payments.conftest import WEBHOOK_SECRET as PAYMENTS_WEBHOOK_SECRET
from tests.payments.test_webhooks import event, intent, paying_booking, signature

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def web(transactional_db, tmp_path: Path) -> Iterator[int]:
    """gunicorn on this test's database; its port."""
    env = {"DATABASE_URL": _database_url(), "STRIPE_WEBHOOK_SECRET": PAYMENTS_WEBHOOK_SECRET}
    processes = ProjectProcesses(tmp_path, env)
    try:
        yield int(processes.web().rsplit(":", 1)[1])
    finally:
        processes.stop_all()


def post_chunked(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """POST `body` in 64 KiB chunks, with no Content-Length; the status and the JSON answer."""
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    connection = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=iter(chunks), headers=headers, encode_chunked=True)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_chunked_booking_is_read_and_a_chunked_body_over_the_limit_is_413(web):
    offer = OfferFactory()
    start = timezone.now().date() + timedelta(days=30)
    stay = {
        "offer": offer.pk,
        "start_date": str(start),
        "end_date": str(start + timedelta(days=2)),
        "guests": 2,
    }
    headers = {
        "Authorization": f"Token {TokenFactory(user=UserFactory()).key}",
        "Content-Type": "application/json",
        "Idempotency-Key": "chunked-1",
    }

    booked = post_chunked(web, "/api/v1/bookings", json.dumps(stay).encode(), headers)
    too_large = post_chunked(
        web, "/api/v1/bookings", json.dumps({**stay, "pad": "x" * 2 * 1024 * 1024}).encode(), headers
    )

    assert booked[0] == 202, booked
    assert Booking.objects.get(reference=booked[1]["reference"]).guests == 2
    assert too_large == (
        413,
        {
            "error": {
                "code": "payload_too_large",
                "message": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.",
            }
        },
    )


def test_a_chunked_partner_webhook_verifies_and_one_over_the_limit_is_413(web):
    ref_partner = PartnerFactory(code=unique_code("chunked"), webhook_secret=WEBHOOK_SECRET)
    path = f"/partners/{ref_partner.code}/webhooks/"
    raw = delivery("BK-CHUNKED")
    oversized = delivery("BK-CHUNKED", pad=2 * 1024 * 1024)

    stored = post_chunked(web, path, raw, signed_headers(raw))
    refused = post_chunked(web, path, oversized, signed_headers(oversized))

    assert stored[0] == 202, stored
    assert InboundEvent.objects.get(partner=ref_partner, signature_valid=True).body_size == len(raw)
    assert refused == (
        413,
        {"error": {"code": "payload_too_large", "message": refused[1]["error"]["message"]}},
    )
    evidence = InboundEvent.objects.get(partner=ref_partner, signature_valid=False)
    # declared as read: one byte past the body limit, a lower bound of its size
    assert evidence.body_size == settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1


def test_a_chunked_payment_webhook_verifies_and_one_over_the_limit_is_413(web):
    """The provider's receiver reads the same way: a chunked event is stored with the bytes it
    was signed over, one too large refused."""
    held = intent(paying_booking(), "requires_capture")
    raw = event("payment_intent.amount_capturable_updated", held)
    oversized = event("payment_intent.amount_capturable_updated", {**held, "pad": "x" * 2 * 1024 * 1024})
    headers = {"Content-Type": "application/json"}

    stored = post_chunked(web, "/payments/webhooks/", raw, {**headers, "Stripe-Signature": signature(raw)})
    refused = post_chunked(
        web, "/payments/webhooks/", oversized, {**headers, "Stripe-Signature": signature(oversized)}
    )

    assert stored[0] == 202, stored
    assert bytes(PaymentEvent.objects.get().body) == raw
    assert refused[0] == 413, refused
    assert refused[1]["error"]["code"] == "payload_too_large"
    assert PaymentEvent.objects.count() == 1


def test_a_chunked_body_a_server_does_not_end_is_411_never_read_as_empty():
    """A server that does not end `wsgi.input` at the body's end (wsgiref, runserver) cannot be
    read to it: 411, not an empty body."""
    answered = []

    def django(environ, start_response):  # pragma: no cover - must not be reached
        raise AssertionError("the request reached Django")

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/bookings",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(b"{}"),
    }
    body = RequestBodyMiddleware(django)(environ, lambda status, headers: answered.append(status))

    assert answered == ["411 Length Required"]
    assert json.loads(b"".join(body))["error"]["code"] == "length_required"


def post_declared(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """POST `body` with its Content-Length, all of it sent before the answer is read."""
    connection = HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("send", [post_chunked, post_declared], ids=["chunked", "content-length"])
def test_a_client_sending_a_body_over_the_limit_reads_the_413_not_a_reset(web, send):
    """A client sends its whole body before it reads the answer (http.client, requests, curl).
    The server answers 413 having read at most the limit, and closing then with the rest unread
    would reset the connection under the client: a broken pipe or a reset, never the 413. What is
    left of the body is read and dropped (bounded) before the connection closes."""
    headers = {
        "Authorization": f"Token {TokenFactory(user=UserFactory()).key}",
        "Content-Type": "application/json",
        "Idempotency-Key": "oversized-1",
    }
    body = json.dumps({"pad": "x" * 4 * 1024 * 1024}).encode()

    answers = [send(web, "/api/v1/bookings", body, headers) for _ in range(5)]

    assert {status for status, _ in answers} == {413}
    assert {answer["error"]["code"] for _, answer in answers} == {"payload_too_large"}


@pytest.fixture
def one_thread_web(transactional_db, tmp_path: Path) -> Iterator[int]:
    """gunicorn with one worker thread: a thread held is the whole server."""
    processes = ProjectProcesses(tmp_path, {"DATABASE_URL": _database_url()})
    try:
        yield int(processes.web(threads=1).rsplit(":", 1)[1])
    finally:
        processes.stop_all()


def test_a_client_that_stops_sending_holds_the_thread_no_longer_than_the_drain_bound(one_thread_web):
    """A client declares 50 MB, sends 1 KiB, reads its 413 and keeps the connection open. The
    drain's reads are bounded by the time left: the thread is free for the next request."""
    key = TokenFactory(user=UserFactory()).key
    stalled = socket.create_connection(("127.0.0.1", one_thread_web))
    stalled.sendall(
        b"POST /api/v1/bookings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Token {key}\r\n".encode()
        + b"Content-Type: application/json\r\nIdempotency-Key: stall-1\r\n"
        + b"Content-Length: 50000000\r\n\r\n"
        + b"x" * 1024
    )
    stalled.settimeout(10)
    try:
        assert stalled.recv(4096).startswith(b"HTTP/1.1 413")
        time.sleep(DRAIN_FOR_S + 2)  # past the drain's bound (gunicorn's own is 5 s too)
        connection = HTTPConnection("127.0.0.1", one_thread_web, timeout=5)
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
        connection.close()
    finally:
        stalled.close()

    assert status == 200
