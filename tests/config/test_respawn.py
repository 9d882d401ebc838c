"""`config.respawn`, the supervisor `make run` puts each Procfile process under, with real
processes: a command that dies is started again (and what it left behind is killed), one that
never started is not, and a stop signal reaches the command once and stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from config.respawn import Backoff
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]

# The supervised command: notes its pid, starts a grandchild (as gunicorn and Dramatiq start
# workers), notes each SIGTERM it receives, and ends 0.3 s after the first (a second one would
# be noted meanwhile). `exit_code` set: it exits at once with it instead.
COMMAND = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    notes, exit_code, ignore_term = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    def note(line):
        with open(notes, "a") as f:
            f.write(line + "\\n")
    if exit_code:
        note(f"started {os.getpid()}")
        sys.exit(int(exit_code))
    grandchild = subprocess.Popen(["sleep", "300"])
    def on_term(signum, frame):
        note(f"term {os.getpid()}")
        if not ignore_term:
            time.sleep(0.3)
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    note(f"started {os.getpid()} {grandchild.pid}")
    while True:
        time.sleep(1)
    """
)


class Supervised:
    """`python -m config.respawn` over COMMAND (or a Supervisor with other timings)."""

    def __init__(self, tmp_path: Path, *, exit_code: str = "", ignore_term: bool = False, **timings: float):
        self.notes = tmp_path / "notes"
        self.stderr = tmp_path / "respawn.log"
        command = [sys.executable, "-c", COMMAND, str(self.notes), exit_code, "1" if ignore_term else "0"]
        if timings:  # the same supervisor, with its pauses and timeouts shortened or lengthened
            backoff = {key: timings.pop(key) for key in ("first_s", "max_s", "stable_s") if key in timings}
            script = (
                "import sys; from config.respawn import Backoff, Supervisor; "
                f"sys.exit(Supervisor('t', {command!r}, backoff=Backoff(**{backoff!r}), **{timings!r}).run())"
            )
            argv = [sys.executable, "-c", script]
        else:
            argv = [sys.executable, "-m", "config.respawn", "--name", "t", "--", *command]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with self.stderr.open("wb") as err:
            self.process = subprocess.Popen(argv, cwd=ROOT, stderr=err, start_new_session=True, env=env)

    def lines(self, word: str) -> list[list[int]]:
        text = self.notes.read_text() if self.notes.exists() else ""
        return [[int(n) for n in line.split()[1:]] for line in text.splitlines() if line.startswith(word)]

    def log(self) -> str:
        return self.stderr.read_text()

    def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 10) -> int:
        os.kill(self.process.pid, signum)
        return self.process.wait(timeout_s)

    def cleanup(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def supervised(tmp_path):
    started: list[Supervised] = []

    def start(**options) -> Supervised:
        started.append(Supervised(tmp_path, **options))
        return started[-1]

    yield start
    for one in started:
        one.cleanup()


def test_the_pause_doubles_up_to_its_cap_and_starts_over_after_a_long_run():
    backoff = Backoff(first_s=1, max_s=30, stable_s=60)

    assert [backoff.after(up_s=2) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff.after(up_s=61) == 1  # it had stayed up: a new incident
    assert backoff.after(up_s=0.5) == 2


def test_a_killed_command_starts_again_without_what_it_left_and_one_line_says_so(supervised):
    run = supervised()
    [(first, grandchild)] = wait_until(lambda: run.lines("started"), what="the first start", timeout_s=15)

    os.kill(first, signal.SIGKILL)  # as the OOM killer does

    started = wait_until(lambda: run.lines("started")[1:], what="the second start", timeout_s=15)
    assert started[0][0] != first
    assert "respawn: t was killed by SIGKILL; restarting in 1 s" in run.log()
    # Its child, orphaned, would have held a port or gone on consuming: killed with its group.
    wait_until(lambda: not alive(grandchild), what="the orphaned grandchild to be killed", timeout_s=5)


def test_a_stop_signal_reaches_the_command_once_and_nothing_starts_again(supervised):
    run = supervised()
    [(pid, grandchild)] = wait_until(lambda: run.lines("started"), what="the start", timeout_s=15)

    assert run.stop(signal.SIGTERM) == 0  # the command's own exit status

    assert run.lines("term") == [[pid]]  # once: the command is in a process group of its own
    assert len(run.lines("started")) == 1
    assert not alive(grandchild)
    assert "restarting" not in run.log()


def test_a_hangup_stops_the_command_with_sigterm_not_as_a_reload(supervised):
    run = supervised()
    [(pid, _)] = wait_until(lambda: run.lines("started"), what="the start", timeout_s=15)

    assert run.stop(signal.SIGHUP) == 0

    assert run.lines("term") == [[pid]]


def test_a_stop_during_the_pause_before_a_restart_ends_it_at_once(supervised):
    run = supervised(first_s=30)
    [(pid, _)] = wait_until(lambda: run.lines("started"), what="the start", timeout_s=15)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: "restarting in 30 s" in run.log(), what="the pause", timeout_s=10)

    began = time.monotonic()
    assert run.stop(signal.SIGINT) == 128 + signal.SIGINT

    assert time.monotonic() - began < 2
    assert len(run.lines("started")) == 1


def test_a_command_that_does_not_stop_is_killed_with_its_group_after_the_stop_timeout(supervised):
    run = supervised(ignore_term=True, stop_timeout_s=1.0)
    [(pid, grandchild)] = wait_until(lambda: run.lines("started"), what="the start", timeout_s=15)

    began = time.monotonic()
    assert run.stop(signal.SIGTERM) == 128 + signal.SIGKILL

    assert 1.0 <= time.monotonic() - began < 4  # within honcho's 5 s, after which it SIGKILLs us
    assert not alive(pid) and not alive(grandchild)
    assert "did not stop within 1 s; killing it" in run.log()


def test_a_first_run_that_ends_by_itself_at_once_never_started_and_is_not_retried(supervised):
    # A port already taken, a wrong setting: `make run` stops, as before, rather than run on
    # half-started (against another run's sandboxes, say).
    run = supervised(exit_code="3")

    assert run.process.wait(15) == 3

    assert len(run.lines("started")) == 1
    assert "exited with code 3" in run.log() and "not restarting it" in run.log()
