"""Connectors against a real HTTP server on 127.0.0.1 that plays scripted partner answers.

Nothing in requests is mocked: the server answers with a status, headers and body, sleeps past
the read timeout, drops the connection after reading the request, or cuts the body short; a
closed port refuses, and a listening socket with a full accept queue never completes a connect.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from partners.connectors import connector_for
from partners.connectors.base import CallResult, CreateRequest
from partners.connectors.http import close_sessions, perform, session_for
from partners.models import Outcome, Partner, ReservationStatus

FIXTURES = Path(__file__).parent / "fixtures"
API_KEY = "sk-test-0123456789-secret"
DATE = "Mon, 01 Feb 2027 10:15:30 GMT"
PARTNER_TIME = datetime(2027, 2, 1, 10, 15, 30, tzinfo=UTC)
REQUEST = CreateRequest(
    client_reference="BK-7F3K2Q",
    product_id="hotel-42-dbl",
    start_date=date(2027, 3, 1),
    end_date=date(2027, 3, 4),
    guests=2,
    total_price=Decimal("360.00"),
    currency="EUR",
)
ALL_CAPABILITIES = ["idempotency_keys", "lookup_by_reference", "webhooks"]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


# --- the scripted partner -------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # JSON-encoded unless bytes; None: empty body
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # sleep before answering
    # "answer"; "drop": close without answering; "cut": short body; "trickle": a byte per 0.1 s
    action: str = "answer"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    client_port: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedPartner:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.partner = self
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def take(self, seen: Seen) -> Reply:
        with self._lock:
            self.seen.append(seen)
            return self.replies.popleft() if self.replies else Reply(599, {"error": "unscripted"})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    partner: ScriptedPartner

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # writes to a client that gave up (read timeout) are expected here


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        reply = self.server.partner.take(
            Seen(
                method=self.command,
                path=url.path,
                query=parse_qs(url.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                client_port=self.client_address[1],
            )
        )
        time.sleep(reply.delay_s)
        if reply.action == "drop":
            self.close_connection = True
            return
        payload = reply.body if isinstance(reply.body, bytes) else b""
        if reply.body is not None and not isinstance(reply.body, bytes):
            payload = json.dumps(reply.body).encode()
        self.send_response_only(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        if reply.action == "cut":
            # Promise more than we send, then hang up: the body arrives broken.
            self.send_header("Content-Length", str(len(payload) + 100))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if reply.action == "trickle":
            for i in range(len(payload)):
                self.wfile.write(payload[i : i + 1])
                self.wfile.flush()
                time.sleep(0.1)
            return
        self.wfile.write(payload)


@pytest.fixture(autouse=True)
def _fresh_sessions() -> Iterator[None]:
    yield
    close_sessions()


@pytest.fixture
def server() -> Iterator[ScriptedPartner]:
    partner = ScriptedPartner()
    yield partner
    partner.close()


def make_partner(
    base_url: str,
    *,
    adapter: str = "reference",
    capabilities: list[str] | None = None,
    timezone: str = "UTC",
    read_timeout_s: float = 2.0,
    connect_timeout_s: float = 0.5,
) -> Partner:
    return Partner(
        code=f"test-{adapter}",
        name="Test partner",
        adapter=adapter,
        base_url=base_url,
        api_key=API_KEY,
        capabilities=ALL_CAPABILITIES if capabilities is None else capabilities,
        connect_timeout_s=connect_timeout_s,
        read_timeout_s=read_timeout_s,
        max_concurrency=4,
        timezone=timezone,
    )


def free_port() -> int:
    """A port nothing listens on: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unconnectable() -> Iterator[str]:
    """A base URL whose connects time out: a listener with a full accept queue drops SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.settimeout(0.2)
        try:
            filler.connect(("127.0.0.1", port))
        except OSError:
            filler.close()
            break
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}"
    for filler in fillers:
        filler.close()
    listener.close()


# --- operations, by adapter -----------------------------------------------------------------

Op = Callable[[Any], CallResult]

REF_OPS: dict[str, Op] = {
    "create": lambda c: c.create(REQUEST, idempotency_key="bk-7f3k2q-1"),
    "get": lambda c: c.get("R-8d1f3a9c"),
    "lookup": lambda c: c.lookup("BK-7F3K2Q"),
    "cancel": lambda c: c.cancel("R-8d1f3a9c"),
}
LEGACY_OPS: dict[str, Op] = {
    "create": lambda c: c.create(REQUEST, idempotency_key="bk-7f3k2q-1"),
    "get": lambda c: c.get("551230"),
    "list_changes": lambda c: c.list_changes(since=datetime(2027, 1, 1, tzinfo=UTC), page=1),
    "cancel": lambda c: c.cancel("551230"),
}
WRITES = {"create", "cancel"}

ERR = fixture  # readability in the tables below

# (operation, status, body, headers) -> (outcome, error_code, retry_after_s)
REFERENCE_TABLE = [
    ("create", 201, ERR("reference/reservation_confirmed.json"), {}, Outcome.OK, "", None),
    ("create", 201, ERR("reference/reservation_pending.json"), {}, Outcome.OK, "", None),
    ("create", 200, ERR("reference/reservation_confirmed.json"), {}, Outcome.OK, "", None),
    ("create", 201, ERR("reference/reservation_rejected.json"), {}, Outcome.REJECTED, "", None),
    (
        "create",
        409,
        ERR("reference/error_request_in_progress.json"),
        {},
        Outcome.TRANSIENT,
        "request_in_progress",
        1.0,
    ),
    (
        "create",
        409,
        ERR("reference/error_request_in_progress.json"),
        {"Retry-After": "3"},
        Outcome.TRANSIENT,
        "request_in_progress",
        3.0,
    ),
    ("create", 409, {"error": "conflict"}, {}, Outcome.AMBIGUOUS, "conflict", None),
    (
        "create",
        422,
        ERR("reference/error_idempotency_key_reused.json"),
        {},
        Outcome.PERMANENT,
        "idempotency_key_reused",
        None,
    ),
    (
        "create",
        422,
        ERR("reference/error_invalid_request.json"),
        {},
        Outcome.PERMANENT,
        "invalid_request",
        None,
    ),
    (
        "create",
        400,
        ERR("reference/error_invalid_request.json"),
        {},
        Outcome.PERMANENT,
        "invalid_request",
        None,
    ),
    (
        "create",
        401,
        ERR("reference/error_unauthorized.json"),
        {},
        Outcome.PERMANENT,
        "unauthorized",
        None,
    ),
    ("create", 403, None, {}, Outcome.PERMANENT, "", None),
    (
        "create",
        429,
        ERR("reference/error_rate_limited.json"),
        {"Retry-After": "7"},
        Outcome.TRANSIENT,
        "rate_limited",
        7.0,
    ),
    ("create", 500, ERR("reference/error_internal.json"), {}, Outcome.AMBIGUOUS, "internal", None),
    ("create", 502, b"<html>bad gateway</html>", {}, Outcome.AMBIGUOUS, "", None),
    ("create", 503, None, {"Retry-After": "2"}, Outcome.AMBIGUOUS, "", 2.0),
    ("create", 201, b"<html>ok</html>", {}, Outcome.AMBIGUOUS, "", None),
    ("create", 201, {"id": "R-1", "status": "weird"}, {}, Outcome.AMBIGUOUS, "", None),
    ("create", 302, None, {"Location": "/elsewhere"}, Outcome.AMBIGUOUS, "", None),
    ("get", 200, ERR("reference/reservation_confirmed.json"), {}, Outcome.OK, "", None),
    ("get", 404, ERR("reference/error_not_found.json"), {}, Outcome.OK, "not_found", None),
    ("get", 404, None, {}, Outcome.OK, "not_found", None),
    ("get", 500, ERR("reference/error_internal.json"), {}, Outcome.TRANSIENT, "internal", None),
    ("get", 503, None, {}, Outcome.TRANSIENT, "", None),
    ("get", 429, None, {"Retry-After": "5"}, Outcome.TRANSIENT, "", 5.0),
    (
        "get",
        401,
        ERR("reference/error_unauthorized.json"),
        {},
        Outcome.PERMANENT,
        "unauthorized",
        None,
    ),
    ("get", 200, b"not json", {}, Outcome.TRANSIENT, "", None),
    ("get", 200, [], {}, Outcome.TRANSIENT, "", None),
    ("lookup", 200, ERR("reference/lookup_duplicates.json"), {}, Outcome.OK, "", None),
    ("lookup", 200, ERR("reference/lookup_empty.json"), {}, Outcome.OK, "", None),
    (
        "lookup",
        404,
        ERR("reference/error_not_found.json"),
        {},
        Outcome.PERMANENT,
        "not_found",
        None,
    ),
    ("lookup", 500, None, {}, Outcome.TRANSIENT, "", None),
    ("lookup", 429, None, {"Retry-After": "1"}, Outcome.TRANSIENT, "", 1.0),
    ("lookup", 200, {"items": []}, {}, Outcome.TRANSIENT, "", None),
    ("lookup", 200, {"data": [{"id": "R-1"}]}, {}, Outcome.TRANSIENT, "", None),
    ("cancel", 200, ERR("reference/reservation_cancelled.json"), {}, Outcome.OK, "", None),
    (
        "cancel",
        409,
        ERR("reference/error_not_cancellable.json"),
        {},
        Outcome.PERMANENT,
        "not_cancellable",
        None,
    ),
    (
        "cancel",
        404,
        ERR("reference/error_not_found.json"),
        {},
        Outcome.PERMANENT,
        "not_found",
        None,
    ),
    ("cancel", 404, None, {}, Outcome.PERMANENT, "not_found", None),
    ("cancel", 500, None, {}, Outcome.AMBIGUOUS, "", None),
    ("cancel", 429, None, {"Retry-After": "4"}, Outcome.TRANSIENT, "", 4.0),
    ("cancel", 200, b"", {}, Outcome.AMBIGUOUS, "", None),
]


@pytest.mark.parametrize(
    ("op", "status", "body", "headers", "outcome", "error_code", "retry_after"), REFERENCE_TABLE
)
def test_reference_classification(
    server: ScriptedPartner,
    op: str,
    status: int,
    body: Any,
    headers: dict[str, str],
    outcome: Outcome,
    error_code: str,
    retry_after: float | None,
) -> None:
    # Given a partner that answers once with this status, body and headers
    server.script(Reply(status, body, {"Date": DATE, **headers}))
    connector = connector_for(make_partner(server.base_url))

    # When the operation runs
    result = REF_OPS[op](connector)

    # Then it is classified, with the partner's clock, and sent exactly once
    assert (result.outcome, result.error_code, result.retry_after_s) == (
        outcome,
        error_code,
        retry_after,
    )
    assert result.http_status == status
    assert result.partner_time == PARTNER_TIME
    assert len(server.seen) == 1
    if outcome not in (Outcome.OK, Outcome.REJECTED):
        assert result.error != ""


LEGACY_TABLE = [
    ("create", 200, ERR("legacy/create_ok.json"), {}, Outcome.OK, ""),
    ("create", 200, ERR("legacy/create_pending.json"), {}, Outcome.OK, ""),
    ("create", 200, ERR("legacy/create_fail_sold_out.json"), {}, Outcome.REJECTED, ""),
    ("create", 200, ERR("legacy/create_fail_other.json"), {}, Outcome.REJECTED, ""),
    ("create", 400, ERR("legacy/error_bad_request.json"), {}, Outcome.PERMANENT, ""),
    ("create", 401, None, {}, Outcome.PERMANENT, ""),
    ("create", 403, None, {}, Outcome.PERMANENT, ""),
    ("create", 503, None, {}, Outcome.AMBIGUOUS, ""),
    ("create", 500, b"Internal Server Error", {}, Outcome.AMBIGUOUS, ""),
    ("create", 200, {"booking_no": 1, "state": "??"}, {}, Outcome.AMBIGUOUS, ""),
    ("create", 200, b"OK", {}, Outcome.AMBIGUOUS, ""),
    ("get", 200, ERR("legacy/booking_ok.json"), {}, Outcome.OK, ""),
    ("get", 404, None, {}, Outcome.OK, "not_found"),
    ("get", 503, None, {}, Outcome.TRANSIENT, ""),
    ("get", 429, None, {}, Outcome.TRANSIENT, ""),
    ("get", 400, ERR("legacy/error_bad_request.json"), {}, Outcome.PERMANENT, ""),
    ("get", 200, b"<html>", {}, Outcome.TRANSIENT, ""),
    ("list_changes", 200, ERR("legacy/listing_page1.json"), {}, Outcome.OK, ""),
    ("list_changes", 503, None, {}, Outcome.TRANSIENT, ""),
    ("list_changes", 400, ERR("legacy/error_bad_request.json"), {}, Outcome.PERMANENT, ""),
    ("list_changes", 404, None, {}, Outcome.PERMANENT, ""),
    ("list_changes", 200, {"items": None}, {}, Outcome.TRANSIENT, ""),
    ("cancel", 200, ERR("legacy/cancel_ok.json"), {}, Outcome.OK, ""),
    ("cancel", 404, None, {}, Outcome.PERMANENT, "not_found"),
    ("cancel", 503, None, {}, Outcome.AMBIGUOUS, ""),
    ("cancel", 400, ERR("legacy/error_bad_request.json"), {}, Outcome.PERMANENT, ""),
    ("cancel", 200, b"done", {}, Outcome.AMBIGUOUS, ""),
]


@pytest.mark.parametrize(("op", "status", "body", "headers", "outcome", "error_code"), LEGACY_TABLE)
def test_legacy_classification(
    server: ScriptedPartner,
    op: str,
    status: int,
    body: Any,
    headers: dict[str, str],
    outcome: Outcome,
    error_code: str,
) -> None:
    server.script(Reply(status, body, {"Date": DATE, **headers}))
    connector = connector_for(make_partner(server.base_url, adapter="legacy"))

    result = LEGACY_OPS[op](connector)

    assert (result.outcome, result.error_code) == (outcome, error_code)
    assert result.http_status == status
    assert result.partner_time == PARTNER_TIME
    assert len(server.seen) == 1


# --- transport failures, every operation ----------------------------------------------------

ALL_OPS = [("reference", op) for op in REF_OPS] + [("legacy", op) for op in LEGACY_OPS]


def run(adapter: str, op: str, partner: Partner) -> CallResult:
    ops = REF_OPS if adapter == "reference" else LEGACY_OPS
    return ops[op](connector_for(partner))


@pytest.mark.parametrize(("adapter", "op"), ALL_OPS)
def test_read_timeout_is_ambiguous_for_writes_transient_for_reads(
    server: ScriptedPartner, adapter: str, op: str
) -> None:
    # Given a partner that received the request and answers after our read timeout
    server.script(Reply(201, fixture("reference/reservation_confirmed.json"), delay_s=0.6))
    partner = make_partner(server.base_url, adapter=adapter, read_timeout_s=0.2)

    started = time.monotonic()
    result = run(adapter, op, partner)

    # Then the outcome is unknown for a write, retryable for a read; it was sent exactly once
    assert result.outcome == (Outcome.AMBIGUOUS if op in WRITES else Outcome.TRANSIENT)
    assert result.http_status is None
    assert "ReadTimeout" in result.error
    assert len(server.seen) == 1
    assert time.monotonic() - started < 0.6


def _read_request(connection: socket.socket) -> bytes:
    """One whole HTTP request: its head, then as many body bytes as Content-Length says."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += connection.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def test_a_connection_given_up_on_is_reset_so_the_request_cannot_land_later() -> None:
    # Given a partner that takes the request but answers only after our read timeout
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, Any] = {}

    def partner_side() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(5)
            seen["request"] = _read_request(connection)
            time.sleep(0.6)  # our client has given up by now
            try:
                seen["after"] = connection.recv(1)  # b"": a polite close; the kernel may re-send
            except ConnectionResetError:
                seen["after"] = "reset"

    thread = threading.Thread(target=partner_side, daemon=True)
    thread.start()
    partner = make_partner(f"http://127.0.0.1:{listener.getsockname()[1]}", read_timeout_s=0.2)

    result = run("reference", "create", partner)
    thread.join(timeout=5)
    listener.close()

    # Then the create is ambiguous, and the connection was reset: a reset drops whatever of the
    # request was still unacknowledged (behind a partition) instead of re-sending it for minutes
    assert result.outcome == Outcome.AMBIGUOUS
    assert seen["request"].startswith(b"POST ")
    assert seen["after"] == "reset"


