"""The benchmarks' load generator against a small local HTTP server: closed loop and paced."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import WARMUP_REQUESTS, Endpoint, run_load

STALL_S = 0.4
CLIENTS = 2


class _Handler(BaseHTTPRequestHandler):
    served = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with _Handler.lock:
            _Handler.served += 1
            # one slow answer, after both clients' warm-up
            stall = _Handler.served == CLIENTS * WARMUP_REQUESTS + 3
        if stall:
            time.sleep(STALL_S)
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.served = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


ENDPOINT = Endpoint("items", "/items", {"name": "x"}, ok_status=201, idempotency_key=True)


def test_a_paced_load_keeps_its_rate_and_counts_a_stall_as_latency_from_the_due_time(server):
    # when 2 clients together offer 20 requests a second, 10 requests each (one answer stalls)
    result = run_load(server, ENDPOINT, tokens=[["a"], ["b"]], requests_each=10, rate_per_s=20)

    # then 20 requests took about a second, not less: the rate held
    assert result.ok == 20 and not result.errors
    assert result.duration_s >= 19 / 20
    # and the stalled answer shows as latency (the requests due behind it on that client too)
    assert max(result.latencies_s) >= STALL_S * 0.9
    assert sum(latency >= 0.1 for latency in result.latencies_s) >= 2


def test_a_closed_loop_load_sends_each_request_when_the_last_is_answered(server):
    result = run_load(server, ENDPOINT, tokens=[["a"], ["b"]], requests_each=10)

    assert result.ok == 20 and not result.errors
    assert sum(latency >= STALL_S * 0.9 for latency in result.latencies_s) == 1
