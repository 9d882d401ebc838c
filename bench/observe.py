"""What else the machine and the database are doing during a benchmark: whether the machine is
quiet before it starts, how much CPU other processes take meanwhile, what the database's
backends wait for (a `pg_stat_activity` sampler), and what waking an idle process costs here."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from bench.stats import median


def libpq_url(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


QUIET_CPU_PERCENT = float(os.environ.get("BENCH_QUIET_CPU_PERCENT", "25"))
QUIET_MAX_WAIT_S = float(os.environ.get("BENCH_QUIET_MAX_WAIT_S", "900"))


def wait_until_quiet() -> dict[str, Any]:
    """Wait (bounded) until the machine's CPU is mostly idle over 3 s: figures taken while other
    work runs on a 2-core machine say little. Returns what was seen."""
    import psutil

    start = time.monotonic()
    busy = psutil.cpu_percent(interval=3)
    while busy > QUIET_CPU_PERCENT and time.monotonic() - start < QUIET_MAX_WAIT_S:
        busy = psutil.cpu_percent(interval=3)
    return {
        "cpu_percent_at_start": busy,
        "waited_s": round(time.monotonic() - start, 1),
        "quiet_at_start": busy <= QUIET_CPU_PERCENT,
        "load_average_at_start": load_average(),
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: runnable processes, of which 2 run at once on 2 CPUs."""
    return [round(value, 2) for value in os.getloadavg()]


# A child that answers each byte on stdin with one on stdout, unbuffered.
_ECHO = "import os\nwhile os.read(0, 1):\n    os.write(1, b'.')"