@pytest.mark.parametrize(("adapter", "op"), ALL_OPS)
def test_dropped_connection_after_send_is_not_retried(server: ScriptedPartner, adapter: str, op: str) -> None:
    # Given a partner that reads the request, then closes the socket without answering
    server.script(Reply(action="drop"))
    partner = make_partner(server.base_url, adapter=adapter)

    result = run(adapter, op, partner)

    assert result.outcome == (Outcome.AMBIGUOUS if op in WRITES else Outcome.TRANSIENT)
    assert result.http_status is None
    assert "ConnectionError" in result.error
    assert len(server.seen) == 1  # never sent twice: that is how duplicates are made


@pytest.mark.parametrize(("adapter", "op"), ALL_OPS)
def test_body_cut_short_is_ambiguous_for_writes(server: ScriptedPartner, adapter: str, op: str) -> None:
    server.script(Reply(200, fixture("reference/reservation_confirmed.json"), action="cut"))
    partner = make_partner(server.base_url, adapter=adapter)

    result = run(adapter, op, partner)

    assert result.outcome == (Outcome.AMBIGUOUS if op in WRITES else Outcome.TRANSIENT)
    assert result.error.startswith("sent, no complete answer")
    assert len(server.seen) == 1


@pytest.mark.parametrize(("adapter", "op"), ALL_OPS)
def test_refused_connection_is_transient_after_three_quick_attempts(
    adapter: str, op: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a port where nothing listens
    partner = make_partner(f"http://127.0.0.1:{free_port()}", adapter=adapter)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="partners.http"):
        result = run(adapter, op, partner)

    # Then nothing can have happened: transient, after 3 attempts (2 retries) within a second
    assert result.outcome == Outcome.TRANSIENT
    assert result.http_status is None
    assert result.error.startswith("not sent")
    retries = [r for r in caplog.records if r.getMessage() == "partner connect failed, retrying"]
    assert [r.attempt for r in retries] == [1, 2]
    assert time.monotonic() - started < 1.5


