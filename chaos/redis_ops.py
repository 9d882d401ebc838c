"""Redis for a run, and "restarting" it once.

Embedded (no REDIS_URL): the run starts its own redis-server on a socket in its directory and
restarts it for real (stop, then start on the same socket; no persistence, so every queued
message, lock and counter is gone).

External (REDIS_URL): the machine's Redis is shared and is never restarted. The restart is
simulated for this run only: the connections of this run's processes are killed
(`CLIENT KILL ID`, found through /proc) and every key under the run's namespaces is deleted,
which is what a restart without persistence does to the run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from chaos.procs import group_pids
from config import embedded_redis

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True)
class RestartOutcome:
    mode: str
    detail: str
    clients_killed: int = 0
    keys_deleted: int = 0
    down_s: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "detail": self.detail,
            "clients_killed": self.clients_killed,
            "keys_deleted": self.keys_deleted,
            "down_s": round(self.down_s, 3),
        }


class EmbeddedRedisHandle:
    mode = "embedded"

    def __init__(self, run_dir: Path) -> None:
        self.server = embedded_redis.EmbeddedRedis(run_dir)

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def forget(self, namespace: str) -> int:
        return 0  # the server is the run's own and is gone

    def restart(self, *, pgids: set[int], namespace: str, down_s: float = 1.0) -> RestartOutcome:
        started = time.monotonic()
        self.server.stop()
        time.sleep(down_s)
        self.server.start()
        return RestartOutcome(
            mode=self.mode,
            detail=f"redis-server on {self.server.socket} stopped and started again (no persistence)",
            down_s=time.monotonic() - started,
        )


class ExternalRedisHandle:
    mode = "external"

    def __init__(self, url: str) -> None:
        self.url = url

    def start(self) -> None:
        redis.Redis.from_url(self.url, socket_timeout=5).ping()

    def stop(self) -> None:
        pass  # not ours

    def forget(self, namespace: str) -> int:
        """Delete what the run left in the shared Redis (queues, locks, counters)."""
        return _delete_namespace(redis.Redis.from_url(self.url, socket_timeout=10), namespace)

    def restart(self, *, pgids: set[int], namespace: str, down_s: float = 0.0) -> RestartOutcome:
        client = redis.Redis.from_url(self.url, socket_timeout=10)
        started = time.monotonic()
        ports = _our_redis_client_ports(pgids, redis_port=urlsplit(self.url).port or 6379)
        killed = 0
        for entry in client.client_list():
            host, _, port = str(entry.get("addr", "")).rpartition(":")
            if host.strip("[]") in LOOPBACK and port.isdigit() and int(port) in ports:
                killed += int(client.client_kill_filter(_id=entry["id"]) or 0)
        deleted = _delete_namespace(client, namespace)
        return RestartOutcome(
            mode=self.mode,
            detail=(
                "shared Redis not restarted: killed this run's client connections (CLIENT KILL ID) "
                f"and deleted every key under {namespace}*"
            ),
            clients_killed=killed,
            keys_deleted=deleted,
            down_s=time.monotonic() - started,
        )


def _delete_namespace(client: redis.Redis, namespace: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{namespace}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def _our_redis_client_ports(pgids: set[int], *, redis_port: int) -> set[int]:
    """Local TCP ports of our processes' connections to Redis (Linux /proc)."""
    inodes: set[str] = set()
    for pid in group_pids(pgids):
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            links = [os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)]
        except OSError:
            continue
        inodes.update(link[8:-1] for link in links if link.startswith("socket:["))
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[9] not in inodes:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == redis_port:
                ports.add(local_port)
    return ports


def redis_handle(configured_url: str, run_dir: Path) -> EmbeddedRedisHandle | ExternalRedisHandle:
    return ExternalRedisHandle(configured_url) if configured_url else EmbeddedRedisHandle(run_dir)
