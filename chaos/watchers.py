"""The run's customers watching their bookings, and the record of everything they were shown.

Real customers follow a booking in three ways, and the run does all three from one thread
running one asyncio loop on raw sockets (`chaos.wire`), so that hundreds of clients cost the
machine almost nothing:

- every customer keeps their "my bookings" stream open (`GET /api/v1/bookings/events` on the
  events process) for the whole run: it shows every booking they make;
- a sample of bookings also get their own stream (`GET /api/v1/bookings/<ref>/events`);
- another sample is polled (`GET /api/v1/bookings/<ref>` with `If-None-Match`), every
  `Retry-After` seconds while news is awaited and every `rest_poll_s` after, since a partner
  may still cancel a confirmed stay.

A stream that ends or breaks is opened again after its `retry:` with `Last-Event-ID`, as a
browser does. Every view a client receives (a stream's `status` event, a poll's 200, the API's
answer to a booking's POST or cancel, recorded by `chaos.load`) goes into the `ShownLog` with
the time it arrived, exactly as received: the checks judge what was sent, so nothing is dropped
here, not even a stale or repeated view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from chaos.model import ShownView
from chaos.wire import SseParser, WireError, body, get, open_get

CONNECT_TIMEOUT_S = 10.0
# A stream that sends nothing (no event, no heartbeat) for this long is taken for dead.
SILENT_STREAM_S = 60.0
RECONNECT_AFTER_ERROR_S = 2.0
# Views as the API and the streams give them: `bookings.live.payload`.
VIEW_FIELDS = ("reference", "status", "message_code", "status_version")


class ShownLog:
    """Thread-safe: every view any client of the run was shown, as it arrived."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._views: list[ShownView] = []
        self._latest: dict[tuple[str, str], ShownView] = {}  # (client, reference) -> last shown

    def add(self, client: str, data: Any, *, opening: bool = False, at: datetime | None = None) -> bool:
        """Record one view (a payload with the fields of VIEW_FIELDS); False if it had none."""
        if not isinstance(data, dict) or any(name not in data for name in VIEW_FIELDS):
            return False
        view = ShownView(
            reference=str(data["reference"]),
            client=client,
            at=at or datetime.now(UTC),
            status=str(data["status"]),
            message=str(data["message_code"]),
            version=int(data["status_version"]),
            opening=opening,
        )
        with self._lock:
            self._views.append(view)
            self._latest[(client, view.reference)] = view
        return True

    def latest(self, client: str, reference: str) -> ShownView | None:
        with self._lock:
            return self._latest.get((client, reference))

    def views(self) -> list[ShownView]:
        with self._lock:
            return list(self._views)

    def write_jsonl(self, path: Path) -> None:
        """The whole record, one view a line, for whoever investigates a violation."""
        with path.open("w") as out:
            for view in self.views():
                record = {
                    "at": view.at.isoformat(timespec="milliseconds"),
                    "client": view.client,
                    "reference": view.reference,
                    "status": view.status,
                    "message": view.message,
                    "version": view.version,
                }
                if view.opening:
                    record["opening"] = True
                out.write(json.dumps(record) + "\n")


