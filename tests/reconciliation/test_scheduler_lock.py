"""The sweeper lock survives a lost reply, and a holder never renews or frees another's lock.

The lost reply is made for real: a Redis of the test's own is stopped (SIGSTOP), so a request
waits in its socket while the client gives up on its answer, and is carried out when the server
runs again (SIGCONT), as a request queued during a network cut arrives when the cable is back.
That is how both schedulers of the cluster chaos run skipped every round for the lock's 60 s.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import redis
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from config.embedded_redis import EmbeddedRedis, with_socket_timeouts
from reconciliation.management.commands.run_scheduler import LOCK_LOST, Command
from reconciliation.sweeper_lock import SweeperLock
from tests.helpers import wait_until
from tests.own_servers import own_redis
from tests.reconciliation.conftest import queued

TTL_S = 60.0  # long, like the production lock's minute: nothing below waits for it to expire


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = own_redis(tmp_path / "redis-var")
    yield server
    os.kill(server.process.pid, signal.SIGCONT)  # a stopped server cannot be stopped
    server.stop()


def _lock(
    server: EmbeddedRedis, *, name: str, answer_within_s: float = 5.0, ttl_s: float = TTL_S
) -> SweeperLock:
    client = redis.Redis.from_url(with_socket_timeouts(server.url, answer_within_s))
    lock = SweeperLock(client, ttl_s=ttl_s, name=name)
    # Connected, and its scripts loaded, before anything is cut (a script Redis does not know
    # yet is refused, not run, when its late request arrives).
    assert (lock.take(), lock.renew(), lock.release()) == (True, True, True)
    return lock


def _take_answered_to_nobody(server: EmbeddedRedis, lock: SweeperLock) -> None:
    """`lock` asks for the lock while the server is stopped and gives up on the answer; the
    request is carried out once the server runs again."""
    os.kill(server.process.pid, signal.SIGSTOP)
    with pytest.raises(redis.TimeoutError):
        lock.take()
    os.kill(server.process.pid, signal.SIGCONT)
    wait_until(lambda: lock.client.get(lock.name), what="the late request to take the lock", timeout_s=10)


def test_a_take_whose_answer_was_lost_is_recognised_at_the_next_round(server):
    name = f"sweeper-lock-{uuid4().hex}"
    cut_off = _lock(server, name=name, answer_within_s=0.3)
    standby = _lock(server, name=name)

    _take_answered_to_nobody(server, cut_off)

    assert standby.take() is False  # the lock is the cut-off scheduler's, as Redis says
    assert cut_off.take() is True  # which finds its own token: this round is swept, not skipped
    assert 0 < cut_off.client.pttl(name) <= TTL_S * 1000
    assert cut_off.release() is True
    assert standby.take() is True


def test_renewing_and_releasing_never_touch_another_schedulers_lock(server):
    name = f"sweeper-lock-{uuid4().hex}"
    late = _lock(server, name=name, ttl_s=0.2)
    standby = _lock(server, name=name)
    assert late.take() is True
    wait_until(lambda: standby.take(), what="the unrenewed lock to expire and the standby to take it")

    assert late.renew() is False
    assert late.release() is False
    assert late.take() is False
    assert standby.client.get(name).decode() == standby.token
    assert standby.renew() is True


def test_the_scheduler_whose_take_was_lost_sweeps_its_next_round_and_the_standby_skips(
    server, transactional_db, make_booking, sweep_queue, broker, caplog
):
    booking = make_booking(
        status=BookingState.PENDING_PARTNER, next_check_at=timezone.now() - timedelta(seconds=1)
    )
    name = f"sweeper-lock-{uuid4().hex}"
    cut_off = _lock(server, name=name, answer_within_s=0.3)
    standby = _lock(server, name=name)
    _take_answered_to_nobody(server, cut_off)
    caplog.set_level(logging.INFO, logger="reconciliation")

    Command()._sweep_once(standby)
    assert [m.args[0] for m in queued(broker, sweep_queue)] == []
    Command()._sweep_once(cut_off)

    assert [m.args[0] for m in queued(broker, sweep_queue)] == [[str(booking.pk)]]
    assert Booking.objects.get(pk=booking.pk).next_check_at > timezone.now()
    messages = [r.getMessage() for r in caplog.records]
    assert "another scheduler is sweeping; skipping this round" in messages
    assert LOCK_LOST not in messages
    assert cut_off.client.exists(name) == 0  # released after its sweep: the next round is anyone's
