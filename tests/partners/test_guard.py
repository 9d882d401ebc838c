"""Per-partner circuit breaker and concurrency cap, shared by every worker process via Redis."""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pybreaker
import pytest
import redis
from django.conf import settings

from config.embedded_redis import EmbeddedRedis, with_socket_timeouts
from config.redis_client import redis_client
from partners import guard
from partners.connectors import connector_for
from partners.models import Adapter, Outcome, Partner
from tests.helpers import unique_code, wait_until
from tests.own_servers import own_redis
from tests.partners.conftest import REFERENCE_CAPS


class ScriptedPartner:
    """A real HTTP server answering every GET with `status` after `delay_s`, counting requests."""

    def __init__(self) -> None:
        self.status = 200
        self.delay_s = 0.0
        self.requests = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()
        partner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with partner.lock:
                    partner.requests += 1
                    partner.in_flight += 1
                    partner.most_in_flight = max(partner.most_in_flight, partner.in_flight)
                time.sleep(partner.delay_s)
                status = partner.status
                payload = {"id": "R-1", "client_reference": "BK-1", "status": "confirmed", "version": 1}
                body = json.dumps(payload if status == 200 else {"error": "server_error"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if status == 429:
                    self.send_header("Retry-After", "7")
                self.end_headers()
                self.wfile.write(body)
                with partner.lock:
                    partner.in_flight -= 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[ScriptedPartner]:
    server = ScriptedPartner()
    yield server
    server.stop()


@pytest.fixture
def partner(scripted, settings, reset_guard) -> Iterator[Partner]:
    """An unsaved partner row (the guard needs no database), with clean Redis state."""
    settings.PARTNER_BREAKER_FAIL_MAX = 3
    # pybreaker keeps opened_at in whole seconds: 2 s is the shortest reset that is always > 1 s
    settings.PARTNER_BREAKER_RESET_S = 2.0
    partner = Partner(
        code=unique_code("guard"),
        adapter=Adapter.REFERENCE,
        base_url=scripted.url,
        api_key="k",
        capabilities=list(REFERENCE_CAPS),
        connect_timeout_s=0.5,
        read_timeout_s=2.0,
        max_concurrency=8,
    )
    reset_guard(partner)
    yield partner
    reset_guard(partner)


def get(partner: Partner):
    connector = connector_for(partner)
    return guard.guarded_call(partner, lambda: connector.get("R-1"))


def test_breaker_trips_after_n_failures_and_then_makes_no_call(partner, scripted):
    scripted.status = 503

    failures = [get(partner) for _ in range(3)]

    assert [(r.outcome, r.http_status) for r in failures] == [(Outcome.TRANSIENT, 503)] * 3
    assert scripted.requests == 3
    assert guard.guard_status(partner)["circuit"] == "open"

    blocked = get(partner)

    assert (blocked.outcome, blocked.error_code, blocked.http_status) == (
        Outcome.TRANSIENT,
        "circuit_open",
        None,
    )
    assert blocked.retry_after_s == 2.0
    assert scripted.requests == 3  # no HTTP request was made


def test_breaker_state_is_shared_through_redis(partner, scripted):
    scripted.status = 503
    for _ in range(3):
        get(partner)

    # another worker process: its own breaker object, the same Redis keys
    guard._breakers.pop(partner.code)
    other = guard.breaker_for(partner)

    assert other is not None and other.current_state == "open"
    assert get(partner).error_code == "circuit_open"
    assert scripted.requests == 3


def test_failures_count_across_instances(partner, scripted):
    scripted.status = 503
    get(partner)
    get(partner)
    guard._breakers.pop(partner.code)  # the third failure happens in "another process"

    get(partner)

    assert guard.breaker_for(partner).current_state == "open"


def test_after_the_reset_timeout_one_trial_call_closes_it_again(partner, scripted):
    scripted.status = 503
    for _ in range(3):
        get(partner)
    scripted.status = 200

    result = wait_until(
        lambda: (r := get(partner)).error_code != "circuit_open" and r,
        timeout_s=5,
        interval_s=0.1,
        what="the breaker to let a trial call through",
    )

    assert result.outcome == Outcome.OK
    assert guard.guard_status(partner)["circuit"] == "closed"
    assert guard.guard_status(partner)["fail_counter"] == 0


def test_a_failed_trial_call_opens_it_again(partner, scripted):
    scripted.status = 503
    for _ in range(3):
        get(partner)

    trial = wait_until(
        lambda: (r := get(partner)).error_code != "circuit_open" and r,
        timeout_s=5,
        interval_s=0.1,
        what="the breaker to let a trial call through",
    )

    assert (trial.outcome, trial.http_status) == (Outcome.TRANSIENT, 503)  # the trial's own answer
    assert scripted.requests == 4
    assert guard.breaker_for(partner).current_state == "open"
    assert get(partner).error_code == "circuit_open"
    assert scripted.requests == 4


def test_rate_limiting_and_success_do_not_trip_it(partner, scripted):
    scripted.status = 429
    results = [get(partner) for _ in range(5)]
    assert {(r.outcome, r.http_status, r.retry_after_s) for r in results} == {(Outcome.TRANSIENT, 429, 7.0)}
    assert guard.guard_status(partner)["circuit"] == "closed"

    scripted.status = 503
    get(partner)
    get(partner)
    scripted.status = 200
    get(partner)  # a success resets the count
    scripted.status = 503
    get(partner)
    assert guard.guard_status(partner)["circuit"] == "closed"


def test_calls_to_one_partner_run_in_parallel_within_a_process(partner, scripted):
    """The breaker must not hold a lock across the call: one slow call would block every other."""
    scripted.delay_s = 0.4

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: get(partner), range(4)))
    elapsed = time.monotonic() - started

    assert [r.outcome for r in results] == [Outcome.OK] * 4
    assert scripted.most_in_flight == 4
    assert elapsed < 1.2


