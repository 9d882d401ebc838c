"""The benchmarks' load generator against a small local HTTP server: closed loop and paced."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.load import WARMUP_REQUESTS, Endpoint, _client_results, due_offsets, run_load

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
    assert result.duration_s >= 19 / 20 * 0.98  # the last one was due at 0.95 s (a clock read's slack)
    # and the stalled answer shows as latency, its alone: the requests due after it on that
    # client were sent when due, as independent customers send theirs
    assert max(result.latencies_s) >= STALL_S * 0.9
    assert sum(latency >= 0.1 for latency in result.latencies_s) == 1


def test_a_paced_request_that_finds_every_sender_busy_counts_its_wait_from_the_due_time(server):
    # when each client has a single sender, and one answer stalls
    result = run_load(
        server, ENDPOINT, tokens=[["a"], ["b"]], requests_each=10, rate_per_s=20, senders_per_client=1
    )

    # then the requests due behind it on that client count their wait: a stall cannot hide
    assert result.ok == 20 and not result.errors
    assert max(result.latencies_s) >= STALL_S * 0.9
    assert sum(latency >= 0.1 for latency in result.latencies_s) >= 2


def test_a_closed_loop_load_sends_each_request_when_the_last_is_answered(server):
    result = run_load(server, ENDPOINT, tokens=[["a"], ["b"]], requests_each=10)

    assert result.ok == 20 and not result.errors
    assert sum(latency >= STALL_S * 0.9 for latency in result.latencies_s) == 1


def test_uniform_arrivals_are_evenly_spaced():
    assert due_offsets(4, 0.25, "uniform", seed=1) == [0.0, 0.25, 0.5, 0.75]


def test_poisson_arrivals_have_the_same_mean_rate_with_random_gaps_and_repeat_with_their_seed():
    offsets = due_offsets(4000, 0.1, "poisson", seed=7)
    gaps = [later - earlier for earlier, later in itertools.pairwise(offsets)]

    assert offsets[0] == 0.0 and all(gap >= 0 for gap in gaps)
    assert sum(gaps) / len(gaps) == pytest.approx(0.1, rel=0.05)  # the offered rate holds
    # exponential gaps: about 1 - 1/e (63%) shorter than the mean, some several times longer
    assert 0.58 < sum(gap < 0.1 for gap in gaps) / len(gaps) < 0.68
    assert max(gaps) > 0.4
    assert due_offsets(4000, 0.1, "poisson", seed=7) == offsets
    assert due_offsets(4000, 0.1, "poisson", seed=8) != offsets


def test_an_unknown_arrival_process_is_refused_before_any_client_starts(server):
    with pytest.raises(ValueError, match="uniform, poisson"):
        run_load(server, ENDPOINT, tokens=[["a"]], requests_each=1, rate_per_s=1, arrivals="bursty")


class _FakeClient:
    def __init__(self, exitcode: int | None) -> None:
        self.exitcode = exitcode


def test_a_client_process_that_dies_without_results_fails_the_load_at_once():
    results: queue.Queue = queue.Queue()
    results.put(([(0.0, 0.01, 201)], []))  # the first client answered and exited
    clients = [_FakeClient(0), _FakeClient(1)]

    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"died without its results \(exit codes \[1\]\)"):
        _client_results(results, clients, timeout_s=60)

    assert time.monotonic() - started < 5


def test_client_results_are_collected_while_clients_run_and_time_out_when_none_come():
    results: queue.Queue = queue.Queue()
    results.put(([(0.0, 0.01, 201)], []))
    results.put(([(0.0, 0.02, 201)], ["boom"]))

    assert len(_client_results(results, [_FakeClient(0), _FakeClient(None)], timeout_s=5)) == 2
    with pytest.raises(TimeoutError):
        _client_results(queue.Queue(), [_FakeClient(None)], timeout_s=0.2)
