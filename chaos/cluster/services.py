"""The cluster's own PostgreSQL and Redis, each on its host, with data under the run's directory.

Neither is the machine's shared server: PostgreSQL is `initdb`'d into the run's directory and
listens on the db host's address only (its unix socket in its data directory); Redis listens on
the broker host's address without persistence. Both go with the run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from chaos.cluster.network import Network
from chaos.cluster.plan import Host
from chaos.procs import ManagedProcess, wait_until
from chaos.redis_ops import RestartOutcome

PG_PORT = 5432  # the host's own: its namespace has a network stack of its own
REDIS_PORT = 6379
DATABASE = "chaos"
START_TIMEOUT_S = 60.0
# PostgreSQL refuses to run as root; this account owns the data directory.
PG_ACCOUNTS = ("postgres", "nobody")


class ServiceUnavailable(RuntimeError):
    pass


def postgres_binaries() -> Path:
    """The directory of initdb and postgres: on the PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if not candidates:
        raise ServiceUnavailable("PostgreSQL's initdb was not found (PATH, /usr/lib/postgresql/*/bin)")
    return Path(candidates[-1]).parent


def _pg_account() -> pwd.struct_passwd:
    for name in PG_ACCOUNTS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServiceUnavailable(f"no account to run PostgreSQL as (tried {', '.join(PG_ACCOUNTS)})")


def _traversable(directory: Path, account: pwd.struct_passwd) -> bool:
    """Whether the account may walk down to `directory` (every ancestor grants it execute)."""
    groups = set(os.getgrouplist(account.pw_name, account.pw_gid))
    for path in (directory, *directory.parents):
        info = path.stat()
        if info.st_uid == account.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            return False
    return True


class PostgresServer:
    def __init__(self, *, network: Network, host: Host, directory: Path) -> None:
        self.network = network
        self.host = host
        self.account = _pg_account()
        # In the run's directory, unless PostgreSQL's account cannot reach it (a private temp
        # directory, say): then beside it, in the machine's temp directory, under the run's name.
        self.data = (
            directory / "pgdata"
            if _traversable(directory, self.account)
            else Path(tempfile.gettempdir()) / f"{network.plan.prefix}-pgdata"
        )
        self.log_path = directory / "db.log"
        self.bin = postgres_binaries()
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@{self.host.address}:{PG_PORT}/{DATABASE}"

    def init(self) -> None:
        """initdb into the run's directory: trust for the cluster's subnet, nothing else."""
        self.network.registry.record("dir", str(self.data))
        self.data.mkdir(mode=0o700)
        os.chown(self.data, self.account.pw_uid, self.account.pw_gid)
        self._as_account(
            [
                str(self.bin / "initdb"),
                *("-D", str(self.data), "-U", "postgres", "--auth=trust"),
                *("-E", "UTF8", "--no-locale", "--no-sync"),
            ]
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nlisten_addresses = '{self.host.address}'\nport = {PG_PORT}\n"
                f"unix_socket_directories = '{self.data}'\nmax_connections = 400\n"
                "shared_buffers = 256MB\n"
            )
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.network.plan.subnet} trust\n")

    def start(self) -> None:
        argv = self.network.on_host(
            self.host, [str(self.bin / "postgres"), "-D", str(self.data)], user=self.account.pw_name
        )
        self.process = ManagedProcess(
            "db", argv, env={"PATH": os.environ.get("PATH", "")}, cwd=self.data, log_path=self.log_path
        ).start()
        if not wait_until(self._accepts, timeout_s=START_TIMEOUT_S, interval_s=0.2):
            raise ServiceUnavailable(f"PostgreSQL did not start on {self.host.address}; see {self.log_path}")
        with psycopg.connect(self._url("postgres"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{DATABASE}"')

    def stop(self) -> None:
        if self.process is None or not self.process.alive:
            return
        # Fast shutdown: sessions are rolled back (smart shutdown, SIGTERM, would wait for them).
        self._as_account(
            [str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w"], check=False
        )
        self.process.finish_stop(timeout_s=15)

    def dump(self, path: Path) -> None:
        """A plain-SQL dump of the run's database: the evidence a failed run keeps."""
        with path.open("wb") as out:
            subprocess.run(
                [str(self.bin / "pg_dump"), "--no-owner", self._url(DATABASE)],
                stdout=out,
                stderr=subprocess.PIPE,
                check=True,
                timeout=600,
            )

    def _url(self, database: str) -> str:
        return f"postgres://postgres@{self.host.address}:{PG_PORT}/{database}"

    def _accepts(self) -> bool:
        if self.process is None or not self.process.alive:
            return False
        try:
            with psycopg.connect(self._url("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _as_account(self, argv: list[str], *, check: bool = True) -> None:
        user = self.account.pw_name
        completed = subprocess.run(
            ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", *argv],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        with self.log_path.open("a") as log:
            log.write(f"=== {' '.join(argv)}\n{completed.stdout}{completed.stderr}")
        if check and completed.returncode != 0:
            raise ServiceUnavailable(f"{Path(argv[0]).name} failed: {completed.stderr.strip()[-500:]}")


class BrokerServer:
    """The cluster's Redis, with the interface of `chaos.redis_ops`' handles (a real restart)."""

    mode = "cluster"

    def __init__(self, *, network: Network, host: Host, directory: Path) -> None:
        self.network = network
        self.host = host
        self.data = directory / "broker"
        self.log_path = directory / "broker.log"
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host.address}:{REDIS_PORT}/0"

    def client(self, *, timeout_s: float = 5.0) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def start(self) -> None:
        if self.process is None:
            self.network.registry.record("dir", str(self.data))
            self.data.mkdir(exist_ok=True)
            argv = [
                shutil.which("redis-server") or "redis-server",
                "--bind",
                self.host.address,
                "--port",
                str(REDIS_PORT),
                "--protected-mode",
                "no",  # no password, but reachable only from the cluster's subnet
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data),
                "--maxclients",
                "4000",
            ]
            self.process = ManagedProcess(
                "broker",
                self.network.on_host(self.host, argv),
                env={"PATH": os.environ.get("PATH", "")},
                cwd=self.data,
                log_path=self.log_path,
            )
        self.process.start()
        if not wait_until(self._answers, timeout_s=START_TIMEOUT_S, interval_s=0.1):
            raise ServiceUnavailable(f"Redis did not start on {self.host.address}; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate(timeout_s=10)

    def forget(self, namespace: str) -> int:
        return 0  # the server is the run's own and goes with it

    def restart(self, *, pgids: set[int], namespace: str, down_s: float = 1.0) -> RestartOutcome:
        started = time.monotonic()
        self.stop()
        time.sleep(down_s)
        self.start()
        return RestartOutcome(
            mode=self.mode,
            detail=f"redis-server on {self.host.name} ({self.host.address}) stopped and started again "
            "(no persistence)",
            down_s=time.monotonic() - started,
        )

    def _answers(self) -> bool:
        if self.process is None or not self.process.alive:
            return False
        try:
            return bool(self.client(timeout_s=1).ping())
        except redis.RedisError:
            return False
