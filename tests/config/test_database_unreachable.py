"""A PostgreSQL that stops answering (rather than refuses) is a 503 within seconds, not a hang.

A stopped server refuses connections, which answers at once (tests/config/test_outages.py). A
server that does not answer at all is what a dead host, a dropped route or a failover's
black hole look like, and there libpq waits on the network for ever (psycopg caps connecting at
130 s): every request thread of the web process, /healthz included, stayed stuck on the
database. The settings give every connection a connect timeout, a TCP user timeout and
keepalives (DB_CONNECT_TIMEOUT_S, DB_TCP_USER_TIMEOUT_MS, DB_KEEPALIVES_*), set short here.

Each test runs gunicorn as the Procfile does against a PostgreSQL of its own and breaks it the
way production does:

- a server that accepts connections and never answers them: its postmaster frozen (SIGSTOP),
  so the kernel completes the handshake and takes the startup message, and nothing replies;
- packets dropped on established connections and new ones: the server on a network namespace
  of the test's own whose cable is cut (tests/own_servers.IsolatedHost; needs root).

A frozen server whose kernel still answers, met on a connection already open, is the case
these settings cannot cover (docs/design.md, "Traps of the stack").
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from chaos.cluster.kernel import KernelCommandFailed
from config.embedded_redis import EmbeddedRedis
from reconciliation.management.commands.create_demo_data import DEMO_TOKEN
from tests.config.test_outages import IS_POSTGRES, _assert_unavailable
from tests.helpers import wait_until
from tests.own_servers import IsolatedHost, OwnPostgres, ProjectProcesses, own_redis

pytestmark = pytest.mark.skipif(
    not IS_POSTGRES, reason="PostgreSQL's timeouts are proven in the PostgreSQL run"
)

# The network timeouts, short for a test; the defaults are a few times longer (.env.example).
SHORT_TIMEOUTS = {
    "DB_CONNECT_TIMEOUT_S": "2",
    "DB_TCP_USER_TIMEOUT_MS": "3000",
    "DB_KEEPALIVES_IDLE_S": "2",
    "DB_KEEPALIVES_INTERVAL_S": "1",
    "DB_KEEPALIVES_COUNT": "2",
}
# A request fails after at most a user timeout and a connect timeout (5 s here); the bound is
# generous against a loaded machine. Without the timeouts it waits for minutes.
BOUND_S = 30.0


def test_the_database_connection_carries_the_network_timeouts(db):
    """The options reach libpq: the connection's socket has them set."""
    connection.ensure_connection()
    options = settings.DATABASES["default"]["OPTIONS"]
    with socket.socket(fileno=os.dup(connection.connection.pgconn.socket)) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == options["keepalives_idle"]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == options["keepalives_interval"]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == options["keepalives_count"]
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == options["tcp_user_timeout"]
    assert connection.connection.info.get_parameters()["connect_timeout"] == str(options["connect_timeout"])