def test_refused_connection_counts_three_attempts() -> None:
    partner = make_partner(f"http://127.0.0.1:{free_port()}")

    exchange = perform(partner, "POST", "/v1/reservations", write=True, auth_headers={})

    assert (exchange.failure, exchange.attempts) == (Outcome.TRANSIENT, 3)


def test_connect_timeout_is_transient_and_retried(unconnectable: str) -> None:
    # Given a listener whose accept queue is full: our connect never completes
    partner = make_partner(unconnectable, connect_timeout_s=0.1)

    started = time.monotonic()
    exchange = perform(partner, "POST", "/v1/reservations", write=True, auth_headers={})

    assert (exchange.failure, exchange.attempts) == (Outcome.TRANSIENT, 3)
    assert "ConnectTimeout" in exchange.failure_reason
    assert time.monotonic() - started < 2.0


def test_unresolvable_host_is_transient() -> None:
    partner = make_partner("http://partner.invalid")

    result = connector_for(partner).create(REQUEST, idempotency_key="k")

    assert result.outcome == Outcome.TRANSIENT
    assert result.error.startswith("not sent")


def test_bad_base_url_is_permanent() -> None:
    partner = make_partner("not-a-url")

    result = connector_for(partner).get("R-1")

    assert result.outcome == Outcome.PERMANENT


