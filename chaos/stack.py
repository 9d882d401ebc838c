"""The system under test as real processes, in the Procfile's shape: web (gunicorn), the partners'
webhook receiver (its own gunicorn), the events process (the customers' live streams), Dramatiq
workers, the scheduler, and beside them the sandbox partners and the SMTP sink the customers'
mail goes to. Starts them, kills and restarts workers, and stops everything it started.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from functools import partial
from pathlib import Path

import requests

from chaos.config import ChaosConfig, RunIdentity, child_env
from chaos.payments import PaymentProvider
from chaos.procs import ManagedProcess, free_port, wait_until
from chaos.redis_ops import EmbeddedRedisHandle, ExternalRedisHandle
from chaos.sandboxes import SandboxPartner
from config.events import command as events_command

BASE_DIR = Path(__file__).resolve().parents[1]
WORKER_READY = "Worker process is ready for action."
START_TIMEOUT_S = 90.0


class StartupFailed(RuntimeError):
    pass


class Stack:
    def __init__(
        self,
        *,
        config: ChaosConfig,
        identity: RunIdentity,
        database_url: str,
        redis: EmbeddedRedisHandle | ExternalRedisHandle,
        sandboxes: list[SandboxPartner],
        provider: PaymentProvider | None = None,
    ) -> None:
        self.config = config
        self.identity = identity
        self.database_url = database_url
        self.redis = redis
        self.sandboxes = sandboxes
        self.provider = provider  # the payment provider (None: nobody pays in this run)
        self.web_port = free_port()
        self.webhook_port = free_port()
        self.events_port = free_port()
        self.mail_port = free_port()
        self.mail_host = "127.0.0.1"  # where the mail sink listens (a cluster: the partners host)
        self.mail_dir = identity.directory / "mail"
        self.web: ManagedProcess | None = None
        self.webhooks: ManagedProcess | None = None
        self.events: ManagedProcess | None = None
        self.mail: ManagedProcess | None = None
        self.scheduler: ManagedProcess | None = None
        self.workers: list[ManagedProcess] = []
        self._lock = threading.Lock()  # worker list changes (kills, restarts) vs. readers

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.events_port}"

    def webhook_url(self, code: str) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/partners/{code}/webhooks/"

    @property
    def payments_webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/payments/webhooks/"

    def _process(self, name: str, argv: list[str], *, role: str) -> ManagedProcess:
        env = child_env(
            dict(os.environ),
            config=self.config,
            identity=self.identity,
            database_url=self.database_url,
            redis_url=self.redis.url,
            role=role,
        )
        env["EMAIL_URL"] = f"smtp://{self.mail_host}:{self.mail_port}"
        if self.provider is not None:
            timing = self.config.timing
            env.update(
                self.provider.env(
                    read_timeout_s=timing.read_timeout_s,
                    retry_max_s=timing.retry_max_s,
                    run_grace_s=2 * timing.sweep_interval_s,
                )
            )
        return ManagedProcess(
            name, argv, env=env, cwd=BASE_DIR, log_path=self.identity.directory / f"{name}.log"
        )

    # --- start -----------------------------------------------------------------------------
    def start_sandboxes(self) -> None:
        hang_s = self.config.timing.read_timeout_s + 1.0  # outlasts our read timeout, then drops
        for sandbox in self.sandboxes:
            argv = sandbox.argv(
                store=self.identity.directory / f"{sandbox.profile}-store.sqlite3",
                webhook_url=self.webhook_url(sandbox.code),
                hang_s=hang_s,
            )
            sandbox.process = self._process(
                f"sandbox-{sandbox.profile}", argv, role=f"sandbox-{sandbox.profile}"
            )
            sandbox.process.start()
        if self.provider is not None:
            self.provider.process = self._process(
                "sandbox-payments",
                self.provider.argv(
                    store=self.identity.directory / "payments-store.sqlite3",
                    webhook_url=self.payments_webhook_url,
                    hang_s=hang_s,
                ),
                role="sandbox-payments",
            )
            self.provider.process.start()
        for sandbox in self.sandboxes:
            if not sandbox.wait_ready(timeout_s=START_TIMEOUT_S):
                raise StartupFailed(f"sandbox {sandbox.code} did not start; see {sandbox.process.log_path}")
        if self.provider is not None and not self.provider.wait_ready(timeout_s=START_TIMEOUT_S):
            raise StartupFailed(f"the payment provider did not start; see {self.provider.process.log_path}")

    def _gunicorn(self, name: str, bind: str) -> ManagedProcess:
        argv = [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            bind,
            "--workers",
            str(self.config.web_workers),
            "--threads",
            "4",
            "--timeout",
            "60",
            "--graceful-timeout",
            "5",
            "--no-control-socket",
            "--log-level",
            "warning",
        ]
        return self._process(name, argv, role=name)

    def start_system(self) -> None:
        self.mail = self._mail_sink("mail").start()
        self.web = self._gunicorn("web", f"127.0.0.1:{self.web_port}").start()
        self.webhooks = self._gunicorn("webhooks", f"127.0.0.1:{self.webhook_port}").start()
        self.events = self._process(
            "events",
            events_command(port=self.events_port),
            role="events",
        ).start()
        for index in range(self.config.workers):
            self.workers.append(self._worker(f"worker-{index + 1}").start())
        self.scheduler = self._scheduler("scheduler").start()
        self.wait_mail_ready()
        self.wait_ready(
            servers=[
                (self.web, self.web_url),
                (self.webhooks, f"http://127.0.0.1:{self.webhook_port}"),
                (self.events, self.events_url),
            ],
            schedulers=[self.scheduler],
        )

    def _mail_sink(self, name: str) -> ManagedProcess:
        """The customers' mail provider: every message kept as an .eml file in the run's directory."""
        argv = [
            sys.executable,
            "manage.py",
            "run_mail_sink",
            "--host",
            self.mail_host,
            "--port",
            str(self.mail_port),
            "--dir",
            str(self.mail_dir),
        ]
        return self._process(name, argv, role=name)

    def wait_mail_ready(self) -> None:
        assert self.mail is not None
        listening = partial(_listening, self.mail, self.mail_host, self.mail_port)
        if not wait_until(listening, timeout_s=START_TIMEOUT_S):
            raise StartupFailed(f"the mail sink did not listen; see {self.mail.log_path}")

    def wait_ready(
        self, *, servers: list[tuple[ManagedProcess, str]], schedulers: list[ManagedProcess]
    ) -> None:
        """Every server answers /healthz, every worker booted, every scheduler still runs."""
        for server, base_url in servers:
            if not wait_until(partial(_healthy, server, base_url), timeout_s=START_TIMEOUT_S, interval_s=0.3):
                raise StartupFailed(f"{server.name} did not become healthy; see {server.log_path}")
        for worker in self.workers:
            if not worker.wait_for_log(WORKER_READY, timeout_s=START_TIMEOUT_S):
                raise StartupFailed(f"{worker.name} did not boot; see {worker.log_path}")
        for scheduler in schedulers:
            if not scheduler.alive:
                raise StartupFailed(f"{scheduler.name} exited; see {scheduler.log_path}")

    def _scheduler(self, name: str) -> ManagedProcess:
        return self._process(
            name,
            [
                sys.executable,
                "manage.py",
                "run_scheduler",
                "--interval",
                f"{self.config.timing.sweep_interval_s:g}",
            ],
            role=name,
        )

    def _worker(self, name: str) -> ManagedProcess:
        return self._process(
            name,
            [
                sys.executable,
                "manage.py",
                "rundramatiq",
                "--processes",
                "1",
                "--threads",
                str(self.config.worker_threads),
                "--worker-shutdown-timeout",
                "5000",
            ],
            role=name,
        )

    # --- chaos -----------------------------------------------------------------------------
    def alive_workers(self) -> list[int]:
        with self._lock:
            return [i for i, worker in enumerate(self.workers) if worker.alive]

    def kill_worker(self, index: int) -> int | None:
        """SIGKILL one worker's whole process group; return the pid it had."""
        with self._lock:
            worker = self.workers[index]
            pid = worker.pid
            worker.kill()
            return pid

    def restart_worker(self, index: int) -> int | None:
        with self._lock:
            worker = self.workers[index]
            if not worker.alive:
                worker.start()
            return worker.pid

    def servers(self) -> list[ManagedProcess | None]:
        """Our servers: the customers' web and events processes, the partners' webhook receiver."""
        return [self.web, self.webhooks, self.events]

    def schedulers(self) -> list[ManagedProcess | None]:
        return [self.scheduler]

    def pgids(self) -> set[int]:
        """Process groups of the system under test (not the sandboxes: they are partners)."""
        with self._lock:
            processes = [*self.servers(), *self.schedulers(), *self.workers]
            return {p.pid for p in processes if p is not None and p.pid is not None}

    def crashed(self) -> list[str]:
        """Processes that died without being killed by us (web, webhooks, scheduler, sandboxes)."""
        watched = [*self.servers(), *self.schedulers(), *self._partner_processes(), self.mail]
        return [p.name for p in watched if p is not None and p.popen is not None and not p.alive]

    # --- stop ------------------------------------------------------------------------------
    def stop_movers(self) -> None:
        """Stop what changes bookings on its own (the scheduler first, so nothing new is queued,
        then the workers); the servers stay up, for the customers' clients to catch up."""
        _stop_together(self.schedulers())
        with self._lock:
            _stop_together(list(self.workers))

    def stop_system(self) -> None:
        """Stop our processes (not the partners): the scheduler first, so nothing new is queued."""
        _stop_together(self.schedulers())
        _stop_together([*self.workers, *self.servers()])

    def stop_sandboxes(self) -> None:
        """The partners, and the mail provider."""
        _stop_together([*self._partner_processes(), self.mail])

    def _partner_processes(self) -> list[ManagedProcess | None]:
        """The sandbox partners', and the payment provider's."""
        provider = [self.provider.process] if self.provider is not None else []
        return [*(s.process for s in self.sandboxes), *provider]

    def stop_all(self) -> None:
        self.stop_system()
        self.stop_sandboxes()
        self.redis.stop()


def _healthy(server: ManagedProcess, base_url: str) -> bool:
    if not server.alive:
        return False
    try:
        return requests.get(f"{base_url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _listening(process: ManagedProcess, host: str, port: int) -> bool:
    if not process.alive:
        return False
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _stop_together(processes: list[ManagedProcess | None]) -> None:
    running = [p for p in processes if p is not None]
    for process in running:
        process.request_stop()
    for process in running:
        process.finish_stop()
