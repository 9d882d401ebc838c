"""The API rate limit: atomic under parallel clients of a real gunicorn, per customer and per
source address, 429 with Retry-After in the one error shape, and open when Redis is away."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from config import embedded_redis
from tests.factories import TokenFactory

OFFERS = "/api/v1/offers"
PARALLEL_CLIENTS = 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _database_url() -> str:
    """This test's own database, for a server process of its own."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def gunicorn(transactional_db, tmp_path) -> Iterator[Callable[..., str]]:
    """Start the web server as the Procfile does (several processes, several threads each) with
    the given settings in its environment and a rate-limit namespace of its own; its base URL."""
    started: list[subprocess.Popen] = []

    def start(**env: str) -> str:
        port = _free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--threads", "4", "--no-control-socket"],
            cwd=settings.BASE_DIR,
            env={
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "config.settings.test",
                "DATABASE_URL": _database_url(),
                "API_THROTTLE_NAMESPACE": f"throttle-{uuid.uuid4().hex}",
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"gunicorn-{port}.log").open("wb"),
        )  # fmt: skip
        started.append(process)
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    return f"http://127.0.0.1:{port}"
            except requests.RequestException:
                pass  # not listening yet, or still importing the app
            assert process.poll() is None, (tmp_path / f"gunicorn-{port}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "gunicorn did not answer within 30 s"
            time.sleep(0.1)

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def burst(base_url: str, tokens: list[str | None], *, each: int) -> list[requests.Response]:
    """PARALLEL_CLIENTS connections at once, `each` requests apiece; client i uses tokens[i % n]."""

    def client(index: int) -> list[requests.Response]:
        token = tokens[index % len(tokens)]
        with requests.Session() as session:
            if token:
                session.headers["Authorization"] = f"Token {token}"
            return [session.get(base_url + OFFERS, timeout=30) for _ in range(each)]

    with ThreadPoolExecutor(PARALLEL_CLIENTS) as pool:
        return [response for batch in pool.map(client, range(PARALLEL_CLIENTS)) for response in batch]


def assert_throttled(response: requests.Response, *, window_s: int) -> None:
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= window_s
    assert response.json()["error"]["code"] == "throttled"


def test_parallel_clients_of_one_customer_get_exactly_the_limit_through(gunicorn):
    base_url = gunicorn(API_THROTTLE_RATE="20/min", API_THROTTLE_ADDRESS_RATE="1000/min")
    token = TokenFactory().key

    responses = burst(base_url, [token], each=8)

    assert Counter(r.status_code for r in responses) == {200: 20, 429: 44}
    for response in responses:
        if response.status_code == 429:
            assert_throttled(response, window_s=60)


def test_one_address_gets_at_most_its_limit_through_whatever_the_customers(gunicorn):
    base_url = gunicorn(API_THROTTLE_RATE="1000/min", API_THROTTLE_ADDRESS_RATE="15/min")
    tokens = [TokenFactory().key for _ in range(4)]

    responses = burst(base_url, tokens, each=4)

    assert Counter(r.status_code for r in responses) == {200: 15, 429: 17}


def test_requests_without_a_valid_token_count_against_their_address(gunicorn):
    base_url = gunicorn(API_THROTTLE_RATE="1000/min", API_THROTTLE_ADDRESS_RATE="10/min")

    responses = burst(base_url, ["not-a-token", None], each=2)

    assert Counter(r.status_code for r in responses) == {401: 10, 429: 6}


# --- in process: the window, and Redis away --------------------------------------------------------
@pytest.fixture
def limited(settings, api_client) -> APIClient:
    settings.API_THROTTLE_RATE = "2/s"
    settings.API_THROTTLE_NAMESPACE = f"throttle-{uuid.uuid4().hex}"
    return api_client


def test_the_window_reopens_after_retry_after(limited):
    first = [limited.get(OFFERS).status_code for _ in range(2)]
    refused = limited.get(OFFERS)
    assert first == [200, 200]
    assert_throttled(refused, window_s=1)

    deadline = time.monotonic() + 3
    while (status := limited.get(OFFERS).status_code) == 429:
        assert time.monotonic() < deadline, "the window did not reopen within 3 s"
        time.sleep(0.05)

    assert status == 200


@pytest.fixture
def own_redis(tmp_path) -> Iterator[embedded_redis.EmbeddedRedis]:
    """A redis-server of this test's own, in a temp dir, that the test may stop."""
    server = embedded_redis.EmbeddedRedis(tmp_path).start()
    yield server
    server.stop()


def test_the_limit_fails_open_with_one_warning_when_its_redis_is_down(
    limited, settings, own_redis: embedded_redis.EmbeddedRedis, caplog
):
    settings.API_THROTTLE_RATE = "2/min"
    settings.API_THROTTLE_REDIS_URL = own_redis.url
    counted = [limited.get(OFFERS).status_code for _ in range(3)]
    assert counted == [200, 200, 429]  # counting on this Redis

    own_redis.stop()
    assert not Path(own_redis.socket).exists()
    with caplog.at_level(logging.WARNING, logger="config.throttling"):
        while_down = [limited.get(OFFERS).status_code for _ in range(3)]

    assert while_down == [200, 200, 200]
    warnings = [r.getMessage() for r in caplog.records if r.name == "config.throttling"]
    assert warnings == ["API rate limit not applied: Redis unavailable"]
