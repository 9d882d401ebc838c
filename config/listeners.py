"""Who listens on a local TCP port or a unix socket, for `make run` to name a stack that already
runs before it touches anything (config/devstack.py).

Whether a port is free is asked the way the servers ask it, by binding it; who holds it is read
from /proc (Linux): the listening socket's inode in /proc/net/tcp, tcp6 or unix, then the
processes with that inode among their file descriptors. Elsewhere, or for another user's
processes, the holder is not found and only the port or socket is named.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_TCP_LISTEN = "0A"


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether binding `host:port` fails as a server's would (SO_REUSEADDR, as gunicorn and
    asyncio bind: a connection lingering in TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def tcp_listeners(port: int) -> list[int]:
    """The pids listening on `port` (any local address)."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        for fields in _rows(_PROC / "net" / table):
            if len(fields) > 9 and fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return _pids_holding(inodes)


def unix_listeners(path: Path) -> list[int]:
    """The pids holding a unix socket bound to `path`."""
    inodes = {
        fields[6] for fields in _rows(_PROC / "net" / "unix") if len(fields) > 7 and fields[7] == str(path)
    }
    return _pids_holding(inodes)


def _rows(table: Path) -> list[list[str]]:
    try:
        return [line.split() for line in table.read_text().splitlines()[1:]]
    except OSError:
        return []


def _pids_holding(inodes: set[str]) -> list[int]:
    if not inodes:
        return []
    wanted = {f"socket:[{inode}]" for inode in inodes}
    pids = []
    for entry in _PROC.iterdir() if _PROC.is_dir() else ():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile, or not ours to read
            if any(_target(fd) in wanted for fd in (entry / "fd").iterdir()):
                pids.append(int(entry.name))
    return sorted(pids)


def _target(fd: Path) -> str:
    """What a file descriptor points at; "" for one closed since the listing (a busy process's
    threads open and close them all the time: one gone must not hide the socket it holds)."""
    try:
        return os.readlink(fd)
    except OSError:
        return ""


def command_line(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip() or "?"


def parent(pid: int) -> int:
    """The parent's pid, 0 when unknown."""
    try:
        return int((_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def ancestors(pid: int) -> list[int]:
    """`pid`'s parent, its parent's parent, ... up to (not including) init."""
    chain, current = [], parent(pid)
    while current > 1 and current not in chain:
        chain.append(current)
        current = parent(current)
    return chain


@dataclass
class Held:
    """A port or socket a new start needs, and who holds it (pids may be empty: not found)."""

    what: str
    pids: list[int] = field(default_factory=list)
