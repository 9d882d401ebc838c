"""Real processes for the live status tests: the events process (uvicorn, `config.events`), the
router (`config.router`), and a Server-Sent Events client that timestamps what it receives as it
arrives (a thread reads the stream)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from django.conf import settings
from django.db import connection, transaction

from bookings import services
from bookings.models import Actor, Booking
from bookings.streams.hub import client_name
from config import events, router
from tests.sandbox_process import free_port

ROOT = Path(__file__).resolve().parents[1]
# How a server of ours exits on SIGTERM after a graceful shutdown: uvicorn re-raises the signal it
# was stopped by once it is done (so its parent sees why it ended); gunicorn and the router exit 0.
STOPPED_CLEANLY = (0, -signal.SIGTERM)


def database_url() -> str:
    """The URL of this test's database (pytest-django's), for a server process of its own."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{Path(db['NAME']).resolve()}"


@dataclass
class ServerProcess:
    """One server process of ours, in its own process group, logging to a file."""

    argv: list[str]
    log_path: Path
    port: int
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, ready_path: str, timeout_s: float = 60.0) -> ServerProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env},
            )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                requests.get(self.url + ready_path, timeout=5)
                return self
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or not given the CPU to answer in time
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"no answer on {self.url} within {timeout_s} s\n{self.log()}"
            time.sleep(0.1)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, as a process manager stops it; its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout_s)
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def start_events(log_dir: Path, **env: str) -> ServerProcess:
    """The events process on this test's database and Redis, with `env` (e.g. LIVE_HEARTBEAT_S)."""
    port = free_port()
    process = ServerProcess(
        argv=events.command(port=port),
        log_path=log_dir / f"events-{port}.log",
        port=port,
        env={
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "VAR_DIR": str(settings.VAR_DIR),
            # Stream connects are API requests: keep the rate limit out of the way.
            "API_THROTTLE_RATE": "100000/min",
            "API_THROTTLE_ADDRESS_RATE": "100000/min",
            **env,
        },
    )
    return process.start(ready_path="/healthz")


def start_router(log_dir: Path, *, web_port: int, events_port: int) -> ServerProcess:
    port = free_port()
    process = ServerProcess(
        argv=router.command(port=port, web_port=web_port, events_port=events_port),
        log_path=log_dir / f"router-{port}.log",
        port=port,
    )
    return process.start(ready_path="/")


def followers(channel: str) -> int:
    """How many connections are subscribed to a live status channel (one per events process)."""
    [(_, count)] = redis.Redis.from_url(settings.REDIS_URL).pubsub_numsub(channel)
    return count


def move(booking: Booking, transition: str) -> float:
    """Run a transition as the worker does, committed (its view published after commit); when
    the commit returned."""
    with transaction.atomic():
        services.apply_transition(services.lock_booking(booking.pk), transition, actor=Actor.WORKER)
    return time.monotonic()


def subscriptions(pid: int) -> int:
    """How many channels the events process `pid` is subscribed to, as Redis counts them."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    for entry in client.client_list(_type="pubsub"):
        if entry.get("name") == client_name(pid):
            return int(entry["sub"])
    return 0


@dataclass(frozen=True)
class Record:
    """One block of the stream: an event (`name`, `id`, `data`), a comment, or a `retry:`."""

    at: float  # time.monotonic() when it arrived
    name: str | None = None
    id: int | None = None
    data: dict[str, Any] | None = None
    comment: str | None = None
    retry_ms: int | None = None

    @property
    def is_event(self) -> bool:
        return self.data is not None


class SseStream:
    """`GET path` on a server as a stream; `next()` gives what arrived, in order."""

    def __init__(self, base_url: str, path: str, *, headers: dict[str, str] | None = None):
        host, port = base_url.removeprefix("http://").split(":")
        self._connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self._connection.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self._connection.getresponse()
        self.status = self.response.status
        self._records: queue.Queue[Record | None] = queue.Queue()
        self.ended = threading.Event()
        if self.status == 200:
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = json.loads(self.response.read())

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            while line := self.response.readline():
                line = line.decode().rstrip("\n")
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = fields.get(name, "") + value.removeprefix(" ")
                    continue
                self._records.put(_record(fields))
                fields = {}
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            # Closed by the test (http.client may trip over its own closed file then), or the
            # connection broke: the stream is over either way.
            pass
        finally:
            self.ended.set()
            self._records.put(None)

    def next(self, timeout_s: float = 10.0) -> Record | None:
        """The next block; None once the stream ended. Fails after `timeout_s` of silence."""
        try:
            return self._records.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"nothing on the stream for {timeout_s} s") from None

    def next_event(self, timeout_s: float = 10.0) -> Record:
        """The next event, past any heartbeat; fails if the stream ends first."""
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.next(max(0.01, deadline - time.monotonic()))
            assert record is not None, "the stream ended"
            if record.is_event:
                return record

    def next_heartbeat(self, timeout_s: float = 10.0) -> list[Record]:
        """The events received before the next heartbeat comment."""
        events: list[Record] = []
        deadline = time.monotonic() + timeout_s
        while True:
            record = self.next(max(0.01, deadline - time.monotonic()))
            assert record is not None, "the stream ended"
            if record.comment == "heartbeat":
                return events
            if record.is_event:
                events.append(record)

    def close(self) -> None:
        """Go away as a browser does: the connection closes (the reading thread then ends)."""
        if self._connection.sock is not None:
            self._connection.sock.shutdown(socket.SHUT_RDWR)
        self._connection.close()


def _record(fields: dict[str, str]) -> Record:
    now = time.monotonic()
    if "data" in fields:
        return Record(
            at=now,
            name=fields.get("event"),
            id=int(fields["id"]) if "id" in fields else None,
            data=json.loads(fields["data"]),
        )
    if "retry" in fields:
        return Record(at=now, retry_ms=int(fields["retry"]))
    return Record(at=now, comment=fields.get("", ""))
