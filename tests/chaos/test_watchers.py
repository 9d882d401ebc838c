"""The chaos run's customer clients: the SSE reader, the mail sink reader, and the watchers
against a small scripted HTTP server (the real events and web processes are the chaos run's:
tests/chaos/test_chaos_small.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from chaos import mailbox
from chaos.watchers import ShownLog, Watchers
from chaos.wire import SseParser
from sandbox.mailsink import EmlStore


# --- the SSE reader ------------------------------------------------------------------------------
def test_events_are_read_across_chunk_boundaries_and_comments_counted():
    parser = SseParser()
    assert parser.feed(b"retry: 2000\n\nevent: status\nid: 4\nda") == []
    events = parser.feed(b'ta: {"a": 1}\n\n: heartbeat\n\nevent: status\r\ndata: {"a": 2}\r\n\r\n')
    assert [(e.name, e.id, e.json()) for e in events] == [
        ("status", "4", {"a": 1}),
        ("status", None, {"a": 2}),
    ]
    assert (parser.retry_ms, parser.comments) == (2000, 1)


# --- the mail sink, read back ---------------------------------------------------------------------
def test_the_sinks_messages_are_read_by_the_headers_that_name_their_change(tmp_path: Path):
    # Given two messages kept by the sink as it keeps them, one of them not ours
    store = EmlStore(tmp_path)
    message = EmailMessage()
    message["Subject"] = "Your booking BK-1 is confirmed"
    message["Message-ID"] = "<notification-7@example.com>"
    message["X-Booking-Reference"] = "BK-1"
    message["X-Booking-Status-Version"] = "3"
    message["X-Notification-Kind"] = "confirmed"
    message["X-Booking-Included-Versions"] = "4,6"
    message.set_content("confirmed")
    first = store.keep(message.as_bytes())
    stranger = EmailMessage()
    stranger["Subject"] = "Reset your password"
    stranger.set_content("reset")
    store.keep(stranger.as_bytes())

    # When read back
    rows = mailbox.read(tmp_path)

    # Then each is one row, in arrival order, named by its headers and its arrival time
    assert [(r.reference, r.version, r.kind, r.message_id) for r in rows] == [
        ("BK-1", 3, "confirmed", "<notification-7@example.com>"),
        ("", None, "", ""),
    ]
    assert (rows[0].included, rows[1].included) == ((4, 6), ())  # the money changes it tells too
    assert rows[0].file == first.name
    assert rows[0].received_at <= rows[1].received_at
    assert mailbox.read(tmp_path / "missing") == []


# --- the watchers against a scripted server ------------------------------------------------------
def view(version: int, status: str = "pending", message: str = "received") -> dict[str, object]:
    return {
        "reference": "BK-1",
        "status": status,
        "message": "words",
        "message_code": message,
        "status_version": version,
    }


class ScriptedServer:
    """Answers like the events and web processes: the customer's stream ends after its first
    event (the client must come back with Last-Event-ID), the booking's stream stays open, and a
    poll answers 200 with an ETag, then 304 while it is current."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def shut() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def polls(self) -> list[str | None]:
        return [h.get("if-none-match") for p, h in self.requests if p == "/api/v1/bookings/BK-1"]

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        request_line, *lines = head.split("\r\n")
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)
        }
        path = request_line.split(" ")[1]
        self.requests.append((path, headers))
        try:
            if path == "/api/v1/bookings/events":
                first = "last-event-id" not in headers
                await self._stream(
                    writer, [b"retry: 50\n\n", self._event(view(1) if first else view(2), 1 if first else 2)]
                )
                if first:
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    return
                await asyncio.sleep(60)
            elif path == "/api/v1/bookings/BK-1/events":
                await self._stream(writer, [self._event(view(2), 2), b": heartbeat\n\n"])
                await asyncio.sleep(60)
            elif path == "/api/v1/bookings/BK-1":
                if headers.get("if-none-match") == 'W/"2"':
                    writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: W/"2"\r\nConnection: close\r\n\r\n')
                else:
                    data = json.dumps(view(2)).encode()
                    writer.write(
                        b'HTTP/1.1 200 OK\r\nETag: W/"2"\r\nRetry-After: 1\r\n'
                        + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                        + data
                    )
                await writer.drain()
        finally:
            writer.close()

    @staticmethod
    def _event(data: dict[str, object], event_id: int) -> bytes:
        return f"event: status\nid: {event_id}\ndata: {json.dumps(data)}\n\n".encode()

    @staticmethod
    async def _stream(writer: asyncio.StreamWriter, chunks: list[bytes]) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        for chunk in chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


@pytest.mark.timeout(60)
def test_watchers_follow_streams_and_polls_and_catch_up(server: ScriptedServer):
    # Given one customer's stream, and their booking followed by its own stream and a poller
    url = f"http://127.0.0.1:{server.port}"
    log = ShownLog()
    watchers = Watchers(
        events_url=url, web_url=url, log=log, bookings=1, booking_streams=1, pollers=1, rest_poll_s=0.2
    )
    watchers.start()
    try:
        watchers.follow_customer("c1", "tok-1")
        watchers.accepted(index=0, reference="BK-1", username="c1", token="tok-1")

        # When they catch up with the booking's final version (and the poller polls again)
        caught_up = watchers.catch_up({"BK-1": 2}, timeout_s=30)
        for _ in range(200):
            if len(server.polls()) >= 2:
                break
            time.sleep(0.05)
    finally:
        watchers.stop()

    # Then every follower shows it, and each saw what the server sent, in order
    assert caught_up["caught_up"] is True, caught_up
    assert watchers.followers() == {"BK-1": ("customer-stream:c1", "booking-stream:BK-1", "poll:BK-1")}
    by_client: dict[str, list[tuple[int, bool]]] = {}
    for shown in log.views():
        by_client.setdefault(shown.client, []).append((shown.version, shown.opening))
    assert by_client["customer-stream:c1"][:2] == [(1, True), (2, True)]
    assert by_client["booking-stream:BK-1"] == [(2, True)]
    assert by_client["poll:BK-1"] == [(2, False)]
    # the customer's stream came back with the id it last saw; the poller sent its ETag back
    resumed = [h.get("last-event-id") for p, h in server.requests if p == "/api/v1/bookings/events"]
    assert resumed[:2] == [None, "1"]
    assert server.polls()[:2] == [None, 'W/"2"']
    assert all(h["authorization"] == "Token tok-1" for _, h in server.requests)
    figures = watchers.figures()
    assert (figures["customer_streams"], figures["booking_streams"], figures["pollers"]) == (1, 1, 1)
    assert figures["streams_ended_by_server"] >= 1 and figures["polls_200"] == 1
