"""The harness's reads of a sandbox's ground truth wait out the partner's outage window (its
port refuses every connection, the control endpoints' too), and give up after it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from chaos.faults import FaultPlan
from chaos.procs import free_port
from chaos.sandboxes import OUTAGE_MARGIN_S, SandboxPartner


class _Truth(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = json.dumps({"reservations": [{"ref": "R-1"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _partner(outage_window: list[int] | None) -> SandboxPartner:
    plan = FaultPlan(profile="reference", settings={"outage_window_s": outage_window, "time_scale": 1})
    return SandboxPartner(profile="reference", code="ref", plan=plan, port=free_port())


def test_the_ground_truth_is_read_once_the_outage_is_over():
    partner = _partner([0, 2])
    servers: list[ThreadingHTTPServer] = []

    def open_port_later() -> None:  # the port refuses connections until then
        time.sleep(1.5)
        servers.append(ThreadingHTTPServer(("127.0.0.1", partner.port), _Truth))
        servers[0].serve_forever()

    opener = threading.Thread(target=open_port_later, daemon=True)
    asked_at = time.monotonic()
    opener.start()
    try:
        assert partner.ground_truth() == [{"ref": "R-1"}]
        assert time.monotonic() - asked_at >= 1.5
    finally:
        while not servers:
            time.sleep(0.05)
        servers[0].shutdown()
        servers[0].server_close()
        opener.join()


def test_without_an_outage_window_a_refused_read_fails_after_the_margin_only(monkeypatch):
    monkeypatch.setattr("chaos.sandboxes.OUTAGE_MARGIN_S", 0.5)
    partner = _partner(None)
    asked_at = time.monotonic()

    with pytest.raises(requests.ConnectionError):
        partner.ground_truth()
    assert 0.5 <= time.monotonic() - asked_at < 0.5 + 5
    assert OUTAGE_MARGIN_S == 10.0
