"""A chaos run on a cluster: the single-host run (chaos.runner) with every role on a host of its
own, the faults between machines on top of the others, and the same checks.

Around the run: the leftovers of crashed runs are swept, this run's registry is claimed, the
network and the cluster's PostgreSQL come up and this process's database connection moves to
it. Whatever happens next (a violation, an exception, Ctrl-C, SIGTERM, SIGHUP), everything the
run created is removed before it returns, with those signals held off while it is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import environ
from django.conf import settings
from django.db import connections
from rich.console import Console

from chaos import database
from chaos.cluster import evidence, kernel, registry
from chaos.cluster.network import Network
from chaos.cluster.partitions import Partitioner
from chaos.cluster.plan import ClusterPlan, build_plan, pick_subnet, plan_faults
from chaos.cluster.services import BrokerServer, PostgresServer, ServiceUnavailable
from chaos.cluster.stack import ClusterSandboxPartner, ClusterStack, FailoverSession, RequestJournal
from chaos.config import ChaosConfig, ClusterOptions
from chaos.faults import FaultPlan
from chaos.load import BookingClient
from chaos.report import RunReport
from chaos.runner import ChaosRun, DisruptionSource
from chaos.stats import summary

DEFAULT_ARRIVALS_PER_S = 8.0  # the command's pace: used to place the faults of a flat-out run
REQUIRED_TOOLS = ("ip", "setpriv", "redis-server")
HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ClusterUnavailable(RuntimeError):
    """The machine cannot host a cluster run (not root, a tool missing)."""


def check_possible() -> None:
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            "--cluster needs root: it creates network namespaces, veth links, a bridge and cgroups "
            "(run it as root, e.g. in a container or VM of its own)"
        )
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        raise ClusterUnavailable(f"--cluster needs {', '.join(missing)} on the PATH")


class ClusterRun(ChaosRun):
    def __init__(self, config: ChaosConfig, *, console: Console) -> None:
        super().__init__(config, console=console)
        self.options: ClusterOptions = config.cluster or ClusterOptions()
        self.registry = registry.Registry(self.identity.run_id)
        self.network: Network | None = None
        self.postgres: PostgresServer | None = None
        self.broker: BrokerServer | None = None
        self.journal = RequestJournal()
        self.partitioner: Partitioner | None = None
        self.cpu_at_load_start: CpuReading | None = None
        self.cpu_at_end: CpuReading | None = None

    @property
    def plan(self) -> ClusterPlan:
        assert self.network is not None
        return self.network.plan

    def run(self) -> RunReport:
        check_possible()
        swept = registry.sweep()
        if swept:
            self._say(f"removed what earlier cluster runs left: {', '.join(swept)}")
        self.identity.directory.mkdir(parents=True, exist_ok=True)
        self.registry.claim(run_dir=self.identity.directory)
        saved_database: dict[str, Any] | None = None
        try:
            with _signals_interrupt():
                try:
                    self._build(swept=swept)
                except (kernel.KernelCommandFailed, ServiceUnavailable) as exc:
                    self.report.harness_errors.append(f"cluster set-up failed: {exc}")
                    return self.report
                assert self.postgres is not None
                saved_database = _point_harness_at(self.postgres.url)
                return super().run()
        finally:
            with _signals_held():
                self._remove_everything(saved_database)

    def _build(self, *, swept: list[str]) -> None:
        """The network, and the database and broker hosts' servers (Redis starts with the run)."""
        plan = build_plan(
            run_id=self.identity.run_id,
            subnet=self.options.subnet or pick_subnet(kernel.networks_in_use()),
            options=self.options,
        )
        self.report.cluster = {"swept_at_start": swept, **plan.as_dict()}
        self._say(f"cluster {plan.prefix}: {len(plan.hosts)} hosts on {plan.subnet}")
        self.network = Network(plan=plan, registry=self.registry)
        self.network.create()
        directory = self.identity.directory
        self.postgres = PostgresServer(network=self.network, host=plan.host("db"), directory=directory)
        self.postgres.init()
        self.postgres.start()
        self.broker = BrokerServer(network=self.network, host=plan.host("broker"), directory=directory)

    # --- the hooks of ChaosRun -------------------------------------------------------------
    def _database(self) -> str:
        assert self.postgres is not None
        database.migrate()
        return self.postgres.url

    def _redis(self) -> BrokerServer:
        assert self.broker is not None
        return self.broker

    def _sandbox(self, *, profile: str, code: str, plan: FaultPlan) -> ClusterSandboxPartner:
        return ClusterSandboxPartner(profile=profile, code=code, plan=plan, host=self._partners_address())

    def _partners_address(self) -> str:
        return self.plan.host("partners").address

    def _stack(self, *, database_url: str, redis: BrokerServer) -> ClusterStack:
        assert self.network is not None
        return ClusterStack(
            network=self.network,
            redis=redis,
            config=self.config,
            identity=self.identity,
            database_url=database_url,
            sandboxes=self.sandboxes,
            provider=self.provider,
        )

    def _client(self) -> BookingClient:
        assert isinstance(self.stack, ClusterStack)
        hosts = [url.removeprefix("http://") for url in self.stack.web_urls]
        return BookingClient(
            base_url=self.stack.web_url,
            behaviour=self.config.client,
            ledger=self.ledger,
            session_factory=lambda: FailoverSession(hosts=hosts, journal=self.journal),
        )

    def _disruptors(self, load_done: threading.Event) -> list[DisruptionSource]:
        """The network faults first: halting them waits for their schedule, while kills go on."""
        assert self.network is not None and self.broker is not None
        load_s = self.config.duration_s or self.config.bookings / DEFAULT_ARRIVALS_PER_S
        self.partitioner = Partitioner(
            faults=plan_faults(plan=self.plan, options=self.options, load_s=load_s),
            network=self.network,
            broker=self.broker,
            namespace=self.identity.namespace,
        )
        self.cpu_at_load_start = CpuReading.take(self.network)  # just before the load: start-up excluded
        return [self.partitioner, *super()._disruptors(load_done)]

    def _verdict(self, codes: list[str]) -> None:
        assert self.network is not None
        self.cpu_at_end = CpuReading.take(self.network)
        super()._verdict(codes)
        self.report.cluster.update(self._figures(codes))

    def _tear_down(self) -> None:
        super()._tear_down()
        if self.postgres is None:
            return
        if self.report.violations or self.config.keep_database:
            dump = self.identity.directory / "database.sql"
            try:
                self.postgres.dump(dump)
                self.report.cluster["database_dump"] = str(dump)
            except Exception as exc:  # noqa: BLE001 - evidence is best effort; cleaning up goes on
                self.report.harness_errors.append(f"could not dump the database: {exc!r}")

    # --- figures ---------------------------------------------------------------------------
    def _figures(self, codes: list[str]) -> dict[str, Any]:
        assert self.partitioner is not None and self.snapshot is not None
        requests = self.journal.snapshot()
        scheduler_logs = {
            h.name: evidence.log_events(self.identity.directory / f"{h.name}.log")
            for h in self.plan.by_role("scheduler")
        }
        attempts = evidence.attempt_rows(codes)
        references = evidence.booking_references(codes)
        faults = [
            evidence.fault_figures(
                record,
                started_at=self.partitioner.started_at,
                samples=self.partitioner.samples,
                requests=requests,
                attempts=attempts,
                snapshot=self.snapshot,
                scheduler_logs=scheduler_logs,
                addresses={h.name: h.address for h in self.plan.hosts},
                references=references,
            )
            for record in self.partitioner.records
        ]
        throughput = self._throughput(requests)
        return {
            "network_faults": faults,
            "throughput": throughput,
            "cpu": self._cpu(bookings=len(self.snapshot.bookings), requests=len(requests)),
        }

    def _throughput(self, requests: list[evidence.RequestRecord]) -> dict[str, Any]:
        assert self.partitioner is not None and self.snapshot is not None
        started = self.partitioner.started_at
        confirmed_at = [
            event.occurred_at.timestamp()
            for booking in self.snapshot.bookings.values()
            if (event := booking.first_reached({"confirmed"})) is not None
        ]
        posts = [r for r in requests if r.method == "POST" and r.path.endswith("/bookings")]
        by_host: dict[str, int] = {}
        for r in requests:
            by_host[r.host] = by_host.get(r.host, 0) + 1
        span = max(confirmed_at) - started if confirmed_at else 0.0
        return {
            "confirmed": len(confirmed_at),
            "confirmed_per_s": round(len(confirmed_at) / span, 2) if span > 0 else None,
            "last_confirmation_after_s": round(span, 1),
            "requests": len(requests),
            "requests_by_host": by_host,
            "booking_post_202_s": summary([r.seconds for r in posts if r.outcome == "202"]),
            "booking_post_failed": sum(1 for r in posts if not r.outcome.startswith(("2", "4"))),
        }

    def _cpu(self, *, bookings: int, requests: int) -> dict[str, Any]:
        """CPU seconds each host used from the load's start to the verdict, per booking and request,
        and what the rest of the machine used meanwhile (other people's work shares its cores)."""
        start, end = self.cpu_at_load_start, self.cpu_at_end
        if start is None or end is None:
            return {"measured": False}
        used = {
            host: round(after - before, 2)
            for host, after in end.hosts.items()
            if after is not None and (before := start.hosts.get(host)) is not None
        }
        if not used:
            return {"measured": False}
        by_role: dict[str, float] = {}
        for host in self.plan.hosts:
            by_role[host.role] = round(by_role.get(host.role, 0.0) + used.get(host.name, 0.0), 2)
        machine = end.machine - start.machine
        harness = end.harness - start.harness
        return {
            "measured": True,
            "seconds_by_host": used,
            "seconds_by_role": by_role,
            "ms_per_booking": {
                role: round(1000 * s / bookings, 2) if bookings else None for role, s in by_role.items()
            },
            "web_ms_per_request": round(1000 * by_role.get("web", 0.0) / requests, 2) if requests else None,
            "wall_s": round(end.at - start.at, 1),
            "machine_busy_s": round(machine, 1),
            "harness_s": round(harness, 1),
            "outside_the_run_s": round(machine - sum(used.values()) - harness, 1),
        }

    # --- cleanup ---------------------------------------------------------------------------
    def _remove_everything(self, saved_database: dict[str, Any] | None) -> None:
        with contextlib.suppress(Exception):
            connections.close_all()
        if self.postgres is not None:
            try:
                self.postgres.stop()
            except Exception as exc:  # noqa: BLE001 - the namespace's removal kills it anyway
                self.report.harness_errors.append(f"PostgreSQL did not stop cleanly: {exc!r}")
        if saved_database is not None:
            _restore_harness(saved_database)
        removed = self.registry.teardown()
        left = [r for r in removed if "NOT removed" in r]
        self.report.cluster["cleanup"] = {"removed": len(removed) - len(left), "not_removed": left}
        if left:
            self.report.harness_errors.append(f"cleanup left: {'; '.join(left)}")
        self.report.write_json(self.identity.directory / "report.json")
        if self.config.json_path:
            self.report.write_json(self.config.json_path)


