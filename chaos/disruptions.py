"""What the run does to the system while it works: SIGKILLs of workers at intervals (each
restarted shortly after), one Redis restart, one drop of every database connection, and fault
phases at the partners (asynchronous confirmation switched on and off).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from chaos import database
from chaos.config import ChaosConfig, RunIdentity
from chaos.sandboxes import SandboxPartner
from chaos.stack import Stack

logger = logging.getLogger(__name__)

REDIS_AT = 0.35  # share of the load sent before Redis goes
DB_DROP_AT = 0.65
TICK_S = 0.2
# A partner whose control endpoint does not answer a phase switch for longer than its own outage
# window plus this is a harness error; within it, the switch is skipped (the partner is down).
PHASE_UNREACHABLE_GRACE_S = 15.0


@dataclass(frozen=True)
class Disruption:
    at_s: float  # seconds since the load started
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"at_s": round(self.at_s, 2), "kind": self.kind, **self.detail}


class Disruptor(threading.Thread):
    def __init__(
        self,
        *,
        config: ChaosConfig,
        identity: RunIdentity,
        stack: Stack,
        sandboxes: list[SandboxPartner],
        load_progress: Callable[[], float],
        load_done: threading.Event,
    ) -> None:
        super().__init__(name="chaos-disruptor", daemon=True)
        self.config = config
        self.identity = identity
        self.stack = stack
        self.sandboxes = sandboxes
        self.load_progress = load_progress
        self.load_done = load_done
        self.events: list[Disruption] = []
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._rng = random.Random(config.seed + 1)
        self._t0 = time.monotonic()
        self._next_kill = self._t0 + self._kill_gap()
        self._restarts: dict[int, float] = {}  # worker index -> when to restart it
        self._redis_pending = config.redis_restart
        self._db_pending = config.db_drop
        self._next_phase = self._t0 + config.phase_interval_s
        self._async_on = {s.code: s.plan.async_delay is not None for s in sandboxes}
        self._unreachable_since: dict[str, float] = {}  # partner code -> first failed switch
        self._lock = threading.Lock()

    # --- public ----------------------------------------------------------------------------
    def halt(self) -> None:
        """Stop disrupting; every killed worker is restarted before this returns."""
        self._halt.set()
        self.join(timeout=60)

    def counts(self) -> dict[str, int]:
        with self._lock:
            kinds = [e.kind for e in self.events]
        return {
            kind: kinds.count(kind)
            for kind in ("worker_kill", "redis_restart", "db_drop", "fault_phase", "fault_phase_skipped")
        }

    @property
    def pending_one_offs(self) -> bool:
        return self._redis_pending or self._db_pending

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self._tick()
                self._halt.wait(TICK_S)
            self._finish_one_offs()
            for index in list(self._restarts):
                self._restart(index)
        finally:
            connection.close()

    def _tick(self) -> None:
        now = time.monotonic()
        for index, due in list(self._restarts.items()):
            if now >= due:
                self._restart(index)
        if self.config.kill_workers and now >= self._next_kill:
            self._kill_one()
            self._next_kill = now + self._kill_gap()
        progress = 1.0 if self.load_done.is_set() else self.load_progress()
        if self._redis_pending and progress >= REDIS_AT:
            self._restart_redis()
        elif self._db_pending and progress >= DB_DROP_AT and not self._redis_pending:
            self._drop_db_connections()
        if self.config.phase_interval_s and now >= self._next_phase:
            self._flip_phase()
            self._next_phase = now + self.config.phase_interval_s

    def _finish_one_offs(self) -> None:
        """A load too short to reach the marks still gets its Redis restart and connection drop."""
        if self._redis_pending:
            self._restart_redis()
        if self._db_pending:
            self._drop_db_connections()

    def _record(self, kind: str, **detail: Any) -> None:
        with self._lock:
            self.events.append(Disruption(at_s=time.monotonic() - self._t0, kind=kind, detail=detail))

    def _kill_gap(self) -> float:
        return self.config.kill_interval_s * self._rng.uniform(0.7, 1.3)

    # --- the disruptions -------------------------------------------------------------------
    def _kill_one(self) -> None:
        candidates = [i for i in self.stack.alive_workers() if i not in self._restarts]
        if not candidates:
            return
        index = self._rng.choice(candidates)
        pid = self.stack.kill_worker(index)
        self._restarts[index] = time.monotonic() + self.config.restart_delay_s
        self._record("worker_kill", worker=index + 1, pid=pid, signal="SIGKILL")

    def _restart(self, index: int) -> None:
        pid = self.stack.restart_worker(index)
        self._restarts.pop(index, None)
        self._record("worker_restart", worker=index + 1, pid=pid)

    def _restart_redis(self) -> None:
        self._redis_pending = False
        try:
            outcome = self.stack.redis.restart(pgids=self.stack.pgids(), namespace=self.identity.namespace)
        except Exception as exc:  # noqa: BLE001 - a failed disruption is reported, not fatal
            self.errors.append(f"redis restart failed: {exc!r}")
            return
        self._record("redis_restart", **outcome.as_dict())

    def _drop_db_connections(self) -> None:
        self._db_pending = False
        if database.vendor() != "postgresql":
            self._record("db_drop", terminated=0, detail="not possible on SQLite: skipped")
            return
        try:
            terminated = database.drop_connections(app_name_pattern=self.identity.app_name_pattern)
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"database connection drop failed: {exc!r}")
            return
        self._record(
            "db_drop",
            terminated=terminated,
            detail="pg_terminate_backend of every connection of this run's processes",
        )

    def _flip_phase(self) -> None:
        for sandbox in self.sandboxes:
            delay = sandbox.plan.async_delay
            if delay is None:
                continue
            turn_on = not self._async_on[sandbox.code]
            try:
                sandbox.set_faults({"async_confirm_delay_s": delay if turn_on else None})
            except Exception as exc:  # noqa: BLE001
                self._phase_failed(sandbox, exc)
                continue
            self._unreachable_since.pop(sandbox.code, None)
            self._async_on[sandbox.code] = turn_on
            self._record("fault_phase", partner=sandbox.code, async_confirm=turn_on)

    def _phase_failed(self, sandbox: SandboxPartner, exc: Exception) -> None:
        """A switch the partner could not be told: during its own outage window (its port, control
        endpoint included, is closed) the phase is skipped and tried again at the next one; a
        partner unreachable for longer than its outage is a harness error."""
        now = time.monotonic()
        since = self._unreachable_since.setdefault(sandbox.code, now)
        if now - since <= sandbox.plan.outage_s + PHASE_UNREACHABLE_GRACE_S:
            self._record("fault_phase_skipped", partner=sandbox.code, error=f"{exc!r}"[:200])
            return
        self.errors.append(
            f"fault phase at {sandbox.code} failed: unreachable for {now - since:.0f}s, longer than its "
            f"outage window ({sandbox.plan.outage_s:g}s): {exc!r}"
        )
