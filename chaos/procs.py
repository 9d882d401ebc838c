"""Child processes of a run: each in its own process group, so a SIGKILL takes all of it.

Only processes this module started are ever signalled, always by their own group id.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

# Ports for the servers a run (or a test) starts are chosen below the kernel's ephemeral range.
# A port the kernel hands out for a bind to 0 comes from that range, which is also where every
# outgoing connection's local end is drawn from: with thousands of connections a second to
# PostgreSQL, Redis and the sandboxes, a client's connect() could take it in the seconds before
# the server binds it. Below the range only another picker can, and a lock file (held until this
# process exits) keeps two pickers of this machine, in any process, from choosing the same port.
_LOCKS = Path(tempfile.gettempdir()) / "free-ports"
_LOWEST = 20_000
_held: list[int] = []  # the lock files' descriptors, kept open: closing one releases its port


def free_port() -> int:
    """A port on 127.0.0.1 that nothing is bound to, and that no other caller of this function
    on the machine gets while this process lives."""
    ephemeral_low = _ephemeral_low()
    if ephemeral_low - _LOWEST < 1_000:  # an unusual range: let the kernel choose
        return _kernel_port()
    _LOCKS.mkdir(exist_ok=True)
    for port in random.sample(range(_LOWEST, ephemeral_low), k=200):
        if _lock(port) and _bindable(port):
            return port
    return _kernel_port()


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32_768


def _lock(port: int) -> bool:
    fd = os.open(_LOCKS / str(port), os.O_CREAT | os.O_RDWR, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held.append(fd)
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


class ManagedProcess:
    """One child (and whatever it forks), logging to its own file; restartable."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def start(self) -> ManagedProcess:
        self._log = self.log_path.open("ab")
        self._log.write(f"\n=== start {self.name}: {' '.join(self.argv)}\n".encode())
        self._log.flush()
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: pgid == pid
        )
        self.starts += 1
        return self

    def log_offset(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def wait_for_log(self, text: str, *, timeout_s: float, after: int = 0) -> bool:
        def seen() -> bool:
            if not self.alive:
                return False
            with self.log_path.open("rb") as handle:
                handle.seek(after)
                return text.encode() in handle.read()

        return wait_until(seen, timeout_s=timeout_s, interval_s=0.25)

    def kill(self) -> None:
        """SIGKILL the whole group at once: no shutdown hooks, no acks, like a crashed machine."""
        self._signal_group(signal.SIGKILL)
        self._reap(timeout_s=10)

    def terminate(self, *, timeout_s: float = 15.0) -> None:
        self.request_stop()
        self.finish_stop(timeout_s=timeout_s)

    def request_stop(self) -> None:
        """SIGTERM the group: the process shuts down cleanly (see `finish_stop`)."""
        self._signal_group(signal.SIGTERM)

    def finish_stop(self, *, timeout_s: float = 15.0) -> None:
        """Wait for a requested stop; SIGKILL the group if it does not come in time."""
        if self.popen is None:
            return
        if not self._reap(timeout_s=timeout_s):
            self._signal_group(signal.SIGKILL)
            self._reap(timeout_s=5)
        self._close_log()

    def _signal_group(self, signum: int) -> None:
        if self.popen is None:
            return
        # The group may outlive its leader (forked workers), so signal it even if the leader exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def _reap(self, *, timeout_s: float) -> bool:
        if self.popen is None:
            return True
        try:
            self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return not _group_alive(self.popen.pid)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_pids(pgids: set[int]) -> set[int]:
    """Every live process (Linux /proc) whose process group is one of ours."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) in pgids:
            found.add(int(entry.name))
    return found