@dataclass(frozen=True)
class CpuReading:
    """CPU seconds so far: each host's cgroup, the whole machine, and this process (the clients)."""

    at: float
    hosts: dict[str, float | None]
    machine: float
    harness: float

    @classmethod
    def take(cls, network: Network) -> CpuReading:
        return cls(
            at=time.monotonic(),
            hosts=network.cpu_seconds(),
            machine=kernel.machine_cpu_seconds(),
            harness=time.process_time(),
        )


def _point_harness_at(url: str) -> dict[str, Any]:
    """Move this process's default connection to `url`; return the settings it had.

    The settings dict is changed in place (Django's connection handler shares it), and the
    thread's connection object is dropped so that the next use builds one of the new backend.
    """
    connections.close_all()
    current = settings.DATABASES["default"]
    saved = dict(current)
    current.update(environ.Env.db_url_config(url))
    current["OPTIONS"] = {}
    del connections["default"]
    return saved


def _restore_harness(saved: dict[str, Any]) -> None:
    connections.close_all()
    settings.DATABASES["default"].clear()
    settings.DATABASES["default"].update(saved)
    with contextlib.suppress(AttributeError):
        del connections["default"]


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds the run through its finally blocks, which remove everything


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP interrupt the run as Ctrl-C does."""
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold off Ctrl-C, SIGTERM and SIGHUP while the run removes what it created."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD_SIGNALS)
