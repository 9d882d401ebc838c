"""HTTP/1.1 GETs and Server-Sent Events on raw asyncio sockets: what the run's customer clients
speak (`chaos.watchers`), light enough for hundreds of streams and pollers on one event loop.

One request per connection (`Connection: close`): a poll every few seconds gains nothing from
keep-alive, and a stream holds its connection for its life anyway.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

HEAD_LIMIT = 64 * 1024


class WireError(Exception):
    """The server answered something this client cannot read."""


@dataclass(frozen=True)
class Head:
    status: int
    headers: dict[str, str]  # names in lower case


@dataclass
class SseEvent:
    """One dispatched event: its name, its id (None when the event carried none) and its data."""

    name: str = "message"
    id: str | None = None
    data: str = ""
    retry_ms: int | None = None

    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseParser:
    """The text/event-stream format, fed as bytes arrive; `feed` returns the events completed.

    A block of only comments (`: heartbeat`) or only `retry:` dispatches nothing; both are
    counted, so a client can tell a live idle stream from a dead one."""

    _buffer: bytes = b""
    _event: SseEvent = field(default_factory=SseEvent)
    _data: list[str] = field(default_factory=list)
    comments: int = 0
    retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buffer += chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        done: list[SseEvent] = []
        while (end := self._buffer.find(b"\n")) != -1:
            line, self._buffer = self._buffer[:end].decode("utf-8"), self._buffer[end + 1 :]
            if not line:
                if self._data:
                    self._event.data = "\n".join(self._data)
                    done.append(self._event)
                self._event, self._data = SseEvent(), []
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if not name:
                self.comments += 1
            elif name == "event":
                self._event.name = value
            elif name == "id":
                self._event.id = value
            elif name == "data":
                self._data.append(value)
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)
        return done


def request_bytes(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_head(reader: asyncio.StreamReader) -> Head:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise WireError("response head too long") from exc
    status_line, *lines = raw.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise WireError(f"not an HTTP status line: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Head(int(parts[1]), headers)


async def body(reader: asyncio.StreamReader, head: Head) -> AsyncIterator[bytes]:
    """The body as it arrives: none (204, 304), chunked, by length, or until the server closes."""
    if head.status in (204, 304):
        return
    if head.headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                return
            yield (await reader.readexactly(size + 2))[:-2]
    elif "content-length" in head.headers:
        length = int(head.headers["content-length"])
        if length:
            yield await reader.readexactly(length)
    else:
        while data := await reader.read(65536):
            yield data


async def open_get(
    host: str, port: int, path: str, headers: dict[str, str], *, timeout_s: float
) -> tuple[Head, asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect, send the GET and read the response's head (bounded by `timeout_s`)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=HEAD_LIMIT), timeout_s)
    try:
        writer.write(request_bytes(host, port, path, headers))
        head = await asyncio.wait_for(read_head(reader), timeout_s)
    except BaseException:
        writer.close()
        raise
    return head, reader, writer


async def get(
    host: str, port: int, path: str, headers: dict[str, str], *, timeout_s: float
) -> tuple[Head, bytes]:
    """One whole GET: its head and body."""
    head, reader, writer = await open_get(host, port, path, headers, timeout_s=timeout_s)
    try:

        async def whole() -> bytes:
            return b"".join([part async for part in body(reader, head)])

        return head, await asyncio.wait_for(whole(), timeout_s)
    finally:
        writer.close()