def test_5xx_on_a_write_is_sent_once_no_hidden_retries(server: ScriptedPartner) -> None:
    server.script(Reply(503), Reply(503), Reply(503))
    connector = connector_for(make_partner(server.base_url))

    result = connector.create(REQUEST, idempotency_key="k")

    assert result.outcome == Outcome.AMBIGUOUS
    assert len(server.seen) == 1


@pytest.mark.parametrize(("op", "outcome"), [("get", Outcome.TRANSIENT), ("cancel", Outcome.AMBIGUOUS)])
def test_trickling_body_is_cut_off_by_a_total_deadline(
    server: ScriptedPartner, op: str, outcome: Outcome
) -> None:
    # Given a body whose every byte comes within the read timeout, but the whole does not
    server.script(Reply(200, b'{"id": "R-1", "status": "confirmed"}', action="trickle"))
    partner = make_partner(server.base_url, read_timeout_s=0.3)

    started = time.monotonic()
    result = REF_OPS[op](connector_for(partner))

    # Then we stop waiting after about one more read timeout, not after the whole trickle (3.6 s)
    assert result.outcome == outcome
    assert "not received within the read timeout" in result.error
    assert time.monotonic() - started < 1.0


def test_oversized_body_is_refused(server: ScriptedPartner) -> None:
    server.script(Reply(200, b"x" * (11 * 1024 * 1024)))

    result = connector_for(make_partner(server.base_url)).get("R-1")

    assert result.outcome == Outcome.TRANSIENT
    assert "larger than" in result.error


