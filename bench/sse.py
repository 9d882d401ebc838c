"""A thousand HTTP clients in one child process, cheap enough not to distort what they measure:
Server-Sent Events streams that timestamp each event as it arrives, and pollers that send a
conditional GET on a schedule.

One asyncio loop on raw sockets (no HTTP library: a stream's event costs a split and a
`json.loads`, an idle one costs nothing but its heartbeat every 15 s), in a process of its own
so that its CPU is counted apart from the benchmark's (`Clients.cpu_seconds`) and never waits on
the benchmark's GIL. The benchmark drives it through a pipe: open streams, read what arrived,
close them, run a poll.

Times are wall-clock (`time.time()`), to be lined up with the database's and the partner's.
"""

from __future__ import annotations

import asyncio
import json
import math
import multiprocessing
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Target:
    """One client's request: a path and its headers (a token, `If-None-Match`)."""

    path: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """A stream event as it arrived: which stream, when (wall clock), its data, and whether it
    was the stream's opening (the state it started from) rather than a change."""

    stream: int
    at: float
    data: dict[str, Any]
    opening: bool


@dataclass(frozen=True)
class PollSample:
    """One poll: its status, its lateness (answered minus due, s) and when it was answered."""

    poller: int
    status: int
    latency_s: float
    answered_at: float


class Clients:
    """The child process and its pipe; use as a context manager (the process ends with it)."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(
            target=_child_main, args=(child_conn, parts.hostname, parts.port), name="sse-clients", daemon=True
        )
        self._process.start()
        child_conn.close()
        self._streams = 0

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def cpu_seconds(self) -> float:
        import psutil

        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system

    def _call(self, *command: Any, timeout_s: float = REPLY_TIMEOUT_S) -> Any:
        self._conn.send(command)
        return self._reply(command[0], timeout_s)

    def _reply(self, command: str, timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        while not self._conn.poll(0.2):
            if not self._process.is_alive():
                raise RuntimeError(f"the client process died (exit code {self._process.exitcode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the client process did not answer {command!r} in {timeout_s:.0f} s")
        reply = self._conn.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    # --- streams ------------------------------------------------------------------------------
    def open_streams(self, targets: Sequence[Target], *, concurrency: int = 50) -> range:
        """Start opening a stream per target, at most `concurrency` connecting at once; their
        numbers (returns at once: `wait_open` waits for them)."""
        first = self._call("open", list(targets), concurrency)
        self._streams = first + len(targets)
        return range(first, self._streams)

    def wait_open(self, *, timeout_s: float) -> dict[str, Any]:
        """Once every stream asked for has its opening event (or has failed): how it went."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status()
            if status["opened"] + len(status["failed"]) >= self._streams:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{status['opened']} of {self._streams} streams open after {timeout_s:.0f} s"
                )
            time.sleep(0.1)

    def status(self) -> dict[str, Any]:
        """Streams opened, failed (number and why), ended by the server, heartbeats seen, and
        the seconds the opening took (first connect to last opening event)."""
        return self._call("status")

    def events(self) -> list[Event]:
        """Every event that arrived since the last call."""
        return self._call("events")

    def close_streams(self) -> None:
        """Close every stream, as browsers leaving their pages."""
        self._call("close")

    # --- polling ------------------------------------------------------------------------------
    def poll(
        self,
        targets: Sequence[Target],
        *,
        interval_s: float,
        duration_s: float,
        meanwhile: Callable[[], object] | None = None,
    ) -> dict[str, Any]:
        """Each target polled every `interval_s` for `duration_s` (GET, keep-alive; the target's
        `If-None-Match` updated from each 200's `ETag`), starting at random offsets within one
        interval, while this process runs `meanwhile`:
        `{"samples": [PollSample], "connections": opened, "errors": {reason: n}}`."""
        self._conn.send(("poll", list(targets), interval_s, duration_s))
        if meanwhile is not None:
            meanwhile()
        return self._reply("poll", duration_s + 120)

    def stop(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("stop",))
                self._process.join(10)
            except (BrokenPipeError, OSError):
                pass
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10)
        self._conn.close()


# --- the child process ----------------------------------------------------------------------------
def _child_main(conn: Any, host: str, port: int) -> None:
    asyncio.run(_Child(conn, host, port).run())


def _request(host: str, port: int, target: Target, accept: str) -> bytes:
    headers = {"Host": f"{host}:{port}", "Accept": accept, **target.headers}
    lines = [f"GET {target.path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ", 2)[1]), headers


