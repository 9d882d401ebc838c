"""`make run` heals itself: the dev runner (config/devstack.py) on the embedded defaults, over the
Procfile's own router, web, worker and scheduler lines, with real processes.

A Dramatiq worker process SIGKILLed (as the OOM killer does) used to stop Dramatiq, then honcho
stopped every other process: the site was gone until someone restarted it. The embedded Redis,
once killed, stayed dead. Here each is killed in turn while the site keeps answering, each is
running again within a bound, and Ctrl-C still stops every process (the Redis server included)
with nothing left behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from honcho.environ import parse_procfile

from config import respawn
from tests.helpers import wait_until
from tests.sandbox_process import free_port
from tests.streams import database_url

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.once_per_ci("embedded"),  # `make run`'s own stack, whatever the suite's
]

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("router", "web", "worker", "scheduler")  # the Procfile's lines this run starts
BACK_WITHIN_S = 30  # a killed process runs again within this (1 s pause, then its boot)


# --- processes, from /proc -------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name, or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_wrapper(pid: int) -> bool:
    """honcho's shell (`sh -c COMMAND`) or the config.respawn in it: not the command itself."""
    command = _cmdline(pid)
    return command.startswith("/bin/sh -c ") or " -m config.respawn " in command


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and fields[0] != "Z":
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


class MakeRun:
    """`python -m config.devstack` in a session of its own (as a terminal runs `make run`), and
    every process seen under it (pid -> start time: a pid names one process, never a later one)."""

    def __init__(
        self, tmp_path: Path, processes: tuple[str, ...] = PROCESSES, *, like: MakeRun | None = None
    ):
        """`like`: a second start with the same ports, VAR_DIR and Procfile as that one."""
        self.log_path = tmp_path / ("make-run-again.log" if like else "make-run.log")
        if like is not None:
            self.var_dir, self.port, self.env = like.var_dir, like.port, like.env
        else:
            self.var_dir = tmp_path / "var"
            self.port = free_port()
            lines = parse_procfile((ROOT / "Procfile").read_text()).processes
            procfile = tmp_path / "Procfile"
            procfile.write_text("".join(f"{name}: {lines[name]}\n" for name in processes))
            env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
            env.pop("REDIS_URL", None)  # the embedded defaults: the dev runner starts its own Redis
            env.update(
                PROCFILE=str(procfile),
                VAR_DIR=str(self.var_dir),
                PORT=str(self.port),
                WEB_PORT=str(free_port()),
                EVENTS_PORT=str(free_port()),
                WEBHOOK_PORT=str(free_port()),
                MAIL_PORT=str(free_port()),
                DATABASE_URL=database_url(),
                DJANGO_SETTINGS_MODULE="config.settings.test",
                PYTHONUNBUFFERED="1",  # honcho's lines reach the log as they are printed
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # as the Makefile's
            )
            self.env = env
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "config.devstack"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen: dict[int, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, condition, *, what: str, timeout_s: float = BACK_WITHIN_S):
        """`wait_until`, failing with the run's log (what honcho and every process printed)."""
        try:
            return wait_until(condition, what=what, timeout_s=timeout_s, interval_s=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.log()[-6000:]}") from None

    def track(self) -> dict[int, list[int]]:
        tree, pending = _children(), [self.process.pid]
        while pending:
            pid = pending.pop()
            if (fields := _stat(pid)) is not None:
                self.seen.setdefault(pid, fields[19])
            pending.extend(tree.get(pid, []))
        return tree

    def running(self) -> list[int]:
        """The processes seen under this run that still run (not gone, not a zombie)."""
        alive = {pid: fields for pid in self.seen if (fields := _stat(pid)) and fields[0] != "Z"}
        return [pid for pid, fields in alive.items() if fields[19] == self.seen[pid]]

    def supervised(self, name: str) -> int | None:
        """The pid of the process `name` runs now: below the shell honcho started for it (and
        the config.respawn that supervises it)."""
        tree = self.track()
        started = re.findall(rf"{name}\.1 started \(pid=(\d+)\)", self.log())
        pid = int(started[-1]) if started else None
        while pid in self.running() and _is_wrapper(pid):
            pid = next(iter(tree.get(pid, [])), None)
        return pid if pid in self.running() else None

    def children_of(self, pid: int) -> list[int]:
        return self.track().get(pid, [])

    def redis_server(self) -> int | None:
        socket = str(self.var_dir / "redis" / "redis.sock")
        return next((pid for pid in self.track().get(self.process.pid, []) if socket in _cmdline(pid)), None)

    def health(self) -> int | str:
        """/healthz's status through the router, or "refused" (nothing listens: the site is gone),
        or "slow" (no answer within 10 s: a loaded machine, not an outage)."""
        try:
            return requests.get(self.url + "/healthz", timeout=10).status_code
        except requests.Timeout:
            return "slow"
        except requests.RequestException:
            return "refused"

    def kill_everything(self) -> None:
        self.track()
        for pid in self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


@pytest.fixture
def make_run(db, tmp_path) -> Iterator[MakeRun]:
    run = MakeRun(tmp_path)
    try:
        yield run
    finally:
        run.kill_everything()


class Prober(threading.Thread):
    """Asks the site's /healthz every 100 ms through the router, noting every answer."""

    def __init__(self, run: MakeRun) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.answers: list[int | str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.1):
            self.answers.append(self.run_.health())

    def stop(self) -> list[int | str]:
        self.done.set()
        self.join()
        return self.answers


def _up_for(pid: int) -> float:
    """Seconds since the process started."""
    ticks = os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - int(_stat(pid)[19]) / ticks