# --- the exact requests sent ----------------------------------------------------------------


def test_reference_create_request_on_the_wire(server: ScriptedPartner) -> None:
    server.script(Reply(201, fixture("reference/reservation_confirmed.json")))
    connector = connector_for(make_partner(server.base_url, capabilities=["idempotency_keys"]))

    result = connector.create(REQUEST, idempotency_key="bk-7f3k2q-1")

    (seen,) = server.seen
    assert (seen.method, seen.path, seen.query) == ("POST", "/v1/reservations", {})
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert seen.headers["idempotency-key"] == "bk-7f3k2q-1"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["accept"] == "application/json"
    assert "x-api-key" not in seen.headers
    assert seen.json == {
        "client_reference": "BK-7F3K2Q",
        "product_id": "hotel-42-dbl",
        "start_date": "2027-03-01",
        "end_date": "2027-03-04",
        "guests": 2,
        "total_price": "360.00",
        "currency": "EUR",
    }
    assert result.reservation is not None
    assert result.reservation.partner_ref == "R-8d1f3a9c"
    assert result.reservation.status == ReservationStatus.CONFIRMED
    assert result.reservation.version == 2


def test_reference_create_without_capability_sends_no_idempotency_key(
    server: ScriptedPartner,
) -> None:
    server.script(Reply(201, fixture("reference/reservation_confirmed.json")))
    connector = connector_for(make_partner(server.base_url, capabilities=[]))

    connector.create(REQUEST, idempotency_key="bk-7f3k2q-1")

    (seen,) = server.seen
    assert "idempotency-key" not in seen.headers
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"


