"""The tests' sandbox process (tests/sandbox_process.py) starts on a busy machine: on a port no
other process can take before it binds, and waited for while too busy to answer."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.sandbox_process import SandboxProcess

# A partner that says its port as the sandbox does, then keeps its first request 1.5 s: the
# second a start's probe waits for an answer, and more, as a process a busy machine leaves
# without CPU right after it binds.
SLOW_FIRST_ANSWER = """
import itertools, socket, sys, time
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
print(f"sandbox partner slow listening on http://127.0.0.1:{server.getsockname()[1]}", flush=True)
for n in itertools.count():
    connection, _ = server.accept()
    if n == 0:
        time.sleep(1.5)
    try:
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\n{}")
    except OSError:
        pass  # the probe that gave up
    connection.close()
"""


class SlowToAnswer(SandboxProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-c", SLOW_FIRST_ANSWER, str(self.port)]


class NeverListens(SandboxProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(120)"]


def test_a_partner_too_busy_to_answer_the_first_probe_in_time_is_waited_for(tmp_path: Path) -> None:
    partner = SlowToAnswer("legacy", tmp_path / "slow.sqlite3", "key")
    try:
        partner.start()

        assert partner.proc is not None and partner.proc.poll() is None
    finally:
        partner.kill()


def test_a_port_taken_after_the_partner_was_made_does_not_stop_it(tmp_path: Path) -> None:
    partner = SandboxProcess("legacy", tmp_path / "legacy.sqlite3", "key")
    with socket.socket() as other:  # another worker's server, started meanwhile on any free port
        other.bind(("127.0.0.1", partner.port))
        other.listen()
        try:
            partner.start()

            assert partner.port != other.getsockname()[1]
            assert partner.stats()["faults"] == {}
        finally:
            partner.kill()


def test_a_start_given_up_leaves_no_process_behind(tmp_path: Path) -> None:
    partner = NeverListens("legacy", tmp_path / "never.sqlite3", "key")

    with pytest.raises(AssertionError, match=r"timed out after 1\.0 s waiting for the legacy sandbox"):
        partner.start(timeout_s=1.0)

    assert partner.proc is not None and partner.proc.poll() is not None