@pytest.fixture
def redis_of_our_own(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = own_redis(tmp_path / "redis-var")
    yield server
    server.stop()


@pytest.fixture
def stack_against(tmp_path: Path, redis_of_our_own) -> Iterator[Callable[..., tuple[ProjectProcesses, str]]]:
    """`stack_against(postgres, **env)`: the database migrated with the demo data, and gunicorn
    against it with the short timeouts; its base URL once it answers."""
    made: list[ProjectProcesses] = []

    def make(postgres: OwnPostgres, **env: str) -> tuple[ProjectProcesses, str]:
        stack = ProjectProcesses(
            tmp_path,
            {"DATABASE_URL": postgres.url, "REDIS_URL": redis_of_our_own.url, **SHORT_TIMEOUTS, **env},
        )
        made.append(stack)
        for step in (["migrate", "--noinput", "-v0"], ["create_demo_data", "--allow-production"]):
            name = f"setup-{step[0]}"
            assert stack.manage(name, *step).wait(timeout=120) == 0, stack.log(name)
        return stack, stack.web()

    yield make
    for stack in made:
        stack.stop_all()


def _api() -> requests.Session:
    api = requests.Session()
    api.headers["Authorization"] = f"Token {DEMO_TOKEN}"
    return api


def _answer(get: Callable[..., requests.Response], url: str) -> requests.Response:
    """The answer to a GET, which must come within the bound."""
    started = time.monotonic()
    try:
        return get(url, timeout=BOUND_S)
    except requests.Timeout:
        pytest.fail(
            f"{url}: no answer in {time.monotonic() - started:.0f} s, the request hangs on the database"
        )


def _assert_503_everywhere(api: requests.Session, base: str) -> None:
    """The API in the one error shape, /healthz naming the database, a page saying to come back."""
    _assert_unavailable(_answer(api.get, f"{base}/api/v1/offers"))
    health = _answer(requests.get, f"{base}/healthz")
    assert (health.status_code, health.json()["checks"]) == (503, {"database": False, "broker": True})
    assert health.headers["Retry-After"] == str(settings.UNAVAILABLE_RETRY_AFTER_S)
    page = _answer(requests.get, f"{base}/")
    assert page.status_code == 503 and "try again" in page.text
    assert page.headers["Retry-After"] == str(settings.UNAVAILABLE_RETRY_AFTER_S)


def _assert_recovers(api: requests.Session, base: str) -> None:
    wait_until(lambda: _status(f"{base}/healthz") == 200, what="healthz to recover", timeout_s=BOUND_S)
    assert _answer(api.get, f"{base}/api/v1/offers").status_code == 200
    assert _answer(requests.get, f"{base}/").status_code == 200


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=BOUND_S).status_code
    except requests.RequestException:
        return None


# --- A server that accepts and never answers ---------------------------------------------------
@pytest.fixture
def postgres_of_our_own() -> Iterator[OwnPostgres]:
    server = OwnPostgres().init()
    yield server
    os.kill(server.postmaster_pid, signal.SIGCONT)  # a stopped server cannot be stopped
    server.destroy()


def test_a_server_that_accepts_connections_and_never_answers_is_a_503_within_seconds(
    postgres_of_our_own, stack_against
):
    # Every request connects afresh: an open connection to a server that was frozen with it is
    # the case no network timeout covers (the module's docstring).
    stack, base = stack_against(postgres_of_our_own, DB_CONN_MAX_AGE="0")
    api = _api()
    assert _answer(api.get, f"{base}/api/v1/offers").status_code == 200

    os.kill(postgres_of_our_own.postmaster_pid, signal.SIGSTOP)
    try:
        _assert_503_everywhere(api, base)
    finally:
        os.kill(postgres_of_our_own.postmaster_pid, signal.SIGCONT)

    _assert_recovers(api, base)
    assert stack.started["web"].poll() is None  # the same gunicorn throughout


# --- Packets dropped: a dead host, a black-holed route -----------------------------------------
@pytest.fixture
def isolated_host() -> Iterator[IsolatedHost]:
    if reason := IsolatedHost.unavailable():
        pytest.skip(reason)
    host = IsolatedHost()
    try:
        host.create()
    except KernelCommandFailed as exc:
        pytest.skip(f"no network namespace on this machine: {exc}")
    yield host
    host.destroy()


@pytest.fixture
def postgres_behind_a_cable(isolated_host: IsolatedHost) -> Iterator[OwnPostgres]:
    server = OwnPostgres(host=isolated_host).init()
    yield server
    isolated_host.mend()
    server.destroy()


def test_a_server_whose_packets_are_dropped_is_a_503_within_seconds_on_open_and_new_connections(
    isolated_host, postgres_behind_a_cable, stack_against
):
    stack, base = stack_against(postgres_behind_a_cable)  # connections kept (DB_CONN_MAX_AGE 60)
    api = _api()
    for _ in range(8):  # each of gunicorn's threads opens its connection and keeps it
        assert _answer(api.get, f"{base}/api/v1/offers").status_code == 200

    isolated_host.cut()
    try:
        # An open connection's query goes unacknowledged (the user timeout fails it), the
        # health check's new connection gets no answer to its SYN (the connect timeout).
        _assert_503_everywhere(api, base)
        _assert_503_everywhere(api, base)
    finally:
        isolated_host.mend()

    _assert_recovers(api, base)
    assert stack.started["web"].poll() is None