def test_reference_rejected_create_carries_the_reservation(server: ScriptedPartner) -> None:
    server.script(Reply(201, fixture("reference/reservation_rejected.json")))

    result = connector_for(make_partner(server.base_url)).create(REQUEST, idempotency_key="k")

    assert result.outcome == Outcome.REJECTED
    assert result.reservation is not None
    assert (result.reservation.status, result.reservation.reason) == (
        ReservationStatus.REJECTED,
        "sold_out",
    )


def test_reference_get_request_on_the_wire(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("reference/reservation_confirmed.json")))

    result = connector_for(make_partner(server.base_url)).get("R-8d1f/3a9c")

    (seen,) = server.seen
    assert (seen.method, seen.path, seen.body) == ("GET", "/v1/reservations/R-8d1f%2F3a9c", b"")
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert result.reservation is not None and result.reservation.partner_ref == "R-8d1f3a9c"


def test_reference_get_404_is_ok_without_reservation(server: ScriptedPartner) -> None:
    server.script(Reply(404, fixture("reference/error_not_found.json")))

    result = connector_for(make_partner(server.base_url)).get("R-nope")

    assert (result.ok, result.reservations, result.error_code) == (True, (), "not_found")


def test_reference_lookup_request_and_duplicates(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("reference/lookup_duplicates.json")))

    result = connector_for(make_partner(server.base_url)).lookup("BK-DUP001")

    (seen,) = server.seen
    assert (seen.method, seen.path) == ("GET", "/v1/reservations")
    assert seen.query == {"client_reference": ["BK-DUP001"]}
    assert [r.partner_ref for r in result.reservations] == ["R-aaa00001", "R-aaa00002"]
    assert {r.client_reference for r in result.reservations} == {"BK-DUP001"}


