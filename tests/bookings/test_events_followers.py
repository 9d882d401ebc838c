"""A stream's follower on its own: what it sends given what its client has (`Last-Event-ID`) and
what the hub offers it, late, twice or out of order."""

from __future__ import annotations

import asyncio
import uuid

from bookings.streams.followers import BookingFollower, CustomerFollower


def view(reference: str, version: int, status: str = "pending") -> dict:
    return {"reference": reference, "status": status, "status_version": version}


def booking_follower() -> BookingFollower:
    return BookingFollower(booking_id=uuid.uuid4(), channel="test:booking", life_s=60)


def customer_follower() -> CustomerFollower:
    return CustomerFollower(customer_id=1, channel="test:customer", life_s=60)


def blocks(chunk: bytes) -> list[str]:
    return [block for block in chunk.decode().split("\n\n") if block]


def ids(chunk: bytes) -> list[str]:
    return [line for line in chunk.decode().splitlines() if line.startswith("id:")]


def sent(follower) -> bytes | None:
    return asyncio.run(asyncio.wait_for(follower.next_chunk(), 1))


def test_a_booking_stream_opens_with_the_booking_unless_the_client_has_that_version():
    assert blocks(booking_follower().opening([view("BK-1", 3)], since=None)) == [
        'event: status\nid: 3\ndata: {"reference":"BK-1","status":"pending","status_version":3}'
    ]
    assert booking_follower().opening([view("BK-1", 3)], since=3) == b""
    # an older id gets the booking as it is now, not the versions in between
    assert ids(booking_follower().opening([view("BK-1", 3)], since=1)) == ["id: 3"]


def test_only_a_newer_version_is_sent_and_a_heartbeat_only_when_there_is_no_news():
    follower = booking_follower()
    follower.opening([view("BK-1", 2)], since=2)

    follower.offer(view("BK-1", 1))  # late
    follower.offer(view("BK-1", 2))  # again
    follower.beat()
    assert sent(follower) == b": heartbeat\n\n"

    follower.offer(view("BK-1", 4, "confirmed"))
    follower.offer(view("BK-1", 3))  # overtaken while queued
    follower.beat()
    assert blocks(sent(follower)) == [
        'event: status\nid: 4\ndata: {"reference":"BK-1","status":"confirmed","status_version":4}'
    ]


def test_a_customer_stream_numbers_by_the_sum_of_versions_and_ids_only_its_last_event():
    follower = customer_follower()

    opening = follower.opening([view("BK-1", 2), view("BK-2", 1)], since=None)

    assert len(blocks(opening)) == 2 and ids(opening) == ["id: 3"]
    follower.offer(view("BK-2", 3))
    assert ids(sent(follower)) == ["id: 5"]


def test_a_customer_stream_resumed_at_its_sequence_sends_nothing_and_behind_it_everything():
    views = [view("BK-1", 2), view("BK-2", 1)]

    assert customer_follower().opening(views, since=3) == b""
    assert len(blocks(customer_follower().opening(views, since=2))) == 2


def test_an_ended_stream_sends_nothing_more():
    follower = booking_follower()
    follower.opening([view("BK-1", 1)], since=1)

    follower.offer(view("BK-1", 2))
    follower.end()

    assert sent(follower) is None
