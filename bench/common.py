"""What every benchmark shares: the bench database and Redis, real processes, statistics and
machine information (output is in `bench.output`, observation of other load in `bench.observe`).

A benchmark runs in its own process (`python -m bench NAME`): `BenchEnv` creates a dedicated
PostgreSQL database, points Django (`config.settings.bench`) and every child process at it and
at a spare Redis database, migrates, and drops everything again at the end, whatever happens.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.observe import ForeignLoad, libpq_url, load_average, wait_until_quiet

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
IMG_DIR = ROOT / "docs" / "img"
PYTHON = sys.executable
GUNICORN = str(Path(PYTHON).with_name("gunicorn"))

# The PostgreSQL server (any database on it: the bench creates and drops its own) and the
# spare Redis database (flushed at the start and at the end of each benchmark).
# Every benchmark of `make bench`, in the order they run and their sections are written.
BENCHMARKS = (
    "api",
    "independence",
    "pipeline",
    "sweeper",
    "timeline",
    "streams",
    "pages",
    "webhook_flood",
    "payments",
)
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
SETTINGS_MODULE = "config.settings.bench"

# One benchmark at a time on a machine: they share that Redis database (and flush it), the
# partner queue names and the CPUs being measured.
LOCK_PATH = Path(tempfile.gettempdir()) / "bookings-bench.lock"

# Sandbox partner credentials used by the benchmarks (loopback only).
SANDBOX_API_KEY = "bench-sandbox-key"
SANDBOX_WEBHOOK_SECRET = "whsec_YmVuY2gtd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OWFi"


# --- machine ------------------------------------------------------------------------------
def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return math.nan


def _git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip()
    return ""


def machine_info() -> dict[str, Any]:
    """The machine and the servers the figures came from (call with Django set up)."""
    import django
    import redis
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg_version = cursor.fetchone()[0]
    redis_version = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "ram_gib": _ram_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "django": django.get_version(),
        "postgresql": pg_version,
        "redis": redis_version,
        "git_commit": _git_commit(),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_measured(
    name: str,
    *,
    quick: bool,
    measure: Callable[[BenchEnv], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """The frame of a benchmark's run: its environment, when it started and on what machine
    beside what `measure` found, then its report (tables, JSON, figures)."""
    with BenchEnv(name) as env:
        started = now_iso()
        measured = measure(env)
        data = {
            "benchmark": name,
            "started_at": started,
            "quick": quick,
            "machine": env.machine(),
            **measured,
        }
    report(data)
    return data


# --- waiting --------------------------------------------------------------------------------
def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def wait_for(
    predicate: Callable[[], Any], *, timeout_s: float, interval_s: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- processes ------------------------------------------------------------------------------
def _proc_status_kib(pid: int, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return 0


@dataclass
class Proc:
    """One real child process in its own process group, its output in a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tree(self) -> list[Any]:
        """psutil processes: this one and all its descendants."""
        import psutil

        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        import psutil

        total = 0.0
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def peak_rss_mib(self) -> dict[int, float]:
        """Peak resident memory (VmHWM) of each process of the tree, by pid."""
        return {proc.pid: round(_proc_status_kib(proc.pid, "VmHWM") / 1024, 1) for proc in self.tree()}

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGTERM to the whole group, then SIGKILL after `timeout_s`; the exit status."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        # Children that outlived their parent (same group) must not leak either.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        return self.popen.returncode