def test_reference_lookup_without_capability_makes_no_call(server: ScriptedPartner) -> None:
    connector = connector_for(make_partner(server.base_url, capabilities=["idempotency_keys"]))

    result = connector.lookup("BK-7F3K2Q")

    assert (result.outcome, result.error_code) == (Outcome.PERMANENT, "not_supported")
    assert server.seen == []


def test_reference_list_changes_is_not_supported(server: ScriptedPartner) -> None:
    result = connector_for(make_partner(server.base_url)).list_changes(since=datetime(2027, 1, 1, tzinfo=UTC))

    assert (result.outcome, result.error_code) == (Outcome.PERMANENT, "not_supported")
    assert server.seen == []


def test_reference_cancel_request_on_the_wire(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("reference/reservation_cancelled.json")))

    result = connector_for(make_partner(server.base_url)).cancel("R-8d1f3a9c")

    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/v1/reservations/R-8d1f3a9c/cancel")
    assert seen.headers["authorization"] == f"Bearer {API_KEY}"
    assert "idempotency-key" not in seen.headers
    assert result.reservation is not None
    assert (result.reservation.status, result.reservation.version) == (
        ReservationStatus.CANCELLED,
        3,
    )


def test_legacy_create_request_on_the_wire(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("legacy/create_ok.json")))
    partner = make_partner(server.base_url, adapter="legacy", capabilities=["idempotency_keys"])

    result = connector_for(partner).create(REQUEST, idempotency_key="bk-7f3k2q-1")

    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/api/bookings")
    assert seen.headers["x-api-key"] == API_KEY
    assert "authorization" not in seen.headers
    assert "idempotency-key" not in seen.headers  # never, whatever the row says
    assert seen.json == {
        "ref": "BK-7F3K2Q",
        "item": "hotel-42-dbl",
        "from": "2027-03-01",
        "to": "2027-03-04",
        "pax": 2,
        "amount": "360.00",
        "ccy": "EUR",
    }
    snapshot = result.reservation
    assert snapshot is not None
    assert (snapshot.partner_ref, snapshot.client_reference, snapshot.status) == (
        "551234",
        "BK-7F3K2Q",
        ReservationStatus.CONFIRMED,
    )
    assert (snapshot.version, snapshot.modified_at) == (None, None)


def test_legacy_failed_create_is_rejected_with_reason(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("legacy/create_fail_sold_out.json")))

    result = connector_for(make_partner(server.base_url, adapter="legacy")).create(
        REQUEST, idempotency_key="k"
    )

    assert result.outcome == Outcome.REJECTED
    assert result.reservation is not None
    assert (result.reservation.status, result.reservation.reason) == (
        ReservationStatus.REJECTED,
        "sold_out",
    )


def test_legacy_get_request_and_local_time(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("legacy/booking_ok.json")))
    partner = make_partner(server.base_url, adapter="legacy", timezone="Europe/Berlin")

    result = connector_for(partner).get("551230")

    (seen,) = server.seen
    assert (seen.method, seen.path) == ("GET", "/api/bookings/551230")
    assert seen.headers["x-api-key"] == API_KEY
    assert result.reservation is not None
    assert result.reservation.modified_at == datetime(2027, 3, 1, 13, 5, 9, tzinfo=UTC)


def test_legacy_list_changes_request_in_partner_local_time(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("legacy/listing_page1.json")))
    partner = make_partner(server.base_url, adapter="legacy", timezone="Europe/Berlin")

    result = connector_for(partner).list_changes(
        since=datetime(2027, 7, 1, 12, 0, 0, 500, tzinfo=UTC), page=1
    )

    (seen,) = server.seen
    assert (seen.method, seen.path) == ("GET", "/api/bookings")
    assert seen.query == {"modified_since": ["2027-07-01 14:00:00"], "page": ["1"]}
    assert result.next_page == 2
    assert [r.partner_ref for r in result.reservations] == ["551230", "551238", "551239"]


