"""The benchmarks' many-client process (`bench.sse`) against a small local HTTP server: streams
timestamp each event as it arrives, however the server cuts its chunks, and tell the opening
from a change; pollers send `If-None-Match`, follow a new `ETag`, and reconnect when the server
closed their kept-alive connection, as gunicorn does after its keep-alive time."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.common import wait_for
from bench.sse import Clients, Target


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.change = threading.Event()  # the stream's booking changes, the polled one too
        self.requests: list[dict[str, str]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _event(version: int) -> bytes:
    data = json.dumps({"reference": "BK-TEST01", "status": "pending", "status_version": version})
    return f"event: status\nid: {version}\ndata: {data}\n\n".encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self.server.requests.append(dict(self.headers))
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b"retry: 2000\n\n")
            self._chunk(_event(1))
            self.server.change.wait(30)
            self._chunk(b": heartbeat\n\n")
            change = _event(2)
            self._chunk(change[:20])  # an event cut across chunks arrives whole
            self._chunk(change[20:])
            self._chunk(b"")  # the end of the stream
            return
        if self.path.startswith("/slow/"):
            time.sleep(0.5)  # a server slower than its pollers ask
        version = 2 if self.server.change.is_set() else 1
        etag = f'W/"{version}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
        else:
            body = json.dumps({"status_version": version}).encode()
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        # Closed without saying so, as a server whose keep-alive time ran out between two polls.
        self.close_connection = True


@pytest.fixture
def server() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.change.set()
    server.shutdown()
    server.server_close()


def test_streams_timestamp_each_event_and_tell_the_opening_from_a_change(server):
    with Clients(server.base) as clients:
        numbers = clients.open_streams([Target("/stream", {"Authorization": "Token abc"})] * 3)
        assert list(numbers) == [0, 1, 2]
        assert clients.wait_open(timeout_s=30)["opened"] == 3
        openings = clients.events()
        assert sorted(e.stream for e in openings) == [0, 1, 2]
        assert all(e.opening and e.data["status_version"] == 1 for e in openings)
        assert server.requests[0]["Authorization"] == "Token abc"
        assert server.requests[0]["Accept"] == "text/event-stream"

        changed_at = time.time()
        server.change.set()
        changes = []
        wait_for(lambda: changes.extend(clients.events()) or len(changes) >= 3, timeout_s=30)

        assert sorted(e.stream for e in changes) == [0, 1, 2]
        assert all(not e.opening and e.data["status_version"] == 2 for e in changes)
        assert all(changed_at <= e.at <= time.time() for e in changes)
        status = wait_for(lambda: (s := clients.status())["ended"] == 3 and s, timeout_s=30)
        assert (status["heartbeats"], status["failed"]) == (3, [])


def test_a_refused_stream_is_reported_as_failed():
    with Clients("http://127.0.0.1:9") as clients:  # nothing listens on the discard port
        clients.open_streams([Target("/stream")])
        status = clients.wait_open(timeout_s=30)

    assert status["opened"] == 0
    ((number, reason),) = status["failed"]
    assert number == 0 and "ConnectionRefusedError" in reason


def test_pollers_follow_the_etag_and_reconnect_when_the_server_closed_their_connection(server):
    targets = [Target(f"/bookings/{index}", {"If-None-Match": 'W/"1"'}) for index in range(4)]

    with Clients(server.base) as clients:
        result = clients.poll(
            targets,
            interval_s=0.2,
            duration_s=2.0,
            meanwhile=lambda: (time.sleep(1.0), server.change.set()),
        )

    samples = result["samples"]
    assert result["errors"] == {}
    assert {s.status for s in samples} == {200, 304}
    # Each poller saw the change once, then sent its new ETag and got 304s again.
    assert sorted(s.poller for s in samples if s.status == 200) == [0, 1, 2, 3]
    assert all(len([s for s in samples if s.poller == p]) >= 8 for p in range(4))
    # The server closed every connection after its answer: each poll went out on a new one.
    assert result["connections"] == len(samples)


def test_a_poller_answered_late_skips_the_polls_it_missed_instead_of_catching_up(server):
    # Every 0.1 s for 1 s, from a server that takes 0.5 s an answer: a poller catching up would
    # send its 10 polls back to back and end long after the phase; skipping, it sends at most 3.
    targets = [Target(f"/slow/{index}") for index in range(2)]

    with Clients(server.base) as clients:
        result = clients.poll(targets, interval_s=0.1, duration_s=1.0, meanwhile=lambda: None)

    samples = result["samples"]
    assert result["errors"] == {}
    assert all(1 <= len([s for s in samples if s.poller == p]) <= 3 for p in range(2))
    assert result["skipped"] >= 2  # at least one a poller