@dataclass
class BenchEnv:
    """A dedicated PostgreSQL database and Redis database, and the processes started on them.

    Use as a context manager; on exit every process started is stopped, the database is dropped
    and the Redis database flushed.
    """

    name: str
    db_name: str = field(default_factory=lambda: f"bench_{os.getpid()}")
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-")))
    procs: list[Proc] = field(default_factory=list)
    database_url: str = ""
    started: int = 0  # processes started so far: names their log files
    quiet: dict[str, Any] = field(default_factory=dict)
    foreign: ForeignLoad | None = None
    lock: Any = None
    mail_port: int = field(default_factory=free_port)

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> BenchEnv:
        self.lock = exclusive_run()
        self.quiet = wait_until_quiet()
        self.foreign = ForeignLoad(self.db_name)
        try:
            self._create_database()
            self._setup_django()
            self.flush_redis()
            self._start_mail_sink()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        with contextlib.suppress(Exception):
            self.flush_redis()
        self._drop_database()
        self._keep_logs()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.lock is not None:
            self.lock.close()  # releases the flock
            self.lock = None

    def _start_mail_sink(self) -> None:
        """An SMTP server for the customers' mails, as production has one: without it every
        confirmation's mail would fail, retry and cost the workers what no real run costs."""
        argv = [
            PYTHON,
            "-m",
            "sandbox.mailsink",
            "--port",
            str(self.mail_port),
            "--dir",
            str(self.tmp / "mail"),
        ]
        proc = self.start("mail", argv)
        wait_for(
            lambda: proc.alive() and _accepts(self.mail_port),
            timeout_s=60,
            interval_s=0.1,
            what="the mail sink listening",
        )

    def _keep_logs(self) -> None:
        """The processes' logs go to `bench/results/logs/<name>/` (the last run's only)."""
        target = RESULTS_DIR / "logs" / self.name
        shutil.rmtree(target, ignore_errors=True)
        logs = sorted(self.tmp.glob("*.log"))
        if logs:
            target.mkdir(parents=True, exist_ok=True)
            for log in logs:
                shutil.copy2(log, target / log.name)

    def machine(self) -> dict[str, Any]:
        """The machine, its servers, and how busy other processes kept it during this run."""
        load = self.foreign.summary() if self.foreign else {}
        return {
            **machine_info(),
            "quiet": self.quiet,
            "other_load": load,
            "load_average_at_end": load_average(),
        }

    def _admin_connection(self) -> Any:
        import psycopg

        return psycopg.connect(libpq_url(PG_URL), autocommit=True)

    def _create_database(self) -> None:
        with self._admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        parts = urlsplit(PG_URL)
        self.database_url = urlunsplit(parts._replace(path=f"/{self.db_name}"))

    def _drop_database(self) -> None:
        if not self.database_url:
            return
        with contextlib.suppress(Exception), self._admin_connection() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def _setup_django(self) -> None:
        os.environ.update(self.child_env_vars())
        os.environ["LOG_LEVEL"] = "WARNING"  # this process only: the tables stay readable
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)

    def child_env_vars(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE,
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "VAR_DIR": str(self.tmp / "var"),
            "EMAIL_URL": f"smtp://127.0.0.1:{self.mail_port}",
            "PYTHONUNBUFFERED": "1",
            # Production's level; the worker's "ready for action" line is how we know it is up.
            "LOG_LEVEL": "INFO",
        }

    def child_env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **self.child_env_vars(), **extra}
        env["PATH"] = f"{Path(PYTHON).parent}:{env.get('PATH', '')}"
        return env

    # --- Redis ----------------------------------------------------------------------------
    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(REDIS_URL)

    def flush_redis(self) -> None:
        self.redis().flushdb()

    # --- processes ------------------------------------------------------------------------
    def start(self, name: str, argv: list[str], **env: str) -> Proc:
        self.started += 1
        proc = Proc(name, argv, self.child_env(**env), self.tmp / f"{self.started:02d}-{name}.log").start()
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def start_web(
        self,
        *,
        workers: int = 4,
        threads: int = 2,
        port: int | None = None,
        cpus: str | None = None,
        name: str = "web",
        access_log_format: str | None = None,
    ) -> tuple[Proc, str]:
        """gunicorn as the Procfile's `web`, on a free port; returns it and its base URL.
        `cpus` pins it (and its children) to those CPUs (`taskset -c`); `access_log_format`
        replaces gunicorn's (e.g. to log each request's duration, `%(D)s`)."""
        port = port or free_port()
        log_format = ["--access-logformat", access_log_format] if access_log_format else []
        proc = self.start(
            f"{name}-{port}",
            [
                *_pinned(cpus),
                GUNICORN,
                "config.wsgi:application",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--threads",
                str(threads),
                "--no-control-socket",
                "--access-logfile",
                "-",
                *log_format,
                "--log-level",
                "warning",
            ],
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(proc, f"{base}/healthz", timeout_s=60)
        return proc, base

    def start_events(self, **env: str) -> tuple[Proc, str]:
        """The events process as the Procfile's `events` (uvicorn, the live status streams), on a
        free port, with `env` (e.g. LIVE_HEARTBEAT_S); returns it and its base URL."""
        from config import events

        port = free_port()
        proc = self.start(f"events-{port}", events.command(port=port), **env)
        base = f"http://127.0.0.1:{port}"
        wait_http(proc, f"{base}/healthz", timeout_s=60)
        return proc, base

    def start_router(self, *, web: str, events: str) -> tuple[Proc, str]:
        """The router of `make run` in front of a web server and an events process (their base
        URLs): pages and their streams on one origin."""
        from config import router

        port = free_port()
        argv = router.command(port=port, web_port=_port(web), events_port=_port(events))
        proc = self.start(f"router-{port}", argv)
        base = f"http://127.0.0.1:{port}"
        wait_http(proc, f"{base}/healthz", timeout_s=60)
        return proc, base

    def start_webhooks(self, *, port: int | None = None, cpus: str | None = None) -> tuple[Proc, str]:
        """The partners' webhook receiver as the Procfile's `webhooks`: its own gunicorn (2 x 4),
        so that partner traffic never shares a process with the customer path."""
        return self.start_web(workers=2, threads=4, port=port, cpus=cpus, name="webhooks")

    def start_workers(
        self, *, processes: int, threads: int, queues: Sequence[str] = (), cpus: str | None = None
    ) -> Proc:
        """`manage.py rundramatiq`; returns once every worker process is ready for action."""
        argv = [
            *_pinned(cpus),
            PYTHON,
            "manage.py",
            "rundramatiq",
            "--processes",
            str(processes),
            "--threads",
            str(threads),
        ]
        if queues:
            argv += ["--queues", *queues]
        proc = self.start("worker", argv)
        wait_for(
            lambda: (
                _check_alive(proc) and proc.log().count("Worker process is ready for action.") >= processes
            ),
            timeout_s=120,
            interval_s=0.02,
            what=f"{processes} worker processes ready",
        )
        return proc

    def start_sandbox(
        self, *, webhook_url: str | None, extra: Sequence[str] = (), cpus: str | None = None
    ) -> tuple[Proc, str]:
        """A reference-profile sandbox partner on a free port; returns it and its base URL."""
        port = free_port()
        argv = [
            *_pinned(cpus),
            PYTHON,
            "manage.py",
            "run_sandbox_partner",
            "--profile",
            "reference",
            "--port",
            str(port),
            "--store",
            str(self.tmp / f"sandbox-{port}.sqlite3"),
            "--api-key",
            SANDBOX_API_KEY,
            *extra,
        ]
        if webhook_url:
            argv += ["--webhook-url", webhook_url, "--webhook-secret", SANDBOX_WEBHOOK_SECRET]
        proc = self.start(f"sandbox-{port}", argv)
        base = f"http://127.0.0.1:{port}"
        wait_http(
            proc,
            f"{base}/_sandbox/info",
            timeout_s=60,
            headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"},
        )
        return proc, base


def exclusive_run(path: Path = LOCK_PATH) -> Any:
    """An exclusive lock on `path`, held by the returned open file until it is closed (or this
    process dies); a clear error if another benchmark holds it. Two benchmarks at once would
    flush each other's Redis database and consume each other's partner queues."""
    handle = open(path, "a+")  # noqa: SIM115 - the caller keeps it open while it runs
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RuntimeError(
            f"another benchmark is running ({holder}, lock {path}); wait for it or stop it"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}: {' '.join(sys.argv)}")
    handle.flush()
    return handle


def _port(base_url: str) -> int:
    port = urlsplit(base_url).port
    assert port is not None, base_url
    return port


def _pinned(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


def queue_size(queue_name: str) -> int:
    """Messages of a Dramatiq queue not yet acknowledged (waiting, delayed or in progress)."""
    import dramatiq

    return int(dramatiq.get_broker().do_qsize(queue_name))


def messages_queued() -> int:
    """Messages not yet acknowledged, over every queue the broker knows."""
    import dramatiq

    broker = dramatiq.get_broker()
    return sum(int(broker.do_qsize(name)) for name in broker.get_declared_queues())


def _check_alive(proc: Proc) -> bool:
    if not proc.alive():
        raise RuntimeError(
            f"{proc.name} exited ({proc.popen and proc.popen.returncode}):\n{proc.log()[-3000:]}"
        )
    return True


def wait_http(proc: Proc, url: str, *, timeout_s: float, headers: dict[str, str] | None = None) -> None:
    import requests

    def ready() -> bool:
        _check_alive(proc)
        try:
            return requests.get(url, headers=headers, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_for(ready, timeout_s=timeout_s, interval_s=0.1, what=f"{proc.name} answering {url}")


def set_sandbox_faults(base: str, **faults: object) -> dict[str, Any]:
    import requests

    response = requests.post(
        f"{base}/_sandbox/faults",
        json=faults,
        headers={"Authorization": f"Bearer {SANDBOX_API_KEY}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """`with timed() as t: ...` then `t["s"]` is the elapsed wall time in seconds."""
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start