def test_concurrency_cap_is_shared_and_excess_calls_are_not_made(partner, scripted):
    partner.max_concurrency = 2
    scripted.delay_s = 0.5

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(lambda _: get(partner), range(5)))

    made = [r for r in results if r.outcome == Outcome.OK]
    refused = [r for r in results if r.error_code == "concurrency_limit"]
    assert (len(made), len(refused)) == (2, 3)
    assert {(r.outcome, r.http_status) for r in refused} == {(Outcome.TRANSIENT, None)}
    assert scripted.requests == 2
    assert scripted.most_in_flight == 2
    assert guard.guard_status(partner)["in_flight"] == 0  # every slot given back


def test_calls_the_release_before_holds_count_against_the_cap_during_a_rolling_restart(partner, scripted):
    """Review: the release before counted calls in flight in one counter; while its workers still
    ran beside the new ones, each side allowed the whole cap, twice the partner's limit."""
    partner.max_concurrency = 2
    old_counter = f"{settings.PARTNER_GUARD_NAMESPACE}:{partner.code}:concurrency"
    redis_client().set(old_counter, 2, px=60_000)  # the old workers' two calls out
    try:
        refused = get(partner)

        assert (refused.error_code, scripted.requests) == ("concurrency_limit", 0)
        redis_client().set(old_counter, 1, px=60_000)  # one of them answered
        assert get(partner).outcome == Outcome.OK
    finally:
        redis_client().delete(old_counter)


def test_the_cap_stays_exact_with_many_threads_calling_at_once(partner, scripted):
    partner.max_concurrency = 3
    # Sixteen threads ask for a slot at the same moment: exactly three get one.
    together = threading.Barrier(16)

    def take(_: int) -> str | None:
        together.wait()
        return guard.take_slot(partner)

    with ThreadPoolExecutor(16) as pool:
        tokens = [t for t in pool.map(take, range(16)) if t]
    assert len(set(tokens)) == 3
    assert guard.guard_status(partner)["in_flight"] == 3
    for token in tokens:
        guard.give_back(partner, token)
    assert guard.guard_status(partner)["in_flight"] == 0

    # Through the guard, calls taking and giving back slots all the while: never more than three
    # at the partner, every call either made or refused.
    scripted.delay_s = 0.05
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: get(partner), range(96)))

    made = [r for r in results if r.outcome == Outcome.OK]
    refused = [r for r in results if r.error_code == "concurrency_limit"]
    assert len(made) + len(refused) == 96
    assert len(made) == scripted.requests
    assert 1 <= scripted.most_in_flight <= 3
    assert guard.guard_status(partner)["in_flight"] == 0


# A worker process that takes one of the partner's slots for a call that hangs, with a short
# lease (`guard.lease_s`), and says when its call is under way; the test SIGKILLs it mid-call.
HOLDER = """
import json, sys
import django

django.setup()
from partners import guard
from partners.connectors import connector_for
from partners.models import Partner

guard.lease_s = lambda partner: float(sys.argv[2])
partner = Partner(**json.loads(sys.argv[1]))
guard.guarded_call(partner, lambda: connector_for(partner).get("R-1"))
"""