class Watchers:
    """The customers' clients: one daemon thread and its event loop."""

    def __init__(
        self,
        *,
        events_url: str,
        web_url: str,
        log: ShownLog,
        bookings: int,
        booking_streams: int,
        pollers: int,
        rest_poll_s: float,
    ) -> None:
        events, web = urlsplit(events_url), urlsplit(web_url)
        self.events_address = (events.hostname or "127.0.0.1", events.port or 80)
        self.web_address = (web.hostname or "127.0.0.1", web.port or 80)
        self.log = log
        self.rest_poll_s = rest_poll_s
        # Every n-th accepted booking gets a stream of its own, and every n-th another a poller.
        self._stream_every = max(1, bookings // booking_streams) if booking_streams else 0
        self._poll_every = max(1, bookings // pollers) if pollers else 0
        self._booking_streams_left = booking_streams
        self._pollers_left = pollers
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="chaos-watchers", daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()
        self._nudges: dict[str, asyncio.Event] = {}  # per poller: poll now
        self._lock = threading.Lock()
        self._customer_streams: dict[str, str] = {}  # username -> client name
        self._followers: dict[str, list[str]] = {}  # reference -> client names
        self._stopping = False
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()

    # --- life --------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _spawn(self, make: Any) -> None:
        def create() -> None:
            task = self._loop.create_task(make())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._loop.call_soon_threadsafe(create)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._stopping = True

        async def cancel_all() -> None:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    # --- who follows what ----------------------------------------------------------------------
    def follow_customer(self, username: str, token: str) -> None:
        """The customer's "my bookings" stream, open from before their first booking to the end."""
        client = f"customer-stream:{username}"
        with self._lock:
            self._customer_streams[username] = client
        self._spawn(lambda: self._stream(client, "/api/v1/bookings/events", token))

    def accepted(self, *, index: int, reference: str, username: str, token: str) -> None:
        """A booking was accepted (202): its customer's stream shows it; a sample gets a stream
        of its own or a poller."""
        clients = []
        with self._lock:
            if reference in self._followers:
                return
            if username in self._customer_streams:
                clients.append(self._customer_streams[username])
            if self._stream_every and index % self._stream_every == 0 and self._booking_streams_left > 0:
                self._booking_streams_left -= 1
                stream = f"booking-stream:{reference}"
                clients.append(stream)
                self._spawn(lambda: self._stream(stream, f"/api/v1/bookings/{reference}/events", token))
            half = self._poll_every // 2
            if self._poll_every and index % self._poll_every == half and self._pollers_left > 0:
                self._pollers_left -= 1
                poller = f"poll:{reference}"
                clients.append(poller)
                self._spawn(lambda: self._poller(poller, reference, token))
            self._followers[reference] = clients

    def followers(self) -> dict[str, tuple[str, ...]]:
        with self._lock:
            return {reference: tuple(clients) for reference, clients in self._followers.items()}

    # --- the end -------------------------------------------------------------------------------
    def catch_up(self, final: dict[str, int], *, timeout_s: float) -> dict[str, Any]:
        """Once nothing of ours moves any more: poll every poller once more and wait (bounded)
        until every client following a booking shows its final version (`final`: reference ->
        status_version). What is still behind when the time is up is left for the checks."""
        started = time.monotonic()

        def nudge() -> None:
            for event in self._nudges.values():
                event.set()

        self._loop.call_soon_threadsafe(nudge)
        behind: list[tuple[str, str]] = []
        while True:
            behind = [
                (client, reference)
                for reference, clients in self.followers().items()
                if reference in final
                for client in clients
                if (seen := self.log.latest(client, reference)) is None or seen.version != final[reference]
            ]
            if not behind or time.monotonic() - started >= timeout_s:
                break
            time.sleep(0.25)
        return {
            "caught_up": not behind,
            "seconds": round(time.monotonic() - started, 1),
            "clients_behind": len(behind),
            "behind_examples": [f"{client} {reference}" for client, reference in behind[:10]],
        }

    def figures(self) -> dict[str, Any]:
        names = [name for clients in self.followers().values() for name in clients]
        return {
            "customer_streams": len(self._customer_streams),
            "booking_streams": sum(1 for name in names if name.startswith("booking-stream:")),
            "pollers": sum(1 for name in names if name.startswith("poll:")),
            "bookings_followed": len(self.followers()),
            **dict(self.counts),
            "errors": dict(self.errors),
        }

    # --- the clients ---------------------------------------------------------------------------
    async def _stream(self, client: str, path: str, token: str) -> None:
        host, port = self.events_address
        last_id: str | None = None
        retry_s = RECONNECT_AFTER_ERROR_S
        while not self._stopping:
            headers = {"Authorization": f"Token {token}", "Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            writer = None
            try:
                head, reader, writer = await open_get(host, port, path, headers, timeout_s=CONNECT_TIMEOUT_S)
                if head.status != 200:
                    raise WireError(f"stream answered {head.status}")
                self.counts["stream_connections"] += 1
                parser = SseParser()
                opening = True
                chunks = body(reader, head).__aiter__()
                while True:
                    try:
                        chunk = await asyncio.wait_for(chunks.__anext__(), SILENT_STREAM_S)
                    except StopAsyncIteration:
                        self.counts["streams_ended_by_server"] += 1
                        break
                    heartbeats = parser.comments
                    events = parser.feed(chunk)
                    for event in events:
                        if event.name == "status" and self.log.add(client, event.json(), opening=opening):
                            self.counts["stream_events"] += 1
                        if event.id is not None:
                            last_id = event.id
                    self.counts["heartbeats"] += parser.comments - heartbeats
                    # The opening is what the stream sends first, before any heartbeat or change.
                    if events or parser.comments > heartbeats:
                        opening = False
                    if parser.retry_ms is not None:
                        retry_s = parser.retry_ms / 1000
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, WireError, ValueError, asyncio.IncompleteReadError) as exc:
                self.errors[f"stream: {type(exc).__name__}: {exc}"[:120]] += 1
            finally:
                if writer is not None:
                    writer.close()
            await asyncio.sleep(retry_s)

    async def _poller(self, client: str, reference: str, token: str) -> None:
        host, port = self.web_address
        nudge = self._nudges[client] = asyncio.Event()
        etag: str | None = None
        path = f"/api/v1/bookings/{reference}"
        while not self._stopping:
            nudge.clear()
            headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
            if etag is not None:
                headers["If-None-Match"] = etag
            pause_s = self.rest_poll_s
            try:
                head, content = await get(host, port, path, headers, timeout_s=CONNECT_TIMEOUT_S)
                self.counts[f"polls_{head.status}"] += 1
                if head.status == 200:
                    self.log.add(client, json.loads(content))
                    etag = head.headers.get("etag", etag)
                if head.status in (200, 304) and head.headers.get("retry-after", "").isdigit():
                    pause_s = float(head.headers["retry-after"])
                elif head.status not in (200, 304):
                    pause_s = RECONNECT_AFTER_ERROR_S
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, WireError, ValueError, asyncio.IncompleteReadError) as exc:
                self.errors[f"poll: {type(exc).__name__}: {exc}"[:120]] += 1
                pause_s = RECONNECT_AFTER_ERROR_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nudge.wait(), pause_s)
