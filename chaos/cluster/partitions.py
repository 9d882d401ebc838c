"""The faults that only exist between machines, run on schedule during the load, and what the
broker showed meanwhile.

Every half second the partitioner also samples the cluster's Redis: each Dramatiq worker's last
heartbeat and the messages it holds unacknowledged (`<ns>:__acks__.<worker id>.<queue>`), and
the sweeper lock's remaining time. Just before a worker host is cut off it watches the broker
for a second (MONITOR) to learn which worker ids live on that host, so that the messages the
host holds, their redelivery and the host's return can be read from the samples afterwards
(`evidence`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from chaos.cluster.network import Network
from chaos.cluster.plan import ClusterPlan, NetworkFault
from chaos.cluster.services import BrokerServer
from chaos.disruptions import Disruption
from reconciliation.sweeper_lock import sweeper_lock_key

logger = logging.getLogger(__name__)

TICK_S = 0.5
MAP_AHEAD_S = 3.0  # learn the worker ids of a host this long before it is cut off
MONITOR_S = 1.0


@dataclass(frozen=True)
class Sample:
    at_s: float  # since the load started
    heartbeats: dict[str, float]  # worker id -> its last heartbeat, in seconds since the load started
    acks: dict[str, int]  # worker id -> messages it holds unacknowledged
    lock_ttl_ms: int  # the sweeper lock's remaining time; -2: nobody holds it


@dataclass
class FaultRecord:
    fault: NetworkFault
    began_s: float | None = None
    ended_s: float | None = None
    worker_ids: list[str] = field(default_factory=list)  # worker_cut: the cut host's workers
    held: list[tuple[str, str]] = field(default_factory=list)  # worker_cut: (actor, first argument)
    at_begin: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault.kind,
            "hosts": list(self.fault.hosts),
            "planned_start_s": self.fault.start_s,
            "duration_s": self.fault.duration_s,
            "began_s": _round(self.began_s),
            "ended_s": _round(self.ended_s),
            "worker_ids": self.worker_ids,
            "held_by_actor": _count(actor for actor, _ in self.held),
            **self.at_begin,
        }


class Partitioner(threading.Thread):
    def __init__(
        self, *, faults: list[NetworkFault], network: Network, broker: BrokerServer, namespace: str
    ) -> None:
        super().__init__(name="chaos-partitioner", daemon=True)
        self.network = network
        self.plan: ClusterPlan = network.plan
        self.broker = broker
        self.namespace = namespace
        self.records = [FaultRecord(fault) for fault in faults]
        self.samples: list[Sample] = []
        self.events: list[Disruption] = []
        self.errors: list[str] = []
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self._halt = threading.Event()
        self._schedule_done = threading.Event()
        self._lock = threading.Lock()
        self._client = broker.client(timeout_s=TICK_S)

    # --- the interface of chaos.runner.DisruptionSource ------------------------------------
    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"network_fault": sum(1 for e in self.events if e.kind == "network_fault")}

    def halt(self) -> None:
        """Let the schedule run to its end (its faults are timed), then stop sampling."""
        remaining = max((r.fault.end_s for r in self.records), default=0.0) - self._elapsed()
        self._schedule_done.wait(timeout=max(0.0, remaining) + 30)
        self._halt.set()
        self.join(timeout=30)
        never = [r.fault.label for r in self.records if r.began_s is None]
        if never:
            state = "still running" if self.is_alive() else "ended"
            self.errors.append(f"faults that never began: {', '.join(never)} (the schedule's thread {state})")

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._halt.is_set():
                try:
                    self._tick()
                except Exception as exc:  # noqa: BLE001 - the schedule goes on; the report says why
                    self.errors.append(f"the fault schedule stumbled: {exc!r}")
                self._halt.wait(TICK_S)
        finally:
            for record in self.records:
                if record.began_s is not None and record.ended_s is None:
                    self._end(record)
            self._schedule_done.set()

    def _tick(self) -> None:
        now = self._elapsed()
        for record in self.records:
            fault = record.fault
            if record.began_s is None:
                soon = now >= fault.start_s - MAP_AHEAD_S
                if fault.kind == "worker_cut" and soon and not record.worker_ids:
                    record.worker_ids = self._worker_ids_within_bound(fault.hosts[0]) or ["unknown"]
                if now >= fault.start_s:
                    self._begin(record)
            elif record.ended_s is None and now >= record.began_s + fault.duration_s:
                self._end(record)
        if all(r.ended_s is not None for r in self.records):
            self._schedule_done.set()
        self._sample()

    def _begin(self, record: FaultRecord) -> None:
        fault = record.fault
        latest = self.samples[-1] if self.samples else None
        if latest is not None:
            record.at_begin = {"sweeper_lock_ttl_ms_at_begin": latest.lock_ttl_ms}
        if record.worker_ids:
            record.held = self._held_by(record.worker_ids)
        try:
            if fault.kind == "partners_partition":
                self.network.partition(*fault.hosts)
            else:
                self.network.cut(fault.hosts[0])
        except Exception as exc:  # noqa: BLE001 - a failed fault is reported, not fatal
            self.errors.append(f"{fault.label} could not begin: {exc!r}")
            record.began_s = record.ended_s = self._elapsed()
            return
        record.began_s = self._elapsed()
        self._record("network_fault", record)

    def _end(self, record: FaultRecord) -> None:
        fault = record.fault
        try:
            if fault.kind == "partners_partition":
                self.network.mend(*fault.hosts)
            else:
                self.network.reconnect(fault.hosts[0])
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"{fault.label} could not end: {exc!r}")
        record.ended_s = self._elapsed()
        self._record("network_heal", record)

    def _record(self, kind: str, record: FaultRecord) -> None:
        with self._lock:
            self.events.append(
                Disruption(
                    at_s=self._elapsed(),
                    kind=kind,
                    detail={"fault": record.fault.kind, "hosts": list(record.fault.hosts)},
                )
            )

    # --- watching the broker ---------------------------------------------------------------
    def _sample(self) -> None:
        """One look at the workers' heartbeats and held messages; nothing when Redis is unreachable."""
        try:
            heartbeats = self._client.zrange(f"{self.namespace}:__heartbeats__", 0, -1, withscores=True)
            acks: dict[str, int] = {}
            prefix = f"{self.namespace}:__acks__."
            for key in self._client.scan_iter(match=f"{prefix}*", count=500):
                worker_id = key.decode()[len(prefix) :].split(".", 1)[0]
                acks[worker_id] = acks.get(worker_id, 0) + int(self._client.scard(key))
            lock_ttl = int(self._client.pttl(sweeper_lock_key(self.namespace)))
        except (redis.RedisError, OSError):
            return
        self.samples.append(
            Sample(
                at_s=self._elapsed(),
                heartbeats={m.decode(): score / 1000 - self.started_at for m, score in heartbeats},
                acks=acks,
                lock_ttl_ms=lock_ttl,
            )
        )

    def _held_by(self, worker_ids: list[str]) -> list[tuple[str, str]]:
        """(actor, first argument) of each message these workers hold unacknowledged."""
        held: list[tuple[str, str]] = []
        try:
            for worker_id in worker_ids:
                prefix = f"{self.namespace}:__acks__.{worker_id}."
                for key in self._client.scan_iter(match=f"{prefix}*", count=500):
                    queue = key.decode()[len(prefix) :]
                    ids = list(self._client.smembers(key))
                    bodies = self._client.hmget(f"{self.namespace}:{queue}.msgs", ids) if ids else []
                    for body in bodies:
                        message = json.loads(body) if body else {}
                        args = message.get("args") or [""]
                        held.append((str(message.get("actor_name", "?")), str(args[0])))
        except (redis.RedisError, OSError, ValueError) as exc:
            self.errors.append(f"could not read the messages held by {worker_ids}: {exc!r}")
        return held

    def _worker_ids_within_bound(self, host: str) -> list[str]:
        """`_worker_ids_on`, given up on after a bound: a watch that hangs must not hold the cut."""
        found: list[str] = []
        watch = threading.Thread(
            target=lambda: found.extend(self._worker_ids_on(host)), name="chaos-broker-watch", daemon=True
        )
        watch.start()
        watch.join(timeout=MONITOR_S + 2.0)
        if watch.is_alive():
            self.errors.append(f"watching the broker before cutting {host} off did not end in time")
            return []
        return found

    def _worker_ids_on(self, host: str) -> list[str]:
        """Dramatiq worker ids whose commands come from the host's address (watched for a second)."""
        address = self.plan.host(host).address
        found: set[str] = set()
        client = self.broker.client(timeout_s=0.3)
        deadline = time.monotonic() + MONITOR_S
        try:
            with client.monitor() as monitor:
                while time.monotonic() < deadline:
                    try:
                        command = monitor.next_command()
                    except (redis.TimeoutError, TimeoutError):
                        break  # a quiet broker (redis-py drops the connection after a timeout)
                    except (AttributeError, ValueError):  # a line redis-py cannot parse: not ours
                        continue
                    words = str(command.get("command", "")).split(" ")
                    # EVALSHA <sha> 1 <namespace> <command> <timestamp> <queue> <worker id> ...
                    ours = words[0].lower() == "evalsha" and len(words) > 7 and words[3] == self.namespace
                    if ours and command["client_address"] == address:
                        found.add(words[7])
        except (redis.RedisError, OSError) as exc:
            self.errors.append(f"could not watch the broker before cutting {host} off: {exc!r}")
        finally:
            with contextlib.suppress(redis.RedisError, OSError):
                client.close()
        return sorted(found)

    def _elapsed(self) -> float:
        return time.monotonic() - self._t0


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
