"""`make run`'s supervisor for one process of the Procfile.

honcho stops every process as soon as one of them exits, and Dramatiq's main process exits when
one of its worker processes dies (it expects a supervisor to start it again): without this, one
crashed process (a worker the OOM killer took, the scheduler) took the whole site down until
someone restarted `make run`. `config/devstack.py` runs each line of the Procfile under it:

    python -m config.respawn --name worker -- python manage.py rundramatiq ...

- The command runs in a process group of its own. When it exits unexpectedly, whatever it left in
  that group is killed (gunicorn workers holding the port, Dramatiq's worker processes), one line
  says so, and it starts again after a pause: 1 s, doubling up to 30 s while it keeps exiting,
  and 1 s again once it has stayed up for a minute.
- A first run that ends by itself within `STARTUP_S` never started (a port already taken, a wrong
  setting): that is not retried; this exits with its code, and honcho stops the rest, so nothing
  half-started runs against another run's sandboxes.
- SIGINT, SIGTERM or SIGHUP stop it: the command gets the signal (SIGTERM for a hangup, which
  gunicorn and Dramatiq take as "reload"), once, and is never started again. Once: honcho
  signals our whole process group, and Dramatiq's worker processes, signalled by it and again by
  Dramatiq, took the second SIGTERM as "die now" mid-message; in a group of its own the command
  hears only us. What has not ended `STOP_TIMEOUT_S` later is killed with its group: honcho
  SIGKILLs what is left of ours after 5 s, which would miss the command's.

Development only: in production the process manager restarts processes (systemd's `Restart=`,
Kubernetes), so the Procfile itself keeps the bare commands.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_S = 60.0  # up this long: the next exit is a new incident, restarted after FIRST_DELAY_S
STARTUP_S = 15.0  # gunicorn alone retries a taken port for 5 s before it gives up
STOP_TIMEOUT_S = 4.0  # inside honcho's 5 s (honcho.manager.KILL_WAIT)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


@dataclass
class Backoff:
    """The pause before the next start: doubles from `first_s` up to `max_s` while the process
    keeps exiting, back to `first_s` after a run of at least `stable_s`."""

    first_s: float = FIRST_DELAY_S
    max_s: float = MAX_DELAY_S
    stable_s: float = STABLE_S
    _next_s: float | None = None

    def after(self, up_s: float) -> float:
        """The pause after a run that lasted `up_s` seconds."""
        if self._next_s is None or up_s >= self.stable_s:
            self._next_s = self.first_s
        delay = self._next_s
        self._next_s = min(delay * 2, self.max_s)
        return delay


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _die_with_us() -> None:
    """In the child, before exec: a SIGKILL to us (honcho's, after its 5 s) takes the command
    too, though it is in a process group of its own (Linux; elsewhere the stop timeout alone)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Supervisor:
    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        backoff: Backoff | None = None,
        startup_s: float = STARTUP_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.name = name
        self.argv = argv
        self.backoff = backoff or Backoff()
        self.startup_s = startup_s
        self.stop_timeout_s = stop_timeout_s
        self.child: subprocess.Popen[bytes] | None = None
        self.stop_signal: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    def log(self, message: str) -> None:
        print(f"respawn: {self.name} {message}", file=sys.stderr, flush=True)

    # --- signals: any of STOP_SIGNALS stops us; the command gets one signal, once -------------
    def _on_stop(self, signum: int, frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            self._pass_on()
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"\0")  # ends a pause at once

    def _pass_on(self) -> None:
        if self.child is None or self.child.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child.pid, signal.SIGTERM if self.stop_signal == signal.SIGHUP else self.stop_signal)
        signal.setitimer(signal.ITIMER_REAL, self.stop_timeout_s)

    def _on_stop_timeout(self, signum: int, frame: object) -> None:
        if self.child is not None:
            self.log(f"did not stop within {self.stop_timeout_s:g} s; killing it")
            self._kill_group()

    def _kill_group(self) -> None:
        """SIGKILL what is left of the command's process group (the command and its children)."""
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.child.pid, signal.SIGKILL)

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        signal.signal(signal.SIGALRM, self._on_stop_timeout)
        first_run = True
        while self.stop_signal is None:
            started = time.monotonic()
            self.child = subprocess.Popen(self.argv, process_group=0, preexec_fn=_die_with_us)
            if self.stop_signal is not None:
                self._pass_on()  # the signal came while it was being started
            returncode = self.child.wait()
            self._kill_group()  # an orphan would hold a port or go on consuming
            up_s = time.monotonic() - started
            if self.stop_signal is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
                return returncode if returncode >= 0 else 128 - returncode
            if first_run and returncode >= 0 and up_s < self.startup_s:
                self.log(f"{describe(returncode)} {up_s:.1f} s after it started: not restarting it")
                return returncode
            first_run = False
            delay = self.backoff.after(up_s)
            self.log(f"{describe(returncode)}; restarting in {delay:g} s")
            self._pause(delay)
        return 128 + self.stop_signal

    def _pause(self, delay_s: float) -> None:
        """Wait `delay_s` seconds, or until a stop signal comes."""
        deadline = time.monotonic() + delay_s
        while self.stop_signal is None and (left := deadline - time.monotonic()) > 0:
            select.select([self._wake_r], [], [], left)
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_r, 64)


def wrap(name: str, command: str) -> str:
    """A Procfile line's command under this module, by this interpreter; honcho's shell still
    expands the command's variables (one command per line, as the Procfile's are)."""
    return f"{shlex.quote(sys.executable)} -m config.respawn --name {name} -- {command}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.respawn", description=__doc__.splitlines()[0])
    parser.add_argument("--name", default=os.environ.get("HONCHO_PROCESS_NAME"))
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    return Supervisor(args.name or os.path.basename(command[0]), command).run()


if __name__ == "__main__":
    raise SystemExit(main())