def test_killed_processes_come_back_while_the_site_answers_and_ctrl_c_stops_everything(make_run):
    run = make_run
    run.wait(lambda: run.health() == 200, what="/healthz 200 through the router", timeout_s=120)
    front = {name: run.supervised(name) for name in ("router", "web")}

    # The scheduler crashes: it comes back; nothing else is touched.
    scheduler = run.supervised("scheduler")
    os.kill(scheduler, signal.SIGKILL)
    run.wait(lambda: run.supervised("scheduler") not in (None, scheduler), what="the scheduler to run again")
    assert "respawn: scheduler was killed by SIGKILL; restarting in 1 s" in run.log()

    # One Dramatiq worker process is SIGKILLed: Dramatiq stops (its design), and starts again.
    worker = run.supervised("worker")
    worker_processes = run.wait(lambda: run.children_of(worker), what="Dramatiq's worker processes")
    # A first run that ends by itself within STARTUP_S counts as "did not start" (not retried).
    time.sleep(max(0.0, respawn.STARTUP_S + 1 - _up_for(worker)))
    prober = Prober(run)
    prober.start()
    os.kill(worker_processes[0], signal.SIGKILL)
    run.wait(
        lambda: (pid := run.supervised("worker")) not in (None, worker) and len(run.children_of(pid)) >= 2,
        what="Dramatiq and its worker processes to run again",
    )
    answers = prober.stop()
    assert 200 in answers and set(answers) <= {200, "slow"}, answers  # the site never went away
    assert "respawn: worker exited with code 1; restarting in 1 s" in run.log()

    # The embedded Redis is SIGKILLed: it runs again on its socket and /healthz is 200 again.
    redis_server = run.redis_server()
    os.kill(redis_server, signal.SIGKILL)
    run.wait(
        lambda: run.redis_server() not in (None, redis_server) and run.health() == 200,
        what="the embedded Redis to run again and /healthz 200",
    )
    assert f"embedded redis-server was killed by SIGKILL; starting it again on {run.var_dir}" in run.log()

    # Through all of it, the router and the web server were never stopped.
    assert {name: run.supervised(name) for name in ("router", "web")} == front

    # Ctrl-C: every process ends, once and quickly, the Redis server included.
    run.track()
    os.killpg(run.process.pid, signal.SIGINT)
    run.process.wait(20)
    run.wait(lambda: not run.running(), what="every process to end", timeout_s=10)
    assert "restarting" not in run.log().split("SIGINT received")[-1]
    assert not (run.var_dir / "redis" / "redis.sock").exists()


def test_a_second_make_run_refuses_while_a_stack_runs_and_touches_nothing_of_it(make_run, tmp_path):
    """`make run` killed abruptly (its own process only: a terminal closed hard, the OOM killer)
    leaves honcho and every process running. The next start used to reuse their embedded Redis,
    empty var/metrics under them, and only then stop on "address already in use". Now it
    refuses first, naming what is held and by whom, and how to stop it; the commands it gives
    stop the leftover stack, its Redis included."""
    run = make_run
    run.wait(lambda: run.health() == 200, what="/healthz 200 through the router", timeout_s=120)
    metrics = run.var_dir / "metrics"
    run.wait(lambda: sorted(metrics.iterdir()), what="the processes' metrics files")
    redis_server = run.redis_server()

    # While it runs: refused, and the make run to stop is named.
    alongside = MakeRun(tmp_path, like=run)
    try:
        assert alongside.process.wait(60) == 1, alongside.log()
    finally:
        alongside.kill_everything()
    said = alongside.log()
    assert f"  port {run.port} (router): pid " in said, said
    assert re.search(rf"^  kill -INT {run.process.pid} +# its make run: stops every process", said, re.M), (
        said
    )
    assert run.health() == 200 and run.redis_server() == redis_server

    # Killed abruptly, make run alone: honcho and the rest live on.
    run.track()
    os.kill(run.process.pid, signal.SIGKILL)
    run.process.wait(10)
    assert run.health() == 200
    files = [path.name for path in metrics.iterdir()]

    again = MakeRun(tmp_path, like=run)
    try:
        assert again.process.wait(60) == 1, again.log()
    finally:
        again.kill_everything()
    said = again.log()
    assert "make run: not starting (nothing was touched)" in said, said
    router_pid = run.supervised("router")
    assert f"  port {run.port} (router): pid {router_pid} (" in said, said
    assert f"  port {run.env['WEB_PORT']} (web): pids " in said, said  # gunicorn's master and workers
    socket = run.var_dir / "redis" / "redis.sock"
    assert f"  the embedded Redis's socket {socket}: pid {redis_server} (" in said, said
    assert "embedded redis-server on" not in said  # not reused
    honcho = next(pid for pid in run.running() if " -m honcho " in _cmdline(pid))
    assert re.search(rf"^  kill -INT {honcho} +# honcho, left running without its make run", said, re.M), said
    assert re.search(rf"^  kill {redis_server} +# the embedded Redis server", said, re.M), said
    # Nothing of the running stack was touched: its metrics, its Redis, its site.
    assert set(files) <= {path.name for path in metrics.iterdir()}  # not emptied (they add theirs)
    assert redis_server in run.running()
    assert run.health() == 200

    # The commands it gave stop the leftover stack, every process and the Redis server.
    for interrupt, pid in re.findall(r"^  kill (-INT )?(\d+)", said, re.M):
        os.kill(int(pid), signal.SIGINT if interrupt else signal.SIGTERM)
    run.wait(lambda: not run.running(), what="every process of the leftover stack to end", timeout_s=20)
    assert run.health() == "refused"
