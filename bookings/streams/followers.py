"""What one open stream follows, what its client already has, and what it is owed next.

The hub offers a follower every view it learns of (a publish, a heartbeat's re-read); the
follower keeps the newest per booking, so views that arrive late, twice or out of order are
dropped by their `status_version`, and a stream always says what the database says now.
"""

from __future__ import annotations

import asyncio
import random
import time
from uuid import UUID

from bookings.streams import selectors, sse
from bookings.streams.selectors import View

EVENT = "status"


class Follower:
    """Base of the two kinds of stream: one booking, or every booking of one customer."""

    def __init__(self, *, channel: str, life_s: float):
        self.channel = channel
        # Streams opened together (a deploy, a Redis restart) end spread out, not all at once.
        self.ends_at = time.monotonic() + life_s * random.uniform(0.8, 1.0)
        self.latest: dict[str, View] = {}  # by booking reference
        self._unsent: set[str] = set()
        self._beat = False
        self._ended = False
        self._wake = asyncio.Event()

    # --- what the hub tells it -----------------------------------------------------------------
    def offer(self, view: View) -> None:
        reference = view["reference"]
        known = self.latest.get(reference)
        if known is None or view["status_version"] > known["status_version"]:
            self.latest[reference] = view
            self._unsent.add(reference)
            self._wake.set()

    def beat(self) -> None:
        self._beat = True
        self._wake.set()

    def end(self) -> None:
        self._ended = True
        self._wake.set()

    # --- what the stream sends -------------------------------------------------------------------
    def read(self) -> list[View]:
        """The views this stream starts from (sync: the hub runs it in a database thread)."""
        raise NotImplementedError

    def event_id(self) -> int:
        raise NotImplementedError

    def opening(self, views: list[View], since: int | None) -> bytes:
        """The first events: what the client lacks, given the id it last saw (`Last-Event-ID`)."""
        for view in views:
            self.offer(view)
        self._unsent = set(self.latest) if self.latest and self.event_id() != since else set()
        return self._events()

    async def next_chunk(self) -> bytes | None:
        """What to send next, once there is something; None once the stream is over."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._ended:
                return None
            if self._unsent:
                self._beat = False
                return self._events()
            if self._beat:
                self._beat = False
                return sse.comment("heartbeat")

    def _events(self) -> bytes:
        # The id goes on the last event only: a client cut off halfway resumes before the rest.
        views = sorted((self.latest[reference] for reference in self._unsent), key=_version)
        self._unsent.clear()
        return b"".join(
            sse.event(EVENT, view, id=self.event_id() if view is views[-1] else None) for view in views
        )


class BookingFollower(Follower):
    """One booking: its event id is the booking's `status_version`."""

    def __init__(self, *, booking_id: UUID, channel: str, life_s: float):
        super().__init__(channel=channel, life_s=life_s)
        self.booking_id = booking_id

    def read(self) -> list[View]:
        return list(selectors.booking_views([self.booking_id]).values())

    def event_id(self) -> int:
        (view,) = self.latest.values()
        return view["status_version"]


class CustomerFollower(Follower):
    """Every booking of one customer (their "my bookings"): its event id is the customer's
    sequence number (`selectors.customer_sequences`), so that one id says whether a client that
    resumes has missed anything; when it has, it gets every booking again and keeps the newer."""

    def __init__(self, *, customer_id: int, channel: str, life_s: float):
        super().__init__(channel=channel, life_s=life_s)
        self.customer_id = customer_id

    def read(self) -> list[View]:
        return selectors.customer_views([self.customer_id]).get(self.customer_id, [])

    def event_id(self) -> int:
        return self.sequence

    @property
    def sequence(self) -> int:
        return sum(_version(view) for view in self.latest.values())


def _version(view: View) -> int:
    return view["status_version"]