async def _body(reader: asyncio.StreamReader, status: int, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The body as it arrives: none (a 304), chunked, by length, or until the server closes."""
    if status in (204, 304):
        return
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            yield (await reader.readexactly(size + 2))[:-2]
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length:
            yield await reader.readexactly(length)
    else:
        while data := await reader.read(65536):
            yield data


class _Child:
    def __init__(self, conn: Any, host: str, port: int) -> None:
        self.conn = conn
        self.host, self.port = host, port
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.events: list[Event] = []
        self.opened = 0
        self.ended = 0
        self.heartbeats = 0
        self.failed: list[tuple[int, str]] = []
        self.first_connect: float | None = None
        self.last_opened: float | None = None
        self.commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._receive)
        while True:
            command, *args = await self.commands.get()
            if command == "stop":
                await self._close()
                return
            try:
                reply = await getattr(self, f"_{command}")(*args)
            except Exception as exc:  # noqa: BLE001 - handed to the benchmark, which raises it
                reply = exc
            self.conn.send(reply)

    def _receive(self) -> None:
        try:
            self.commands.put_nowait(self.conn.recv())
        except EOFError:  # the benchmark is gone
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.commands.put_nowait(("stop",))

    # --- streams ------------------------------------------------------------------------------
    async def _open(self, targets: list[Target], concurrency: int) -> int:
        first = len(self.tasks)
        connecting = asyncio.Semaphore(concurrency)
        for offset, target in enumerate(targets):
            index = first + offset
            self.tasks[index] = asyncio.create_task(self._stream(index, target, connecting))
        return first

    async def _status(self) -> dict[str, Any]:
        opening = (
            self.last_opened - self.first_connect
            if self.first_connect is not None and self.last_opened is not None
            else None
        )
        return {
            "opened": self.opened,
            "failed": list(self.failed),
            "ended": self.ended,
            "heartbeats": self.heartbeats,
            "opening_s": opening,
        }

    async def _events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    async def _close(self) -> None:
        tasks = [task for task in self.tasks.values() if not task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stream(self, index: int, target: Target, connecting: asyncio.Semaphore) -> None:
        writer = None
        opened = False
        await connecting.acquire()
        try:
            if self.first_connect is None:
                self.first_connect = time.time()
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT_S
            )
            writer.write(_request(self.host, self.port, target, "text/event-stream"))
            status, headers = await asyncio.wait_for(_read_head(reader), CONNECT_TIMEOUT_S)
            if status != 200:
                raise ValueError(f"status {status}")
            buffer = b""
            async for data in _body(reader, status, headers):
                buffer += data
                while (end := buffer.find(b"\n\n")) != -1:
                    block, buffer = buffer[:end], buffer[end + 2 :]
                    if self._block(index, block, opening=not opened):
                        opened = True
                        self.opened += 1
                        self.last_opened = time.time()
                        connecting.release()
            self.ended += 1
        except (
            OSError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
        ) as exc:
            self.failed.append((index, f"{type(exc).__name__}: {exc}"[:200]))
        finally:
            if not opened:
                connecting.release()
            if writer is not None:
                writer.close()

    def _block(self, index: int, block: bytes, *, opening: bool) -> bool:
        """Record one block of the stream; True when it was an event."""
        if block.startswith(b":"):
            self.heartbeats += 1
            return False
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                data = json.loads(line[5:])
                self.events.append(Event(stream=index, at=time.time(), data=data, opening=opening))
                return True
        return False  # retry:

    # --- polling ------------------------------------------------------------------------------
    async def _poll(self, targets: list[Target], interval_s: float, duration_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        begin = loop.time() + 0.5
        end = begin + duration_s
        rng = random.Random(0)
        result: dict[str, Any] = {"samples": [], "connections": 0, "errors": {}, "skipped": 0}
        await asyncio.gather(
            *(
                self._poller(index, target, begin + rng.uniform(0, interval_s), interval_s, end, result)
                for index, target in enumerate(targets)
            )
        )
        return result

    async def _poller(
        self, index: int, target: Target, due: float, interval_s: float, end: float, result: dict[str, Any]
    ) -> None:
        loop = asyncio.get_running_loop()
        headers = dict(target.headers)
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while due < end:
            await asyncio.sleep(max(0.0, due - loop.time()))
            for attempt in range(2):
                try:
                    if connection is None:
                        connection = await asyncio.open_connection(self.host, self.port)
                        result["connections"] += 1
                    reader, writer = connection
                    writer.write(
                        _request(self.host, self.port, Target(target.path, headers), "application/json")
                    )
                    status, response_headers = await _read_head(reader)
                    async for _ in _body(reader, status, response_headers):
                        pass
                    break
                except (OSError, asyncio.IncompleteReadError) as exc:
                    # The server closed the kept-alive connection meanwhile (as gunicorn does
                    # after its keep-alive time): once more on a new one, as HTTP clients do.
                    if connection is not None:
                        connection[1].close()
                    connection = None
                    if attempt:
                        reason = type(exc).__name__
                        result["errors"][reason] = result["errors"].get(reason, 0) + 1
                        status, response_headers = -1, {}
            if response_headers.get("connection", "").lower() == "close" and connection is not None:
                connection[1].close()
                connection = None
            if status == 200 and "etag" in response_headers:
                headers["If-None-Match"] = response_headers["etag"]
            result["samples"].append(PollSample(index, status, loop.time() - due, time.time()))
            due += interval_s
            if due < loop.time():
                # Answered after its next poll was due: that poll is skipped, not sent late, as a
                # client's timer would. Catching up instead let a server slower than the pollers
                # ask owe them requests past the phase's end (on a busy machine, for minutes).
                missed = math.ceil((loop.time() - due) / interval_s)
                result["skipped"] += missed
                due += missed * interval_s
        if connection is not None:
            connection[1].close()