def test_a_slot_whose_holder_was_killed_mid_call_comes_back_after_its_lease_while_calls_go_on(
    partner, scripted
):
    partner.max_concurrency = 2
    scripted.delay_s = 60.0  # the holder's call hangs until it is killed
    fields = {
        "code": partner.code,
        "adapter": partner.adapter,
        "base_url": partner.base_url,
        "api_key": partner.api_key,
        "capabilities": partner.capabilities,
        "connect_timeout_s": partner.connect_timeout_s,
        "read_timeout_s": 120.0,
        "max_concurrency": partner.max_concurrency,
    }
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, json.dumps(fields), "5.0"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "PYTHONPATH": str(Path.cwd())},
    )
    try:
        wait_until(lambda: scripted.in_flight == 1, timeout_s=30, what="the holder's call to be under way")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert guard.guard_status(partner)["in_flight"] == 1  # the killed holder's slot, still held
    scripted.delay_s = 0.05
    stop = threading.Event()

    def calls_go_on() -> None:  # each call takes a lease of its own (and renews the partner's key)
        while not stop.is_set():
            assert get(partner).outcome == Outcome.OK
            time.sleep(0.05)

    with ThreadPoolExecutor(1) as pool:
        traffic = pool.submit(calls_go_on)
        try:
            wait_until(
                lambda: guard.guard_status(partner)["in_flight"] == 0,
                timeout_s=20,
                interval_s=0.01,
                what="the killed holder's slot to come back between two calls",
            )
        finally:
            stop.set()
        traffic.result()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: get(partner), range(2)))
    assert [r.outcome for r in results] == [Outcome.OK] * 2


@pytest.fixture
def stoppable_redis(partner, tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """Our keys' Redis client pointed at a Redis of the test's own (which it may stop)."""
    server = own_redis(tmp_path / "redis-var")
    client = redis_client()
    pool = client.connection_pool
    client.connection_pool = redis.ConnectionPool.from_url(with_socket_timeouts(server.url, 1.0))
    guard._breakers.pop(partner.code, None)  # its storage on the test's Redis
    try:
        yield server
    finally:
        client.connection_pool.disconnect()
        client.connection_pool = pool
        guard._breakers.pop(partner.code, None)
        server.stop()


def test_when_redis_stops_answering_during_a_call_the_partners_answer_is_kept(
    partner, scripted, stoppable_redis, caplog
):
    scripted.delay_s = 0.5
    with ThreadPoolExecutor(1) as pool:
        calling = pool.submit(get, partner)
        wait_until(lambda: scripted.in_flight == 1, what="the call to be under way")
        stoppable_redis.stop()
        with caplog.at_level(logging.WARNING, logger="partners.guard"):
            result = calling.result(timeout=30)

    assert (result.outcome, result.http_status) == (Outcome.OK, 200)
    assert [r.partner_ref for r in result.reservations] == ["R-1"]
    assert scripted.requests == 1
    assert any("slot not given back" in r.getMessage() for r in caplog.records)


def test_with_redis_down_no_call_is_made(partner, scripted, stoppable_redis):
    stoppable_redis.stop()

    with pytest.raises(redis.RedisError):
        get(partner)

    assert scripted.requests == 0


def test_a_create_the_guard_could_not_let_through_fences_nothing_and_is_submitted_again(
    partner, scripted, stoppable_redis, transactional_db
):
    # given a booking whose partner's guard cannot reach Redis when its create is to be made
    from partners.models import Operation, PartnerAttempt
    from partners.services.submission import submission_run
    from tests.factories import BookingFactory, OfferFactory

    partner.save()
    booking = BookingFactory(offer=OfferFactory(partner=partner))
    stoppable_redis.stop()

    # when the worker submits it
    follow_up = submission_run(booking.pk)

    # then nothing was sent, the attempt is closed as not sent and fences nothing, and the
    # booking is back in line for another submission (not taken for a create in doubt)
    booking.refresh_from_db()
    attempt = PartnerAttempt.objects.get(booking=booking, operation=Operation.CREATE)
    assert scripted.requests == 0
    assert (attempt.outcome, attempt.error) == (Outcome.TRANSIENT, "guard_unavailable")
    assert not PartnerAttempt.objects.fencing().filter(booking=booking).exists()
    assert booking.status == "requested"
    assert follow_up.submit_after_s is not None


def test_disabled_partner_is_not_called(partner, scripted):
    partner.enabled = False

    result = get(partner)

    assert (result.outcome, result.error_code) == (Outcome.TRANSIENT, "partner_disabled")
    assert scripted.requests == 0


def test_guard_status_shows_what_support_needs(partner, scripted):
    scripted.status = 503
    get(partner)

    status = guard.guard_status(partner)

    assert status == {
        "circuit": "closed",
        "fail_counter": 1,
        "opened_at": None,
        "in_flight": 0,
        "max_concurrency": 8,
    }


def test_shared_breaker_is_pybreakers_with_redis_storage(partner):
    breaker = guard.breaker_for(partner)
    assert isinstance(breaker, pybreaker.CircuitBreaker)
    assert isinstance(breaker._state_storage, pybreaker.CircuitRedisStorage)
    assert breaker.fail_max == 3
