"""Helpers every test directory uses: unique partner codes, bounded waits, the broker's queues."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import dramatiq

T = TypeVar("T")


def unique_code(prefix: str = "t") -> str:
    """A partner code no other test (or test run sharing this Redis) uses: its queue and guard
    keys are this test's alone."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_until(
    condition: Callable[[], T], *, what: str, timeout_s: float = 10.0, interval_s: float = 0.02
) -> T:
    """Poll `condition` until it returns something truthy and return that; fail after
    `timeout_s` (a bounded wait on a condition, never a sleep then an assertion)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(interval_s)


def sessions_waiting_on_a_lock() -> int:
    """How many sessions of the test database wait on a lock now (PostgreSQL): a test that makes
    one transaction wait for another's row lock knows it waits before letting the other go."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def queued_messages(broker: dramatiq.Broker, queue_name: str) -> list[dramatiq.Message]:
    """The messages waiting on a queue of the Redis broker, in order (`<queue>.DQ` is the delay
    queue): dramatiq keeps their ids in the list `<namespace>:<queue>` and the encoded messages
    in the hash `<namespace>:<queue>.msgs`."""
    key = f"{broker.namespace}:{queue_name}"
    ids = broker.client.lrange(key, 0, -1)
    encoded = broker.client.hmget(f"{key}.msgs", ids) if ids else []
    return [dramatiq.Message.decode(data) for data in encoded]


def lose_messages(broker: dramatiq.Broker, *queue_names: str) -> None:
    """What a Redis restart does to the messages waiting on these queues (ready and delayed):
    gone, and with them every claim a waiting message held (`config.claims`), which lives in
    the same Redis."""
    for name in queue_names:
        broker.flush(name)
    lose_claims(broker)


def lose_claims(broker: dramatiq.Broker) -> None:
    from config.claims import claim_key

    claims = list(broker.client.scan_iter(claim_key("*")))
    if claims:
        broker.client.delete(*claims)
