"""The sweeper lock survives a lost reply, and a holder never renews or frees another's lock;
schedulers sweep once per interval between them, and one takes over when the other dies.

The lost reply is made for real: a Redis of the test's own is stopped (SIGSTOP), so a request
waits in its socket while the client gives up on its answer, and is carried out when the server
runs again (SIGCONT), as a request queued during a network cut arrives when the cable is back.
That is how both schedulers of the cluster chaos run skipped every round for the lock's 60 s.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
import redis
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from config.embedded_redis import EmbeddedRedis, with_socket_timeouts
from reconciliation.management.commands.run_scheduler import LOCK_LOST, SKIPPED_SWEPT, Command
from reconciliation.sweeper_lock import SweeperLock, sweeper_lock_key
from tests.helpers import wait_until
from tests.own_servers import ProjectProcesses, own_redis
from tests.reconciliation.conftest import queued
from tests.streams import database_url

TTL_S = 60.0  # long, like the production lock's minute: nothing below waits for it to expire
GIVE_UP_S = 0.3  # how long a cut-off scheduler waits for the answer it will not get


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = own_redis(tmp_path / "redis-var")
    yield server
    os.kill(server.process.pid, signal.SIGCONT)  # a stopped server cannot be stopped
    server.stop()


def _client(server: EmbeddedRedis, answer_within_s: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(with_socket_timeouts(server.url, answer_within_s))


def _lock(server: EmbeddedRedis, *, name: str, ttl_s: float = TTL_S) -> SweeperLock:
    """A scheduler's lock, its client connected and every script loaded before anything is cut
    (a script Redis does not know yet is refused, not run, when its late request arrives). Tried
    on a lock of its own with the long TTL: a short one may lapse between two requests of a busy
    machine."""
    client = _client(server)
    trial = SweeperLock(client, ttl_s=TTL_S, name=f"{name}:trial")
    assert (trial.take(), trial.renew(), trial.release()) == (True, True, True)
    return SweeperLock(client, ttl_s=ttl_s, name=name)


def _take_answered_to_nobody(server: EmbeddedRedis, lock: SweeperLock) -> None:
    """`lock`'s scheduler asks for the lock while the server is stopped and gives up on the
    answer after GIVE_UP_S; the request is carried out once the server runs again. Only that
    request is given up on so soon: the scheduler's others wait as long as any other client's,
    for a busy machine may answer them late."""
    hasty = SweeperLock(_connected(server, GIVE_UP_S), ttl_s=lock.ttl_ms / 1000, name=lock.name)
    hasty.token = lock.token  # the same scheduler
    os.kill(server.process.pid, signal.SIGSTOP)
    with pytest.raises(redis.TimeoutError):
        hasty.take()
    os.kill(server.process.pid, signal.SIGCONT)
    wait_until(lambda: lock.client.get(lock.name), what="the late request to take the lock", timeout_s=10)


def _connected(server: EmbeddedRedis, answer_within_s: float) -> redis.Redis:
    """A client connected before the cut (connecting asks Redis too); asked again when a busy
    machine answered later than it waits."""
    client = _client(server, answer_within_s)
    wait_until(lambda: _pings(client), what="a first answer to a hasty client", timeout_s=30)
    return client


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.TimeoutError:
        return False


def test_a_take_whose_answer_was_lost_is_recognised_at_the_next_round(server):
    name = f"sweeper-lock-{uuid4().hex}"
    cut_off = _lock(server, name=name)
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
    cut_off = _lock(server, name=name)
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
    assert cut_off.client.exists(cut_off.swept_mark) == 1  # once the interval has passed


def test_a_swept_round_holds_off_every_scheduler_for_its_interval_but_not_a_sweep_asked_for_now(server):
    name = f"sweeper-lock-{uuid4().hex}"
    swept, standby = _lock(server, name=name), _lock(server, name=name)
    assert swept.take() is True
    assert swept.finish(interval_s=TTL_S) is True

    # nobody sweeps the round again, the one that swept it neither, until its interval ends
    assert (standby.take(), swept.take()) == (False, False)
    lock_s, mark_s = standby.free_in_s()
    assert lock_s == 0 and TTL_S - 5 < mark_s <= TTL_S
    # an operator's sweep now (`run_scheduler --once`) passes over the mark, never over a sweep
    assert standby.take(now=True) is True
    assert swept.take(now=True) is False
    assert standby.finish(interval_s=0.2) is True
    wait_until(lambda: swept.take(), what="the shorter mark to go", timeout_s=5)


# --- one sweep per interval, however many schedulers -----------------------------------------------
INTERVAL_S = 1.0


def _sweeps(stack: ProjectProcesses, name: str) -> list[datetime]:
    """When each of the scheduler's sweeps finished, by its JSON log."""
    finished = []
    for line in _log(stack, name).split("\n")[:-1]:  # whole lines: the last may be being written
        if line.startswith("{") and json.loads(line).get("message") == "sweep finished":
            finished.append(datetime.fromisoformat(json.loads(line)["time"]))
    return finished


