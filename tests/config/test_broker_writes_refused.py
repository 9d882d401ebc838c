"""A broker that answers but refuses writes is down to `/healthz`, as a database that does.

Before, the probe only PINGed Redis: at `maxmemory` with `noeviction`, or as a read-only replica
(a failover left the service on one), Redis answers PING and refuses every write, so every booking
answered 202 with its submission unqueued, the sweeper and the rate limit could write nothing
either, and `/healthz` said `"broker": true`. Now the probe writes one expiring key.

Each test starts a real redis-server of its own in that state and points this process's broker
at it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import dramatiq
import pytest
import redis

from config.embedded_redis import EmbeddedRedis
from config.health import HEALTHZ_KEY_TTL_MS, broker_probe_key
from tests.own_servers import own_redis
from tests.sandbox_process import free_port

UNAVAILABLE = {"status": "unavailable", "checks": {"database": True, "broker": False}}


@pytest.fixture
def own_broker(tmp_path: Path, monkeypatch) -> Iterator[Callable[..., redis.Redis]]:
    """Starts a redis-server of the test's own with redis-server's options, as this process's
    broker; its client."""
    servers: list[EmbeddedRedis] = []

    def start(*options: str) -> redis.Redis:
        servers.append(own_redis(tmp_path / "redis-var", *options))
        client = redis.Redis(unix_socket_path=str(servers[-1].socket), socket_timeout=2)
        monkeypatch.setattr(dramatiq.get_broker(), "client", client)
        return client

    yield start
    for server in servers:
        server.stop()


def _fill(client: redis.Redis) -> None:
    """Write until Redis refuses for want of memory, then hold it 256 KiB beyond its limit: at the
    limit, the buffers Redis frees on idle connections would make room for a tiny write now and
    then (a full Redis does take some; one beyond it, as when its data outgrew it, takes none)."""
    chunk = b"x" * (64 * 1024)
    for n in range(10_000):
        try:
            client.set(f"filler:{n}", chunk)
        except redis.exceptions.OutOfMemoryError:
            break
    else:
        raise AssertionError("Redis never reached its maxmemory")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 256 * 1024)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("tiny", b"1")


def _assert_down(client, broker: redis.Redis, caplog, refusal: str) -> None:
    assert broker.ping()  # it answers: only a write tells
    with caplog.at_level(logging.WARNING, logger="config.health"):
        response = client.get("/healthz")
    assert response.status_code == 503 and response["Retry-After"]
    assert response.json() == UNAVAILABLE
    [line] = [r for r in caplog.records if r.getMessage() == "healthz broker check failed"]
    assert refusal in line.error


@pytest.mark.django_db
def test_the_probe_writes_one_expiring_key_of_the_broker_namespace(client, own_broker):
    broker = own_broker()
    assert client.get("/healthz").status_code == 200
    key = broker_probe_key()
    assert key.startswith(f"{dramatiq.get_broker().namespace}:")
    assert 0 < broker.pttl(key) <= HEALTHZ_KEY_TTL_MS
    assert client.get("/healthz").status_code == 200  # every process overwrites the one key
    assert broker.dbsize() == 1


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_full(client, own_broker, caplog):
    broker = own_broker("--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
    _fill(broker)
    _assert_down(client, broker, caplog, "OutOfMemoryError")


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_a_read_only_replica(client, own_broker, caplog):
    # Of a master that answers nowhere: it serves its (empty) data and refuses every write.
    broker = own_broker("--replicaof", "127.0.0.1", str(free_port()))
    assert broker.info("replication")["role"] == "slave"
    _assert_down(client, broker, caplog, "ReadOnlyError")
