"""Assemble one sandbox partner and run it on cheroot until SIGTERM/SIGINT.

`python -m sandbox.server --profile reference --port 8101 --store var/p.sqlite3 ...` (or `legacy`, or
`payments`) runs it without Django; `manage.py run_sandbox_partner` takes the same options.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from sandbox.app import SandboxApp
from sandbox.cli import ConfigError, add_arguments, config_from_options
from sandbox.clock import PartnerClock
from sandbox.config import SandboxConfig
from sandbox.control import Control, catalogue_json, reservation_truth
from sandbox.faults import Faults
from sandbox.initiatives import Initiatives
from sandbox.ledger import Ledger
from sandbox.legacy import LegacyProtocol
from sandbox.listener import JOIN_TIMEOUT_S, Listener
from sandbox.payment_ledger import PaymentLedger
from sandbox.payments import PaymentsProtocol
from sandbox.reference import GARBAGE, ReferenceProtocol, render
from sandbox.store import Store, StoreProfileError
from sandbox.stripe_wire import stripe_signer
from sandbox.webhooks import Outbox, ReservationOutbox, standard_webhooks_signer
from sandbox.wire import ReservationWire, Route, WireProtocol

logger = logging.getLogger("sandbox")


class Worker(threading.Thread):
    """Runs `step` again and again; `step` returns how long to sleep unless woken earlier."""

    def __init__(self, name: str, step: Callable[[], float], stopping: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._step = step
        self._stopping = stopping
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()  # before the step, so a wake during it is not lost
            try:
                wait = self._step()
            except Exception:
                logger.exception("%s step failed", self.name)
                wait = 1.0
            if wait > 0:
                self._wake.wait(wait)


class Sandbox:
    """One partner: store, faults, its profile's rules and protocol, background threads, the port."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.stopping = threading.Event()
        self.store = Store(config.store, config.profile)
        self.faults = Faults(config.faults)
        self.clock = PartnerClock(self.faults.skew_s, ZoneInfo(config.timezone))
        self.workers: list[Worker] = []
        self.protocol: WireProtocol
        if config.profile == "payments":
            self.protocol, truth = self._assemble_payments()
        else:
            self.protocol, truth = self._assemble_reservations()
        control = Control(
            protocol=self.protocol,
            store=self.store,
            faults=self.faults,
            info=self._info(),
            truth=truth,
            on_faults_changed=self._wake_all,
        )
        self.app = SandboxApp(
            protocol=self.protocol,
            control_routes=control.routes(),
            faults=self.faults,
            clock=self.clock,
            store=self.store,
            api_key=config.api_key,
            hang_s=config.hang_s,
            stopping=self.stopping,
        )
        self.listener = Listener(
            host=config.host,
            port=config.port,
            app=self.app,
            threads=config.threads,
            server_name=f"sandbox-{config.profile}",
            faults=self.faults,
            store=self.store,
            stopping=self.stopping,
        )
        self._add_worker("sandbox-outage", self.listener.watch_outage)

    def _add_worker(self, name: str, step: Callable[[], float]) -> Worker:
        worker = Worker(name, step, self.stopping)
        self.workers.append(worker)
        return worker

    def _outbox_options(self) -> dict[str, Any]:
        return {"store": self.store, "faults": self.faults, "clock": self.clock, "stopping": self.stopping}

    def _assemble_reservations(self) -> tuple[WireProtocol, list[Route]]:
        """A booking partner (`reference` or `legacy`): reservations, settling, its own initiatives."""
        config = self.config
        outbox: ReservationOutbox | None = None
        if config.profile == "reference" and config.webhook_url and config.webhook_secret:
            outbox = ReservationOutbox(
                url=config.webhook_url,
                sign=standard_webhooks_signer(config.webhook_secret),
                render=lambda r: render(r, self.clock),
                garbage=GARBAGE,
                **self._outbox_options(),
            )
        ledger = Ledger(
            store=self.store,
            faults=self.faults,
            clock=self.clock,
            catalogue=config.catalogue,
            outbox=outbox,
        )
        ledger.release_stale_keys()
        initiatives = Initiatives(ledger=ledger)
        ledger.initiatives = initiatives
        protocol: ReservationWire
        if config.profile == "reference":
            protocol = ReferenceProtocol(
                ledger=ledger,
                outbox=outbox,
                faults=self.faults,
                clock=self.clock,
                lookup_by_reference=config.lookup_by_reference,
            )
        else:
            protocol = LegacyProtocol(ledger=ledger, clock=self.clock)
        ledger.on_pending = self._add_worker("sandbox-settler", ledger.settle_due).wake
        initiatives.wake = self._add_worker("sandbox-initiatives", initiatives.run_due).wake
        if outbox is not None:
            outbox.wake = self._add_worker("sandbox-webhooks", outbox.deliver_due).wake
        return protocol, [reservation_truth(protocol, ledger)]

    def _assemble_payments(self) -> tuple[WireProtocol, list[Route]]:
        """The payment provider: intents, charges, refunds, expiring authorizations, failing refunds,
        Stripe's wire."""
        config = self.config
        outbox: Outbox | None = None
        if config.webhook_url and config.webhook_secret:
            outbox = Outbox(
                url=config.webhook_url, sign=stripe_signer(config.webhook_secret), **self._outbox_options()
            )
        ledger = PaymentLedger(store=self.store, faults=self.faults, clock=self.clock, outbox=outbox)
        protocol = PaymentsProtocol(ledger=ledger, faults=self.faults)
        self._add_worker("sandbox-due", ledger.run_due)
        protocol.wake_reconciler = self._add_worker("sandbox-reconcile", protocol.reconcile_due).wake
        if outbox is not None:
            outbox.wake = self._add_worker("sandbox-webhooks", outbox.deliver_due).wake
        return protocol, protocol.truth_routes()

    def _info(self) -> dict[str, Any]:
        return {
            "profile": self.config.profile,
            "timezone": self.config.timezone,
            "webhook_url": self.config.webhook_url,
            "hang_s": self.config.hang_s,
            "lookup_by_reference": self.config.lookup_by_reference,
            "products": catalogue_json(self.config.catalogue),
        }

    def _wake_all(self) -> None:
        for worker in self.workers:
            worker.wake()

    def start(self) -> None:
        self.listener.start()
        for worker in self.workers:
            worker.start()
        logger.info(
            "sandbox partner %s listening on http://%s:%s (store %s)",
            self.config.profile,
            self.config.host,
            self.listener.port,
            self.config.store,
        )

    def stop(self) -> None:
        self.stopping.set()  # wakes hung requests, latency sleeps and the workers
        self._wake_all()
        self.listener.stop()
        for worker in self.workers:
            worker.join(JOIN_TIMEOUT_S)
        # A sender stuck in a slow delivery keeps its connection; process exit closes it.
        if not any(worker.is_alive() for worker in self.workers):
            self.store.close()
        logger.info("sandbox partner %s stopped", self.config.profile)


class StartError(RuntimeError):
    """The partner could not start: its store or its port, said in one line (no traceback)."""


def run(config: SandboxConfig) -> int:
    """Serve until SIGTERM or SIGINT, then stop cleanly; return the exit status. `StartError`
    when its store cannot be opened or its port taken."""
    try:
        sandbox = Sandbox(config)
    except (sqlite3.Error, OSError, StoreProfileError) as exc:
        raise StartError(f"could not open its store {config.store}: {exc}") from exc
    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        sandbox.start()
    except OSError as exc:  # the port is taken (or the host not ours): no worker started yet
        sandbox.store.close()
        raise StartError(f"could not listen on {config.host}:{config.port}: {exc}") from exc
    while not stop_requested.wait(0.5):  # a timed wait keeps the main thread responsive
        pass
    sandbox.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run one sandbox partner.")
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        config = config_from_options(options)
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return run(config)
    except StartError as exc:
        parser.exit(1, f"{parser.prog}: sandbox partner {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