def test_two_schedulers_sweep_once_per_interval_between_them_and_either_takes_over(
    server, transactional_db, tmp_path
):
    stack = ProjectProcesses(
        tmp_path, {"DATABASE_URL": database_url(), "REDIS_URL": server.url, "LOG_FORMAT": "json"}
    )
    try:
        # two schedulers (two machines), their rounds offset as two machines' are
        stack.manage("a", "run_scheduler", "--interval", str(INTERVAL_S))
        time.sleep(0.4)
        stack.manage("b", "run_scheduler", "--interval", str(INTERVAL_S))
        wait_until(
            lambda: all("scheduler: sweeping every" in _log(stack, name) for name in "ab"),
            what="both schedulers to start",
            timeout_s=30,
        )

        # then the sweeps between them are an interval apart: not one per scheduler per round
        wait_until(lambda: len(_all_sweeps(stack)) >= 8, what="eight sweeps", timeout_s=30)
        assert [stack.started[name].poll() for name in "ab"] == [None, None]
        sweeps = _all_sweeps(stack)
        gaps = [(later - earlier).total_seconds() for (earlier, _), (later, _) in itertools.pairwise(sweeps)]
        assert min(gaps) >= INTERVAL_S, sweeps

        # and when the one that swept last dies between two sweeps, the other sweeps about an
        # interval after it
        last, last_at = _stopped_between_sweeps(stack, _client(server))
        os.killpg(stack.started[last].pid, signal.SIGKILL)
        other = "b" if last == "a" else "a"
        wait_until(
            lambda: any(at > last_at for at in _sweeps(stack, other)),
            what="the other to take over",
            timeout_s=10,
        )
        took_over = min(at for at in _sweeps(stack, other) if at > last_at)
        assert (took_over - last_at).total_seconds() < 2 * INTERVAL_S
    finally:
        stack.stop_all()


def _stopped_between_sweeps(stack: ProjectProcesses, client: redis.Redis) -> tuple[str, datetime]:
    """Stop (SIGSTOP) the scheduler that swept last while it holds no lock: its name and its last
    sweep. Chosen once it is stopped, from its log and the lock, not from a log read before: a
    test process a busy machine leaves without CPU for an interval would stop one that has swept
    again since, or one in the middle of a sweep, whose lock the other must then wait out."""

    def stopped() -> tuple[str, datetime] | None:
        last_at, last = _all_sweeps(stack)[-1]
        os.killpg(stack.started[last].pid, signal.SIGSTOP)
        if _all_sweeps(stack)[-1] == (last_at, last) and not client.exists(sweeper_lock_key()):
            return last, last_at
        os.killpg(stack.started[last].pid, signal.SIGCONT)
        return None

    return wait_until(
        stopped, what="the last to sweep, stopped between two sweeps", timeout_s=30, interval_s=0.1
    )


def _log(stack: ProjectProcesses, name: str) -> str:
    return (stack.log_dir / f"{name}.log").read_text(errors="replace")


def _all_sweeps(stack: ProjectProcesses) -> list[tuple[datetime, str]]:
    return sorted((at, name) for name in "ab" for at in _sweeps(stack, name))


def test_two_deployments_sharing_one_redis_under_namespaces_of_their_own_each_sweep(
    server, transactional_db, tmp_path
):
    """Two deployments (DRAMATIQ_NAMESPACE apart) on one Redis: each one's scheduler sweeps. Their
    claims and queues were apart, but the lock was one fixed key, so the second deployment's
    scheduler skipped every round the first had swept, and the other way round: between them
    they swept as one."""
    deployments = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        deployments[name] = ProjectProcesses(
            tmp_path / name,
            {
                # the settings an operator runs (the test settings pin a namespace of their own)
                "DJANGO_SETTINGS_MODULE": "config.settings.dev",
                "DEBUG": "false",
                "DATABASE_URL": database_url(),
                "REDIS_URL": server.url,
                "DRAMATIQ_NAMESPACE": f"deployment-{name}",
                "LOG_FORMAT": "json",
            },
        )
    try:
        deployments["a"].manage("a", "run_scheduler", "--interval", "60")
        wait_until(lambda: _sweeps(deployments["a"], "a"), what="deployment a's sweep", timeout_s=30)
        deployments["b"].manage("b", "run_scheduler", "--interval", "60")

        def b_round() -> str | None:
            if _sweeps(deployments["b"], "b"):
                return "swept"
            return "skipped" if SKIPPED_SWEPT in _log(deployments["b"], "b") else None

        assert wait_until(b_round, what="deployment b's first round", timeout_s=30) == "swept"
        client = _client(server)
        assert client.exists("deployment-a:reconciliation:sweeper-lock:swept")
        assert client.exists("deployment-b:reconciliation:sweeper-lock:swept")
        assert sweeper_lock_key("deployment-a") == "deployment-a:reconciliation:sweeper-lock"
    finally:
        for deployment in deployments.values():
            deployment.stop_all()
