"""CI proof that both documented starts work: `make run` on the embedded defaults (SQLite and an
embedded Redis) and on PostgreSQL + Redis.

Each run starts `make run` as a person would, waits for `/healthz`, books one stay per partner
protocol through the API (the demo partners: reference and legacy), waits until both are
confirmed, then stops it as Ctrl-C does and checks that every process it started is gone (the
embedded Redis included) and nothing listens on its ports any more. Whatever happens (a failure,
the hard timeout, a signal) every process it started is killed before it exits.

Standard library only: it runs before the virtualenv exists (`make run` makes it).

    python3 .ci/smoke_make_run.py [--only embedded|postgres] [--timeout SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO_TOKEN = "demo0customer0token000000000000000000000"  # printed by `make run`
SANDBOX_PORTS = (8101, 8102, 8103)  # the Procfile's sandbox partners and payment provider
# Ports `make run` takes from PORT: the router (PORT), the partners' webhooks (+1), the web server
# (+2), the events process (+3), the mail sink (+25).
PORT_OFFSETS = (0, 1, 2, 3, 25)
PROTOCOLS = {"demo-reference": "reference", "demo-legacy": "legacy"}
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


class SmokeFailed(Exception):
    pass


def log(message: str) -> None:
    print(f"[smoke] {message}", flush=True)


# --- the processes `make run` starts ---------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # it ended meanwhile


def _children() -> dict[int, list[int]]:
    """Every live process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        fields = _stat(int(entry)) if entry.isdigit() else None
        if fields:
            tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _started(pid: int) -> str | None:
    """When the process started (clock ticks since boot): with the pid, it names one process,
    never another that later got the same pid."""
    fields = _stat(pid)
    return fields[19] if fields else None


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class MakeRun:
    """One `make run`, and every process seen under it while it ran."""

    label: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    seen: dict[int, str] = field(default_factory=dict)  # pid -> start time

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ports(self) -> list[int]:
        return [self.port + offset for offset in PORT_OFFSETS] + list(SANDBOX_PORTS)

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            # A session of its own: the signal below reaches make, the dev runner and honcho,
            # as Ctrl-C in a terminal does; honcho then stops each process it started.
            self.process = subprocess.Popen(
                ["make", "run"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def track(self) -> None:
        """Remember every process under `make run` (honcho starts each in a session of its own,
        so they are found by parenthood, not by process group)."""
        if self.process is None:
            return
        tree, pending = _children(), [self.process.pid]
        while pending:
            pid = pending.pop()
            started = _started(pid)
            if started is not None:
                self.seen.setdefault(pid, started)
            pending.extend(tree.get(pid, []))

    def running(self) -> list[int]:
        """The processes seen under this run that still run (not gone, not a zombie)."""
        return [
            pid for pid, started in self.seen.items() if _started(pid) == started and _stat(pid)[0] != "Z"
        ]

    def stop(self, timeout_s: float) -> None:
        """Ctrl-C, then wait for every process seen to end and every port to close."""
        assert self.process is not None
        self.track()
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise SmokeFailed(f"make run did not exit within {timeout_s:g} s of Ctrl-C") from exc
        wait_for(
            lambda: not self.running(),
            what="every process of make run to end",
            timeout_s=15,
            detail=lambda: f"still running: {self._describe(self.running())}",
        )
        wait_for(
            lambda: not [port for port in self.ports if _listening(port)],
            what="make run's ports to close",
            timeout_s=10,
            detail=lambda: f"still listening: {[port for port in self.ports if _listening(port)]}",
        )

    def kill_everything(self) -> None:
        """The guarantee: whatever is left of this run is killed (SIGKILL)."""
        self.track()
        for pid in self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @staticmethod
    def _describe(pids: list[int]) -> str:
        names = []
        for pid in pids:
            try:
                command = (
                    Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
            except OSError:
                command = "?"
            names.append(f"{pid} {command[:120]}")
        return "; ".join(names)


# --- HTTP ------------------------------------------------------------------------------------
def http(method: str, url: str, body: dict | None = None, headers: dict[str, str] | None = None):
    """(status, parsed JSON or text) — any status, never an exception for a 4xx/5xx."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_for(condition, *, what: str, timeout_s: float, detail=lambda: "", interval_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SmokeFailed(f"timed out after {timeout_s:g} s waiting for {what}. {detail()}")
        time.sleep(interval_s)


def _healthy(run: MakeRun) -> bool:
    run.track()
    assert run.process is not None
    if run.process.poll() is not None:
        raise SmokeFailed(f"make run exited with {run.process.returncode} before answering")
    try:
        return http("GET", f"{run.base_url}/healthz")[0] == 200
    except OSError:
        return False  # not listening yet


def book_one_stay_per_protocol(run: MakeRun, timeout_s: float) -> None:
    auth = {"Authorization": f"Token {DEMO_TOKEN}"}
    status, offers = http("GET", f"{run.base_url}/api/v1/offers", headers=auth)
    if status != 200:
        raise SmokeFailed(f"GET /api/v1/offers answered {status}: {offers}")
    first_offer = {}
    for offer in offers["results"]:
        first_offer.setdefault(offer["partner"]["code"], offer)
    missing = set(PROTOCOLS) - set(first_offer)
    if missing:
        raise SmokeFailed(f"no demo offer of {sorted(missing)} in {offers}")
    start = datetime.now(UTC).date() + timedelta(days=40)
    references = {}
    for code, protocol in PROTOCOLS.items():
        status, booking = http(
            "POST",
            f"{run.base_url}/api/v1/bookings",
            {
                "offer": first_offer[code]["id"],
                "start_date": str(start),
                "end_date": str(start + timedelta(days=2)),
                "guests": 1,
            },
            headers={**auth, "Idempotency-Key": f"smoke-{run.label}-{uuid.uuid4().hex}"},
        )
        if status != 202:
            raise SmokeFailed(f"booking through {code} answered {status}: {booking}")
        references[protocol] = booking["reference"]
        log(f"{run.label}: booked {booking['reference']} through {code} ({protocol} protocol): 202")

    def statuses() -> dict[str, str]:
        return {
            protocol: http("GET", f"{run.base_url}/api/v1/bookings/{reference}", headers=auth)[1].get(
                "status"
            )
            for protocol, reference in references.items()
        }

    seen: dict[str, str] = {}

    def all_confirmed() -> bool:
        run.track()
        seen.update(statuses())
        return all(status == "confirmed" for status in seen.values())

    wait_for(
        all_confirmed, what="both bookings to be confirmed", timeout_s=timeout_s, detail=lambda: str(seen)
    )
    log(f"{run.label}: both confirmed ({', '.join(f'{p} {r}' for p, r in references.items())})")


# --- the two runs ----------------------------------------------------------------------------
def _free_base_port() -> int:
    taken = [port for port in SANDBOX_PORTS if _listening(port)]
    if taken:
        raise SmokeFailed(f"the sandbox partners' ports {taken} are in use: stop whatever holds them")
    for base in (8000, 18000, 28000, 38000, 48000):
        if not any(_listening(base + offset) for offset in PORT_OFFSETS):
            return base
    raise SmokeFailed("no free PORT for make run")


def _run_env(**changes: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update({k: v for k, v in changes.items() if v is not None})
    return env


def _postgres(sql: str) -> None:
    """One statement on the machine's PostgreSQL, with the project's own driver (after install)."""
    code = "import psycopg, sys; psycopg.connect(sys.argv[1], autocommit=True).execute(sys.argv[2])"
    subprocess.run([str(ROOT / ".venv/bin/python"), "-c", code, PG_ADMIN_URL, sql], check=True, timeout=60)


def smoke(label: str, env: dict[str, str], log_dir: Path, deadline: float) -> None:
    port = _free_base_port()
    run = MakeRun(label, port, {**env, "PORT": str(port)}, log_dir / f"make-run-{label}.log")
    log(f"{label}: make run on PORT={port} (log: {run.log_path})")
    try:
        run.start()
        wait_for(
            lambda: _healthy(run),
            what="/healthz to answer 200",
            timeout_s=max(1.0, deadline - time.monotonic()),
        )
        log(f"{label}: /healthz 200")
        book_one_stay_per_protocol(run, timeout_s=min(120.0, max(1.0, deadline - time.monotonic())))
        run.stop(timeout_s=60)
        log(f"{label}: stopped; all {len(run.seen)} processes seen under it ended, its ports closed")
    except BaseException:
        log(f"{label}: FAILED; the end of make run's output:\n{run.log_tail()}")
        raise
    finally:
        run.kill_everything()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("embedded", "postgres"))
    parser.add_argument("--timeout", type=float, default=900.0, help="Hard limit for the whole run.")
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout

    def on_signal(signum: int, frame: object) -> None:
        raise SmokeFailed(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(args.timeout) + 60)  # the hard stop, should a wait itself hang

    log_dir = Path(tempfile.mkdtemp(prefix="smoke-make-run-"))
    try:
        if args.only in (None, "embedded"):
            smoke("embedded", _run_env(), log_dir, deadline)
        if args.only in (None, "postgres"):
            database = f"smoke_make_run_{uuid.uuid4().hex[:8]}"
            subprocess.run(["make", "install"], cwd=ROOT, check=True, timeout=900)
            _postgres(f'CREATE DATABASE "{database}"')
            namespace = f"smoke-{uuid.uuid4().hex[:8]}"
            env = _run_env(
                DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
                REDIS_URL=REDIS_URL,
                # Keys of their own on the machine's shared Redis.
                DRAMATIQ_NAMESPACE=namespace,
                CACHE_KEY_PREFIX=namespace,
                API_THROTTLE_NAMESPACE=f"{namespace}-throttle",
                PARTNER_GUARD_NAMESPACE=f"{namespace}-guard",
                LIVE_CHANNEL_PREFIX=namespace,
            )
            try:
                smoke("postgres", env, log_dir, deadline)
            finally:
                _postgres(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    except SmokeFailed as failure:
        log(f"FAILED: {failure}")
        return 1
    log("both documented starts work" if args.only is None else f"make run works ({args.only})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
