"""`make run`'s router (config/router.py), as a real process between a client and two upstream
servers: the stream paths reach the events upstream and everything else the web one, requests
and responses pass unchanged but for this hop's headers, a streamed answer passes as it is
written, a client that leaves closes its upstream connection while one that only half-closes
gets its answer, a missing upstream is a 503 to retry and one that hangs up without answering a
502."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.conf import settings
from django.urls import reverse

from bookings.streams.routing import STREAM_PATH
from config.raw_errors import UNAVAILABLE_MESSAGE
from tests.sandbox_process import free_port
from tests.streams import STOPPED_CLEANLY, ServerProcess, start_router

pytestmark = pytest.mark.integration


class Upstream(ThreadingHTTPServer):
    """A server standing for the web or the events process: it answers with what it received
    (after 0.3 s, asked for `?slow=1`), or, asked for `?stream=1`, writes a chunk every 50 ms until
    the client is gone, or, asked for `?hang_up=1`, closes the connection without answering (as a
    worker killed mid-request)."""

    daemon_threads = True

    def __init__(self, name: str):
        self.name = name
        self.stream_closed = threading.Event()
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def do_GET(self) -> None:
        if self.path.endswith("?stream=1"):
            self._stream()
        elif self.path.endswith("?hang_up=1"):
            self.close_connection = True
        elif self.path.endswith("?slow=1"):
            time.sleep(0.3)
            self._echo(b"")
        else:
            self._echo(b"")

    def do_POST(self) -> None:
        self._echo(self.rfile.read(int(self.headers["Content-Length"])))

    def _echo(self, body: bytes) -> None:
        seen = {
            "upstream": self.server.name,
            "path": self.path,
            "headers": {name.lower(): value for name, value in self.headers.items()},
            "body": body.decode(),
        }
        answer = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for beat in range(200):
                self.wfile.write(f": beat {beat}\n\n".encode())
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            self.server.stream_closed.set()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    servers = {"web": Upstream("web"), "events": Upstream("events")}
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def router(upstreams, tmp_path_factory) -> Iterator[ServerProcess]:
    ports = {"web_port": upstreams["web"].port, "events_port": upstreams["events"].port}
    process = start_router(tmp_path_factory.mktemp("router"), **ports)
    yield process
    assert process.stop() in STOPPED_CLEANLY, process.log()


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/", "web"),
        ("/bookings/BK-7KQ2MX/", "web"),
        ("/bookings/BK-7KQ2MX/status/?seen=abc", "web"),
        ("/api/v1/bookings/BK-7KQ2MX", "web"),
        ("/api/v1/bookings/BK-7KQ2MX/events/more", "web"),
        ("/api/v1/bookings/BK-7KQ2MX/events", "events"),
        ("/api/v1/bookings/BK-7KQ2MX/events/", "events"),
        ("/api/v1/bookings/events", "events"),
        ("/api/v1/bookings/events/?page=2", "events"),
    ],
)
def test_the_stream_paths_reach_the_events_process_and_the_rest_the_web_server(router, path, upstream):
    seen = requests.get(router.url + path, timeout=10).json()

    assert (seen["upstream"], seen["path"]) == (upstream, path)


def test_the_django_routes_of_the_streams_and_only_they_match_the_proxy_rule(db):
    streams = [reverse("streams:booking-events", args=["BK-7KQ2MX"]), reverse("streams:customer-events")]
    others = [
        reverse("bookings-api:booking-detail", args=["BK-7KQ2MX"]),
        reverse("bookings-api:booking-cancel", args=["BK-7KQ2MX"]),
        reverse("web:booking", args=["BK-7KQ2MX"]),
        reverse("web:booking-status", args=["BK-7KQ2MX"]),
        reverse("web:bookings"),
    ]

    assert [bool(STREAM_PATH.match(path)) for path in streams] == [True, True]
    assert [bool(STREAM_PATH.match(path)) for path in others] == [False] * len(others)


def test_a_request_passes_unchanged_but_for_this_hops_headers(router):
    body = json.dumps({"offer": 1, "guests": 2})

    response = requests.post(
        router.url + "/api/v1/quotes",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Token abc",
            "X-Forwarded-For": "203.0.113.9",
            "Keep-Alive": "timeout=5",
        },
        timeout=10,
    )

    seen = response.json()
    assert seen["body"] == body
    assert seen["headers"]["authorization"] == "Token abc"
    assert seen["headers"]["host"] == f"127.0.0.1:{router.port}"
    # the client's address is added after what the client claimed; the upstream closes after it
    assert seen["headers"]["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert seen["headers"]["connection"] == "close"
    assert "keep-alive" not in seen["headers"]


def test_a_streamed_answer_passes_as_it_is_written_and_a_client_that_leaves_closes_it(router, upstreams):
    events = upstreams["events"]
    events.stream_closed.clear()
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as client:
        client.sendall(b"GET /api/v1/bookings/events?stream=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while received.count(b"beat") < 3:  # three beats, 50 ms apart: each read as it comes
            received += client.recv(4096)
        assert received.startswith(b"HTTP/1.1 200 OK\r\n")
        assert not events.stream_closed.is_set()

    assert events.stream_closed.wait(5), "the upstream still streams to a client that left"


def test_a_client_that_half_closes_after_its_request_gets_the_whole_answer(router):
    # A client may shut its sending side once its request is out (HTTP/1.0 tools, `nc -N`): its
    # end of file says it has nothing more to send, not that it left. The router took it for
    # leaving and dropped the answer (0 bytes); now it passes the end on and the answer back.
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as client:
        client.sendall(b"GET /api/v1/offers?slow=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        client.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := client.recv(4096):
            received += chunk

    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n"), received
    assert json.loads(body)["path"] == "/api/v1/offers?slow=1"


def test_an_upstream_that_is_not_listening_is_a_503_to_retry_in_the_one_error_shape(tmp_path):
    # As while `make run` starts the web server again: the API's own answer when it cannot serve
    # (config.middleware), not a 502 without Retry-After.
    closed_port = free_port()
    router = start_router(tmp_path, web_port=closed_port, events_port=closed_port)
    try:
        response = requests.get(router.url + "/api/v1/offers", timeout=10)
    finally:
        assert router.stop() in STOPPED_CLEANLY

    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(settings.UNAVAILABLE_RETRY_AFTER_S)
    assert response.json() == {"error": {"code": "service_unavailable", "message": UNAVAILABLE_MESSAGE}}


def test_an_upstream_that_hangs_up_without_answering_is_a_502_in_the_one_error_shape(router):
    # A web worker killed mid-request: the client used to get a closed connection and no answer.
    response = requests.get(router.url + "/api/v1/offers?hang_up=1", timeout=10)

    assert response.status_code == 502
    message = "The server closed the connection without answering."
    assert response.json() == {"error": {"code": "bad_gateway", "message": message}}


def test_a_request_head_too_large_to_read_is_a_431_in_the_one_error_shape(router):
    # 70 KB of one header: more than the router reads of a head (MAX_HEAD_BYTES). It used to
    # drop the connection with no answer at all.
    response = requests.get(router.url + "/api/v1/offers", headers={"X-Big": "x" * 70_000}, timeout=10)

    assert response.status_code == 431
    error = {"code": "request_header_fields_too_large", "message": "The request's headers are too large."}
    assert response.json() == {"error": error}
