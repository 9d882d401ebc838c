"""The port picker every test and run uses for the servers it starts (`chaos.procs.free_port`)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from chaos.procs import _ephemeral_low, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_ports_are_below_the_range_outgoing_connections_draw_from_and_bindable() -> None:
    ports = [free_port() for _ in range(30)]
    assert len(set(ports)) == len(ports)
    assert max(ports) < _ephemeral_low()
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free: nothing else is bound to it


def test_another_process_never_gets_a_port_this_one_holds() -> None:
    ours = {free_port() for _ in range(30)}
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from chaos.procs import free_port; "
            "print(json.dumps([free_port() for _ in range(100)]))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    theirs = set(json.loads(child.stdout))
    assert len(theirs) == 100
    assert not ours & theirs


def test_a_port_someone_is_bound_to_is_never_given() -> None:
    taken = []
    try:
        for port in range(20_000, 20_000 + 2_000):  # the bottom of the picker's range, held
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            taken.append(sock)
        held = {sock.getsockname()[1] for sock in taken}
        assert not held & {free_port() for _ in range(30)}
    finally:
        for sock in taken:
            sock.close()
