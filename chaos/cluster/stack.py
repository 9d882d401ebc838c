"""The system under test spread over the cluster's hosts, and clients that use every web host.

Placement (one role per host, as on separate machines):

- `web-N`: the customers' gunicorn on :8000, the partners' and the provider's webhook receiver
  on :8001 and the customers' live streams (the events process) on :8002 (the Procfile's `web`,
  `webhooks` and `events`); the sandboxes and the provider deliver webhooks to web-1's receiver,
  and the harness's customers follow their streams on the last web host;
- `worker-N`: `--workers` Dramatiq worker processes each;
- `scheduler` (and the standby on `scheduler-2`): the sweeper, one sweep at a time by its lock;
- `partners`: whatever stands outside our system: the sandbox partners, the payment provider and
  the customers' mail provider (the SMTP sink); `db` and `broker`: see `services`.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from chaos.cluster.network import Network
from chaos.cluster.plan import ClusterPlan, Host
from chaos.cluster.services import BrokerServer
from chaos.procs import ManagedProcess
from chaos.sandboxes import SandboxPartner
from chaos.stack import Stack
from config.events import command as events_command

WEB_PORT = 8000
WEBHOOK_PORT = 8001
EVENTS_PORT = 8002


@dataclass
class ClusterSandboxPartner(SandboxPartner):
    """A sandbox partner listening on the partners host's address."""

    host: str = "127.0.0.1"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def argv(self, **kwargs: Any) -> list[str]:
        return [*super().argv(**kwargs), "--host", self.host]


class ClusterStack(Stack):
    def __init__(self, *, network: Network, redis: BrokerServer, **kwargs: Any) -> None:
        super().__init__(redis=redis, **kwargs)
        self.network = network
        self.plan: ClusterPlan = network.plan
        self.webs: list[ManagedProcess] = []
        self.receivers: list[ManagedProcess] = []
        self.streams: list[ManagedProcess] = []  # the events processes
        self.sweepers: list[ManagedProcess] = []
        self._placement: dict[str, Host] = {}
        self.mail_host = self.plan.host("partners").address

    @property
    def web_url(self) -> str:
        return self.web_urls[0]

    @property
    def web_urls(self) -> list[str]:
        return [f"http://{h.address}:{WEB_PORT}" for h in self.plan.by_role("web")]

    @property
    def events_url(self) -> str:
        """The last web host's live streams: the one no fault cuts off (`plan.plan_faults`)."""
        return f"http://{self.plan.by_role('web')[-1].address}:{EVENTS_PORT}"

    def webhook_url(self, code: str) -> str:
        return f"http://{self.plan.by_role('web')[0].address}:{WEBHOOK_PORT}/partners/{code}/webhooks/"

    @property
    def payments_webhook_url(self) -> str:
        return f"http://{self.plan.by_role('web')[0].address}:{WEBHOOK_PORT}/payments/webhooks/"

    def _process(self, name: str, argv: list[str], *, role: str) -> ManagedProcess:
        process = super()._process(name, argv, role=role)
        process.argv = self.network.on_host(self._placement[name], argv)
        process.env["ALLOWED_HOSTS"] = ",".join(h.address for h in self.plan.hosts)
        # A host stands for a machine of its own: its workers have no web server to yield to.
        process.env["WORKER_NICE"] = "0"
        return process

    def _place(self, name: str, host: Host) -> str:
        """Decide where the process of this name runs (read by `_process`)."""
        self._placement[name] = host
        return name

    # --- start -----------------------------------------------------------------------------
    def start_sandboxes(self) -> None:
        partners = self.plan.host("partners")
        for sandbox in self.sandboxes:
            self._place(f"sandbox-{sandbox.profile}", partners)
        self._place("sandbox-payments", partners)
        super().start_sandboxes()

    def start_system(self) -> None:
        self.mail = self._mail_sink(self._place("mail", self.plan.host("partners"))).start()
        servers = []
        for n, host in enumerate(self.plan.by_role("web"), start=1):
            web = self._gunicorn(self._place(f"web-{n}", host), f"{host.address}:{WEB_PORT}").start()
            receiver = self._gunicorn(self._place(f"webhooks-{n}", host), f"{host.address}:{WEBHOOK_PORT}")
            stream = self._process(
                self._place(f"events-{n}", host),
                events_command(host=host.address, port=EVENTS_PORT),
                role=f"events-{n}",
            )
            self.webs.append(web)
            self.receivers.append(receiver.start())
            self.streams.append(stream.start())
            servers += [
                (web, f"http://{host.address}:{WEB_PORT}"),
                (receiver, f"http://{host.address}:{WEBHOOK_PORT}"),
                (stream, f"http://{host.address}:{EVENTS_PORT}"),
            ]
        self.events = self.streams[-1]  # the one the customers follow (`events_url`)
        for host in self.plan.by_role("worker"):
            for n in range(1, self.config.workers + 1):
                self.workers.append(self._worker(self._place(f"{host.name}.{n}", host)).start())
        for host in self.plan.by_role("scheduler"):
            self.sweepers.append(self._scheduler(self._place(host.name, host)).start())
        self.wait_mail_ready()
        self.wait_ready(servers=servers, schedulers=self.sweepers)

    def servers(self) -> list[ManagedProcess | None]:
        return [*self.webs, *self.receivers, *self.streams]

    def schedulers(self) -> list[ManagedProcess | None]:
        return list(self.sweepers)


@dataclass(frozen=True)
class RequestRecord:
    started: float  # time.time()
    seconds: float
    host: str
    method: str
    path: str
    outcome: str  # the status code, or the exception's name
    idempotency_key: str


@dataclass
class RequestJournal:
    """Every request the clients sent, to which web host, and what came of it."""

    records: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            self.records.append(record)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self.records)


class FailoverSession(requests.Session):
    """A client that knows every web host: each request goes to the next one in turn, so a retry
    (same Idempotency-Key, same body) always lands on another host than the one that failed."""

    _turn = itertools.count()

    def __init__(self, *, hosts: list[str], journal: RequestJournal) -> None:
        super().__init__()
        self.hosts = hosts
        self.journal = journal
        self._next = next(self._turn) % len(hosts)  # spread the clients' first requests

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        host = self.hosts[self._next]
        self._next = (self._next + 1) % len(self.hosts)
        parts = urlsplit(str(url))
        target = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        headers = kwargs.get("headers") or {}
        started, clock = time.time(), time.monotonic()
        outcome = ""
        try:
            response = super().request(method, target, *args, **kwargs)
            outcome = str(response.status_code)
            return response
        except requests.RequestException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            self.journal.add(
                RequestRecord(
                    started=started,
                    seconds=time.monotonic() - clock,
                    host=host,
                    method=str(method),
                    path=parts.path,
                    outcome=outcome,
                    idempotency_key=str(headers.get("Idempotency-Key", "")),
                )
            )