def wake_after_idle_us(idle_s: tuple[float, ...] = (0.0, 0.01, 0.1), samples: int = 30) -> dict[str, float]:
    """Median round trip (µs) of one byte to another process and back, after each idle time.

    On a bare machine it barely depends on the idle time. On some virtual machines a process
    woken after sleeping ~100 ms costs a millisecond or more (seen under nested virtualization,
    CPUs kept busy or not), and a paced load, whose processes sleep between requests, then pays
    it several times per request: its latency depends on how often other work keeps our
    processes awake, not only on what the request does."""
    child = subprocess.Popen([sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    send, receive = child.stdin.fileno(), child.stdout.fileno()

    def round_trip_us() -> float:
        start = time.perf_counter()
        os.write(send, b".")
        os.read(receive, 1)
        return (time.perf_counter() - start) * 1e6

    try:
        for _ in range(10):
            round_trip_us()
        result = {}
        for idle in idle_s:
            trips = []
            for _ in range(samples):
                time.sleep(idle)
                trips.append(round_trip_us())
            result[f"after_{round(idle * 1000)}ms"] = round(median(trips), 1)
        return result
    finally:
        child.stdin.close()
        child.wait(timeout=5)


def machine_busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (every process, the kernel's work
    for them included; idle, I/O wait and time a hypervisor stole are not). The difference over a
    run is what the run cost the machine, whoever spent it."""
    import psutil

    times = psutil.cpu_times()
    return sum(getattr(times, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq"))


class ForeignLoad:
    """CPU seconds used during a benchmark by processes that are not ours: neither this process
    and its descendants nor PostgreSQL backends of the bench database (matched by name)."""

    def __init__(self, db_name: str) -> None:
        self.db_name = db_name
        self.before = self._snapshot()
        self.started = time.monotonic()

    def _ours(self, proc: Any) -> bool:
        import psutil

        try:
            if self.db_name in " ".join(proc.cmdline()):
                return True
            return any(parent.pid == os.getpid() for parent in proc.parents()) or proc.pid == os.getpid()
        except psutil.Error:
            return True

    def _snapshot(self) -> dict[tuple[int, float], tuple[float, str]]:
        import psutil

        seen = {}
        for proc in psutil.process_iter(["pid", "create_time", "cpu_times", "name"]):
            info = proc.info
            if info["cpu_times"] is None:
                continue
            seen[(info["pid"], info["create_time"])] = (
                info["cpu_times"].user + info["cpu_times"].system,
                info["name"] or "",
            )
        return seen

    def summary(self) -> dict[str, Any]:
        import psutil

        after = self._snapshot()
        foreign: dict[str, float] = {}
        shared = 0.0
        for key, (cpu, name) in after.items():
            delta = cpu - self.before.get(key, (0.0, ""))[0]
            if delta < 0.05:
                continue
            try:
                proc = psutil.Process(key[0])
                if self._ours(proc):
                    continue
                label = " ".join(proc.cmdline())[:80] or name
            except psutil.Error:
                label = name
            if _shared_server(label):
                shared += delta
                continue
            foreign[label] = foreign.get(label, 0.0) + delta
        top = sorted(foreign.items(), key=lambda item: -item[1])[:5]
        return {
            "wall_s": round(time.monotonic() - self.started, 1),
            "foreign_cpu_s": round(sum(foreign.values()), 1),
            "foreign_top": [{"process": label, "cpu_s": round(cpu, 1)} for label, cpu in top],
            # Redis and PostgreSQL's own background processes serve us and others alike.
            "shared_servers_cpu_s": round(shared, 1),
        }


def _shared_server(label: str) -> bool:
    if label.startswith("redis-server"):
        return True
    # PostgreSQL's background processes ("postgres: 15/main: walwriter"), not client backends
    # ("postgres: 15/main: postgres dbname 127.0.0.1(1234) idle").
    client = "127.0.0.1(" in label or "[local]" in label
    return label.startswith(("postgres: ", "/usr/lib/postgresql")) and not client


class ActivitySampler:
    """Samples `pg_stat_activity` of the bench database in a thread: what its busy backends wait
    for (a wait-event profile, PostgreSQL's view of where time goes), and for lock waits, on
    which statement (the first 60 characters) and blocked by which statement."""

    # pg_blocking_pids() takes every lock manager partition lock: called for each busy backend
    # 20 times a second it would itself stall the backends it watches. So only lock waiters get
    # it, in a second query.
    QUERY = """
        SELECT pid, coalesce(wait_event_type, 'CPU'), coalesce(wait_event, 'running'),
               left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
        FROM pg_stat_activity
        WHERE datname = %s AND state <> 'idle' AND pid <> pg_backend_pid()
    """
    BLOCKERS = """
        SELECT w.pid, left(regexp_replace(coalesce(b.query, ''), '\\s+', ' ', 'g'), 60)
        FROM unnest(%s::int[]) AS w(pid)
        LEFT JOIN pg_stat_activity b ON b.pid = (pg_blocking_pids(w.pid))[1]
    """

    def __init__(self, database_url: str, db_name: str, interval_s: float = 0.05) -> None:
        import threading

        self.database_url = database_url
        self.db_name = db_name
        self.interval_s = interval_s
        self.samples = 0
        self.busy = 0
        self.events: dict[str, int] = {}
        self.waits: dict[tuple[str, str, str], int] = {}
        self._stop = threading.Event()
        self._active = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-activity", daemon=True)

    def start(self) -> ActivitySampler:
        """Sample (again) from now on; samples add up over start/pause spans."""
        self._active.set()
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def pause(self) -> None:
        self._active.clear()

    def close(self) -> None:
        self._stop.set()
        self._active.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def __enter__(self) -> ActivitySampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(libpq_url(self.database_url), autocommit=True) as conn:
            while not self._stop.is_set():
                if not self._active.wait(0.2) or self._stop.is_set():
                    continue
                rows = conn.execute(self.QUERY, (self.db_name,)).fetchall()
                waiting = {pid: (event, query) for pid, kind, event, query in rows if kind == "Lock"}
                blockers = dict(conn.execute(self.BLOCKERS, (list(waiting),)).fetchall()) if waiting else {}
                for _pid, kind, event, _query in rows:
                    self.busy += 1
                    self.events[f"{kind}:{event}"] = self.events.get(f"{kind}:{event}", 0) + 1
                for pid, (event, query) in waiting.items():
                    key = (query, blockers.get(pid, ""), event)
                    self.waits[key] = self.waits.get(key, 0) + 1
                self.samples += 1
                self._stop.wait(self.interval_s)

    def summary(self, top: int = 5) -> dict[str, Any]:
        samples = max(self.samples, 1)
        ranked = sorted(self.waits.items(), key=lambda item: -item[1])[:top]
        events = sorted(self.events.items(), key=lambda item: -item[1])[:8]
        return {
            "samples": self.samples,
            "interval_ms": int(self.interval_s * 1000),
            "busy_backends_per_sample": round(self.busy / samples, 2),
            "backends_waiting_on_locks_per_sample": round(sum(self.waits.values()) / samples, 2),
            "wait_events_per_sample": {name: round(count / samples, 2) for name, count in events},
            "top_waits": [
                {"waiting": w, "blocked_by": b, "lock": e, "samples": n} for (w, b, e), n in ranked
            ],
        }
