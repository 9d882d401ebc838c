"""The three probes (config/health.py): `/livez` asks nothing, `/readyz` fails for this process's
database only (Redis in its body, never failing it), `/healthz` is the full report for alerting.

Before, `/healthz` was the only probe and the README's load balancer check: with the Redis every
machine shares down, every instance failed it at once, and a load balancer or a Kubernetes
readiness took them all out of rotation, though reads, bookings (202) and webhook
acknowledgements keep working without Redis. And a PostgreSQL that takes no writes showed only
to the process that had answered a write 503 for it, so the probe's answer depended on which
gunicorn worker took it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import dramatiq
import pytest
import redis
from django.db import OperationalError, connection

from config import database_errors, health
from config.embedded_redis import EmbeddedRedis
from config.logging import AtMostEvery
from tests.own_servers import own_redis


@pytest.fixture
def fresh(monkeypatch):
    """No write refused yet in this process; each log's traceback allowance afresh."""
    monkeypatch.setattr(database_errors, "last_refusal", database_errors._LastRefusal())
    monkeypatch.setattr(health, "_tracebacks", {"database": AtMostEvery(60.0), "broker": AtMostEvery(60.0)})


@pytest.fixture
def database_unreachable(monkeypatch):
    def refused(*args, **kwargs):
        raise OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")

    monkeypatch.setattr("config.health.connection", SimpleNamespace(cursor=refused))


@pytest.fixture
def broker_unreachable(monkeypatch):
    dead = redis.Redis(unix_socket_path="/nonexistent/redis.sock", socket_connect_timeout=0.2)
    monkeypatch.setattr(dramatiq.get_broker(), "client", dead)


@pytest.fixture
def stopped_broker(tmp_path: Path, monkeypatch) -> Iterator[EmbeddedRedis]:
    """A Redis of the test's own as this process's broker (with the web's 1 s timeouts), stopped
    (SIGSTOP): it takes connections and answers nothing, as one cut off behind a black-holed route."""
    server = own_redis(tmp_path / "redis-var")
    client = redis.Redis(unix_socket_path=str(server.socket), socket_timeout=1, socket_connect_timeout=1)
    monkeypatch.setattr(dramatiq.get_broker(), "client", client)
    os.kill(server.process.pid, signal.SIGSTOP)
    yield server
    os.kill(server.process.pid, signal.SIGCONT)
    server.stop()


@pytest.mark.django_db
def test_livez_answers_with_the_database_and_redis_both_down(
    client, fresh, database_unreachable, broker_unreachable
):
    live = client.get("/livez")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    assert client.get("/healthz").status_code == 503


@pytest.mark.django_db
def test_readyz_stays_ready_with_redis_down_and_says_so(client, fresh, stopped_broker):
    started = time.monotonic()
    ready = client.get("/readyz")
    took_s = time.monotonic() - started

    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"database": True, "broker": False}}
    # a Redis that does not answer holds the probe READYZ_BROKER_TIMEOUT_S, not the web's 1 s twice
    assert took_s < 1.0, took_s
    started = time.monotonic()
    health_answer = client.get("/healthz")
    took_s = time.monotonic() - started
    # asked once, within the web's timeouts; not three times more (redis-py's retries: 15 s)
    assert took_s < 3.0, took_s
    assert health_answer.status_code == 503
    assert health_answer.json() == {"status": "unavailable", "checks": {"database": True, "broker": False}}


@pytest.mark.django_db
def test_readyz_is_503_when_this_process_cannot_reach_its_database(
    client, broker, fresh, database_unreachable, caplog
):
    with caplog.at_level(logging.WARNING, logger="config.health"):
        ready = client.get("/readyz")
    assert ready.status_code == 503 and ready["Retry-After"]
    assert ready.json() == {"status": "unavailable", "checks": {"database": False, "broker": True}}
    assert [r.getMessage() for r in caplog.records if r.name == "config.health"] == [
        "healthz database check failed"
    ]


@pytest.mark.django_db
def test_a_postgresql_taking_no_writes_fails_both_probes_before_any_write_is_refused(
    client, broker, settings, fresh
):
    """`default_transaction_read_only` (or a standby a failover left us on, `pg_is_in_recovery()`):
    the probe's one query asks the server, so every process says so from the first probe on,
    whichever answers, without remembering a refused write (none was). Before, `SELECT 1` passed
    and /healthz answered 200 in every process that had not answered a write 503 itself."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL server's read-only mode")
    settings.HEALTHZ_WRITES_REFUSED_S = 0.0  # nothing remembered counts
    with connection.cursor() as cursor:  # the test's transaction, which the client's requests share
        cursor.execute("SET TRANSACTION READ ONLY")

    for path in ("/healthz", "/readyz", "/healthz"):
        answer = client.get(path)
        assert answer.status_code == 503, path
        assert answer.json()["checks"] == {"database": False, "broker": True}
    assert client.get("/livez").status_code == 200


@pytest.mark.django_db
def test_a_write_this_process_saw_refused_fails_healthz_but_not_readyz(client, broker, settings, fresh):
    """A full disk on the database every instance shares is remembered by the process that
    answered the refused write: /healthz says so (alerting), /readyz does not take the instance
    out of rotation for it (its reads work, and so would another instance's writes not)."""
    settings.HEALTHZ_WRITES_REFUSED_S = 30.0
    database_errors.last_refusal.note("OperationalError: could not extend file: No space left on device")

    assert client.get("/healthz").json()["checks"] == {"database": False, "broker": True}
    assert client.get("/readyz").status_code == 200


@pytest.mark.django_db
def test_healthz_warns_of_a_clock_off_redis_s(client, broker, fresh, monkeypatch, caplog):
    """Dramatiq's heartbeats are each machine's own clock: one 20 s off has its running messages
    re-queued. /healthz compares this machine's clock with Redis's `TIME` and says so above 2 s,
    without failing (the machine serves)."""
    assert "warnings" not in client.get("/healthz").json()

    ahead = SimpleNamespace(time=lambda: time.time() + 7.0)
    monkeypatch.setattr(health, "time", ahead)
    with caplog.at_level(logging.WARNING, logger="config.health"):
        answer = client.get("/healthz")

    assert answer.status_code == 200
    warnings = answer.json()["warnings"]
    assert 6.5 < warnings["clock_skew_s"] < 7.5, warnings
    assert "run NTP" in warnings["clock"]
    [line] = [r for r in caplog.records if r.getMessage() == "healthz clock skew"]
    assert 6.5 < line.skew_s < 7.5