def test_legacy_listing_whose_next_page_does_not_advance_is_refused(server: ScriptedPartner) -> None:
    # Given a listing that names the page just read (or an earlier one) as the next
    server.script(Reply(200, fixture("legacy/listing_page1.json")))
    partner = make_partner(server.base_url, adapter="legacy", timezone="Europe/Berlin")

    # When page 2 is read
    result = connector_for(partner).list_changes(since=datetime(2027, 7, 1, tzinfo=UTC), page=2)

    # Then the answer is refused (following it would walk the same pages for ever)
    assert (result.outcome, result.reservations, result.next_page) == (Outcome.TRANSIENT, (), None)
    assert result.refusal == "next_page out of range: 2 (expected a page after 2)"


def test_legacy_lookup_is_not_supported(server: ScriptedPartner) -> None:
    result = connector_for(make_partner(server.base_url, adapter="legacy")).lookup("BK-1")

    assert (result.outcome, result.error_code) == (Outcome.PERMANENT, "not_supported")
    assert server.seen == []


def test_legacy_cancel_request_on_the_wire(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("legacy/cancel_ok.json")))

    result = connector_for(make_partner(server.base_url, adapter="legacy")).cancel("551230")

    (seen,) = server.seen
    assert (seen.method, seen.path) == ("DELETE", "/api/bookings/551230")
    assert seen.headers["x-api-key"] == API_KEY
    assert result.reservation is not None
    assert (result.reservation.partner_ref, result.reservation.status) == (
        "551230",
        ReservationStatus.CANCELLED,
    )


# --- sessions, secrets ----------------------------------------------------------------------


def test_session_is_cached_per_partner_and_replaced_on_key_change() -> None:
    partner = make_partner("http://127.0.0.1:9")

    first = session_for(partner)
    again = session_for(make_partner("http://127.0.0.1:9"))
    partner.api_key = "another-key"
    rotated = session_for(partner)

    assert first is again
    assert rotated is not first


def test_session_pool_and_no_urllib3_retries() -> None:
    partner = make_partner("http://127.0.0.1:9")
    partner.max_concurrency = 6

    adapter = session_for(partner).get_adapter("http://127.0.0.1:9/")

    assert adapter.max_retries.total == 0
    assert adapter._pool_maxsize == 6


def test_latency_is_how_long_the_partner_took_to_answer(server: ScriptedPartner) -> None:
    server.script(Reply(200, fixture("reference/reservation_confirmed.json"), delay_s=0.3))
    connector = connector_for(make_partner(server.base_url))  # read timeout 2 s

    result = connector.get("R-1")

    assert result.outcome == Outcome.OK
    assert 300 <= result.latency_ms < 2000


def test_connection_is_reused_across_calls(server: ScriptedPartner) -> None:
    server.script(
        Reply(200, fixture("reference/reservation_confirmed.json")),
        Reply(200, fixture("reference/reservation_confirmed.json")),
    )
    connector = connector_for(make_partner(server.base_url))

    connector.get("R-1")
    connector.get("R-2")

    # Then both requests came over one kept-alive connection
    assert len(server.seen) == 2
    assert server.seen[0].client_port == server.seen[1].client_port


def test_api_key_is_never_logged(server: ScriptedPartner, caplog: pytest.LogCaptureFixture) -> None:
    server.script(Reply(500, {"error": "internal"}), Reply(action="drop"))
    partner = make_partner(server.base_url)
    refused = make_partner(f"http://127.0.0.1:{free_port()}")

    with caplog.at_level(logging.DEBUG):
        results = [
            connector_for(partner).create(REQUEST, idempotency_key="k"),
            connector_for(partner).create(REQUEST, idempotency_key="k"),
            connector_for(refused).create(REQUEST, idempotency_key="k"),
        ]

    assert [(r.name, r.getMessage()) for r in caplog.records if r.name.startswith("partners")] == [
        ("partners.http", "partner call"),
        ("partners.http", "partner call failed"),
        ("partners.http", "partner connect failed, retrying"),
        ("partners.http", "partner connect failed, retrying"),
        ("partners.http", "partner call failed"),
    ]
    assert all(API_KEY not in repr(vars(record)) for record in caplog.records)  # extras included
    assert all(API_KEY not in r.error for r in results)
    assert all(API_KEY not in repr(connector_for(p)) for p in (partner, refused))
