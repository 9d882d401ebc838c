"""One chaos run, start to verdict.

1. set-up: the run's directory, database (migrated), Redis, sandbox partners with their faults,
   registered under codes unique to the run; customers and tokens;
2. the system: gunicorn, the events process, Dramatiq workers, the scheduler, the SMTP sink;
   every customer's clients follow their bookings (`chaos.watchers`);
3. load: bookings through the HTTP API while workers are SIGKILLed, Redis restarts once and the
   database connections drop once;
4. settle: until every booking is at rest and no work (mail included) is owed (bounded);
5. stop what moves bookings, let the customers' clients catch up, stop the rest, read each
   partner's ground truth and the mail sink, check the invariants.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import threading
import time
from contextlib import suppress
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import Any, Protocol

import dramatiq
from django.apps import apps
from rich.console import Console

from chaos import checks, database, logscan, snapshot
from chaos.config import ChaosConfig, RunIdentity, new_run_id
from chaos.disruptions import Disruption, Disruptor
from chaos.faults import FaultPlan, build_plan
from chaos.load import (
    BookingClient,
    ClientLedger,
    Customer,
    KeyRecord,
    LoadGenerator,
    PlannedBooking,
    create_customers,
    plan_bookings,
    run_offers,
)
from chaos.model import Snapshot
from chaos.payments import PaymentProvider, money_truth, provider_faults
from chaos.progress import ProgressDisplay
from chaos.redis_ops import EmbeddedRedisHandle, ExternalRedisHandle, redis_handle
from chaos.report import RunReport
from chaos.sandboxes import SandboxPartner
from chaos.stack import Stack, StartupFailed
from chaos.watchers import ShownLog, Watchers

MAX_CONCURRENCY_PER_PARTNER = 16


class DisruptionSource(Protocol):
    """A thread that disrupts the system during the load and writes down what it did."""

    events: list[Disruption]
    errors: list[str]

    def start(self) -> None: ...

    def halt(self) -> None: ...

    def counts(self) -> dict[str, int]: ...


class ChaosRun:
    def __init__(self, config: ChaosConfig, *, console: Console) -> None:
        self.config = config
        self.console = console
        run_id = new_run_id()
        self.identity = RunIdentity(run_id=run_id, directory=(config.run_root / run_id).resolve())
        self.ledger = ClientLedger()
        self.shown: ShownLog | None = None  # what the customers were shown (None: nobody watched)
        self.watchers: Watchers | None = None
        self.stack: Stack | None = None
        self.sandboxes: list[SandboxPartner] = []
        self.provider: PaymentProvider | None = None  # the payment provider (None: nobody pays)
        self.own_database: str | None = None
        self.snapshot: Snapshot | None = None  # what the checks judged
        self.original_database = database.current_name()
        self.report = RunReport(
            run_id=run_id,
            run_dir=str(self.identity.directory),
            config=_config_dict(config),
            environment={},
        )

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> RunReport:
        database.check_supported(allow_sqlite=self.config.allow_sqlite)
        self.identity.directory.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            self._run()
        except StartupFailed as exc:
            self.report.harness_errors.append(f"startup failed: {exc}")
        finally:
            self._tear_down()
        self.report.log_errors = logscan.scan(self.identity.directory)
        self.report.phases["run_s"] = round(time.monotonic() - started, 1)
        self.report.write_json(self.identity.directory / "report.json")
        if self.config.json_path:
            self.report.write_json(self.config.json_path)
        return self.report

    def _run(self) -> None:
        config, phases = self.config, self.report.phases
        started = time.monotonic()
        database_url = self._database()
        redis = self._redis()
        redis.start()
        self.sandboxes = [
            self._sandbox(
                profile=profile,
                code=self.identity.partner_code(profile),
                plan=build_plan(
                    profile,
                    fault_rate=config.fault_rate,
                    time_scale=config.time_scale,
                    seed=config.seed,
                    overrides=config.fault_overrides,
                ),
            )
            for profile in config.profiles
        ]
        self.provider = self._provider()
        self.stack = self._stack(database_url=database_url, redis=redis)
        self.report.environment = self._environment(redis.mode)
        self._say(
            f"chaos run {self.identity.run_id}: database {database.vendor()} {database.current_name()}, "
            f"Redis {redis.mode}, logs in {self.identity.directory}"
        )
        self.stack.start_sandboxes()
        for sandbox in self.sandboxes:
            sandbox.set_faults(sandbox.plan.settings)
            sandbox.register(
                connect_timeout_s=config.timing.connect_timeout_s,
                read_timeout_s=config.timing.read_timeout_s,
                max_concurrency=MAX_CONCURRENCY_PER_PARTNER,
            )
        if self.provider is not None:
            self.provider.set_faults()
        customers = create_customers(self.identity, config.customer_count)
        offers = run_offers({s.code: s.profile for s in self.sandboxes})
        planned = plan_bookings(
            config=config,
            identity=self.identity,
            customers=customers,
            offers=offers,
            pays=self.provider is not None,
        )
        self.stack.start_system()
        self._start_watchers(customers)
        phases["startup_s"] = round(time.monotonic() - started, 1)

        generator = LoadGenerator(
            client=self._client(),
            concurrency=config.concurrency,
            duration_s=config.duration_s,
            on_accepted=self._follow if self.watchers is not None else None,
        )
        load_done = threading.Event()
        disruptors = self._disruptors(load_done)
        codes = [s.code for s in self.sandboxes]

        def poll() -> dict[str, Any]:
            counts = snapshot.live_counts(codes, compensation_max_tries=_compensation_max_tries())
            disrupted = {k: v for d in disruptors for k, v in d.counts().items()}
            return {"states": counts, "accepted": self.ledger.counts()["accepted"], **disrupted}

        live = config.live if config.live is not None else self.console.is_terminal
        with ProgressDisplay(console=self.console, live=live, total=config.bookings, poll=poll) as display:
            display.set_phase("load")
            load_started = time.monotonic()
            for disruptor in disruptors:
                disruptor.start()
            try:
                generator.run(planned)
            finally:
                load_done.set()
            phases["load_s"] = round(time.monotonic() - load_started, 1)
            display.set_phase("disruptions (tail)")
            self._disruption_tail(disruptors)
            display.set_phase("settle")
            self._settle(codes)
            display.set_phase("audit tail")
            self._audit_tail(codes)
            display.set_phase("stopping")
        events = [e for d in disruptors for e in d.events]
        self.report.disruptions = [e.as_dict() for e in sorted(events, key=lambda e: e.at_s)]
        self.report.harness_errors += [error for d in disruptors for error in d.errors]
        self.report.clients = self.ledger.counts()
        self._verdict(codes)

    def _database(self) -> str:
        if self.config.own_database:
            self.own_database = f"{self.original_database}_chaos_{self.identity.run_id}"
            url = database.create_own_database(self.own_database)
        else:
            url = database.configured_url()
        database.migrate()
        return url

    # --- what a cluster run (chaos/cluster) replaces ------------------------------------------
    def _redis(self) -> EmbeddedRedisHandle | ExternalRedisHandle:
        return redis_handle(os.environ.get("REDIS_URL", ""), self.identity.directory)

    def _sandbox(self, *, profile: str, code: str, plan: FaultPlan) -> SandboxPartner:
        return SandboxPartner(profile=profile, code=code, plan=plan)

    def _provider(self) -> PaymentProvider | None:
        """The payment provider, beside the partners."""
        if not self.config.payments:
            return None
        config = self.config
        faults = provider_faults(
            fault_rate=config.fault_rate,
            time_scale=config.time_scale,
            seed=config.seed,
            overrides=config.fault_overrides,
        )
        return PaymentProvider(faults=faults, host=self._partners_address())

    def _partners_address(self) -> str:
        """Where the sandbox partners, the payment provider and the mail sink listen."""
        return "127.0.0.1"

    def _stack(self, *, database_url: str, redis: EmbeddedRedisHandle | ExternalRedisHandle) -> Stack:
        return Stack(
            config=self.config,
            identity=self.identity,
            database_url=database_url,
            redis=redis,
            sandboxes=self.sandboxes,
            provider=self.provider,
        )

    def _client(self) -> BookingClient:
        assert self.stack is not None
        return BookingClient(
            base_url=self.stack.web_url, behaviour=self.config.client, ledger=self.ledger, shown=self.shown
        )

    def _start_watchers(self, customers: list[Customer]) -> None:
        """Every customer's stream open before their first booking (a stack without the events
        process, such as a cluster's, is not watched)."""
        assert self.stack is not None
        watch = self.config.watch
        if not watch.enabled or self.stack.events is None:
            return
        self.shown = ShownLog()
        self.watchers = Watchers(
            events_url=self.stack.events_url,
            web_url=self.stack.web_url,
            log=self.shown,
            bookings=self.config.bookings,
            booking_streams=watch.booking_streams,
            pollers=watch.pollers,
            rest_poll_s=watch.rest_poll_s,
        )
        self.watchers.start()
        for customer in customers:
            self.watchers.follow_customer(customer.username, customer.token)

    def _follow(self, planned: PlannedBooking, record: KeyRecord) -> None:
        assert self.watchers is not None
        self.watchers.accepted(
            index=planned.index,
            reference=record.references[0],
            username=planned.customer.username,
            token=planned.customer.token,
        )

    def _disruptors(self, load_done: threading.Event) -> list[DisruptionSource]:
        assert self.stack is not None
        return [
            Disruptor(
                config=self.config,
                identity=self.identity,
                stack=self.stack,
                sandboxes=self.sandboxes,
                load_progress=lambda: self.ledger.counts()["sent"] / max(1, self.config.bookings),
                load_done=load_done,
            )
        ]

    def _disruption_tail(self, disruptors: list[DisruptionSource]) -> None:
        """Keep disrupting a little after the last request, so late work meets kills too."""
        if self.config.kill_workers:
            time.sleep(min(self.config.kill_interval_s * 1.5, 15.0))
        for disruptor in disruptors:
            disruptor.halt()

    def _settle(self, codes: list[str]) -> None:
        """Wait (bounded) until every booking is at rest and nothing is owed for `quiet_s`."""
        started = time.monotonic()
        deadline = started + self.config.effective_settle_timeout_s
        quiet_since: float | None = None
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            assert self.stack is not None
            crashed = self.stack.crashed()
            if crashed:
                self.report.harness_errors.append(f"processes died on their own: {', '.join(crashed)}")
                break
            try:
                counts = snapshot.live_counts(codes, compensation_max_tries=_compensation_max_tries())
            except Exception as exc:  # noqa: BLE001 - keep waiting through a transient database error
                self.report.harness_errors.append(f"settle poll failed once: {exc!r}")
                time.sleep(1.0)
                continue
            at_rest = counts["open"] == 0 and counts["fences"] == 0 and counts["compensations"] == 0
            at_rest = at_rest and counts.get("payments", 0) == 0
            if self.stack.mail is not None:  # mail owed is work owed, where it can be delivered
                at_rest = at_rest and counts["notifications"] == 0
            if not at_rest:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.config.quiet_s:
                break
            time.sleep(0.5)
        self.report.phases.update(
            {
                "settle_s": round(time.monotonic() - started, 1),
                "settled": quiet_since is not None and time.monotonic() - quiet_since >= self.config.quiet_s,
                "at_settle_end": counts,
            }
        )

    def _audit_tail(self, codes: list[str]) -> None:
        """Let what the partners do on their own after the last confirmations (a cancel, a loss,
        minutes later) meet the audit of confirmed bookings within its detection window, then
        settle again: the disagreements check judges every one of them, none left pending."""
        counts = snapshot.live_counts(codes, compensation_max_tries=_compensation_max_tries())
        confirmed = counts.get("confirmed", 0) + counts.get("needs_attention", 0)
        latest = max((s.plan.latest_initiative_s for s in self.sandboxes), default=0.0)
        wait_s = latest + self._detection_window_s(confirmed, codes)
        self.report.phases["audit_tail_s"] = round(wait_s, 1)
        time.sleep(wait_s)
        self._settle(codes)

    def _detection_window_s(self, confirmed: int, codes: list[str]) -> float:
        """The audit's window over the reads the partners answered in this run so far (their
        faults refuse some: `Timing.detection_window_s`), recorded with the share."""
        unanswered = snapshot.unanswered_read_share(codes)
        self.report.phases["unanswered_read_share"] = round(unanswered, 4)
        window = self.config.timing.detection_window_s(confirmed, unanswered_share=unanswered)
        return window + self.config.deadline_slack_s

    def _verdict(self, codes: list[str]) -> None:
        assert self.stack is not None
        started = time.monotonic()
        self._catch_up(codes)
        self.stack.stop_system()  # nothing of ours moves while we look
        truth = {s.code: s.ground_truth() for s in self.sandboxes}
        for sandbox in self.sandboxes:
            self.report.partners[sandbox.code] = {
                "profile": sandbox.profile,
                "faults": sandbox.plan.settings,
                "stats": sandbox.stats(),
            }
        checked_at = datetime.now(UTC)
        self.snapshot = data = snapshot.take(
            sandboxes=self.sandboxes,
            ledger=self.ledger,
            truth=truth,
            compensation_max_tries=_compensation_max_tries(),
            run_dir=self.identity.directory,
            shown=self.shown.views() if self.shown is not None else None,
            followers=self.watchers.followers() if self.watchers is not None else None,
            mail_dir=self.stack.mail_dir if self.stack.mail is not None else None,
        )
        if self.provider is not None:
            data.money = money_truth(codes, self.provider)
            self.report.partners["payments"] = {
                "profile": "payments",
                "faults": self.provider.faults,
                "stats": self.provider.stats(),
            }
        ever_confirmed = sum(1 for b in data.bookings.values() if b.first_reached({"confirmed"}))
        self.report.checks = checks.run_all(
            data,
            allowed=checks.allowed_transitions(),
            limits=checks.Limits(
                allowance_s=self.config.deadline_allowance_s,
                detection_window_s=self._detection_window_s(ever_confirmed, codes),
                max_retries=_most_retries(),
                refused_max_tries=self.config.timing.refused_max_tries,
                compensation_max_tries=_compensation_max_tries(),
            ),
            checked_at=checked_at,
        )
        self.report.phases["verdict_s"] = round(time.monotonic() - started, 1)

    def _catch_up(self, codes: list[str]) -> None:
        """Stop what moves bookings, then give the customers' clients (whose servers still run)
        a bounded time to show each booking's final view; record what they were shown."""
        assert self.stack is not None
        if self.watchers is None or self.shown is None:
            return
        self.stack.stop_movers()
        caught_up = self.watchers.catch_up(
            snapshot.final_versions(codes), timeout_s=self.config.watch.catch_up_s
        )
        self.watchers.stop()
        self.shown.write_jsonl(self.identity.directory / "shown.jsonl")
        self.report.watchers = {**self.watchers.figures(), "catch_up": caught_up}

    def _tear_down(self) -> None:
        if self.watchers is not None:
            self.watchers.stop()
        if self.stack is not None:
            self.stack.stop_all()
            try:
                self.report.phases["redis_keys_left_deleted"] = self.stack.redis.forget(
                    self.identity.namespace
                )
            except Exception as exc:  # noqa: BLE001 - cleaning up must not hide the verdict
                self.report.harness_errors.append(f"could not delete the run's Redis keys: {exc!r}")
        if not self.own_database:
            return
        if self.config.keep_database or self.report.violations:
            # Evidence: a failed run keeps its database for investigation.
            self.report.phases["kept_database"] = self.own_database
            self._say(
                f'kept database {self.own_database} (drop it with: DROP DATABASE "{self.own_database}")'
            )
        else:
            database.drop_own_database(self.own_database, original=self.original_database)

    # --- helpers ---------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def _environment(self, redis_mode: str) -> dict[str, Any]:
        return {
            "database_vendor": database.vendor(),
            "database_name": database.current_name(),
            "own_database": bool(self.own_database),
            "redis": redis_mode,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }


def _compensation_max_tries() -> int:
    return int(os.environ.get("PARTNER_COMPENSATION_MAX_TRIES", "8"))


def _most_retries() -> int:
    """The most retries any of our actors allows: each declares its own `max_retries`, and a
    retry's log line names only its message, not its actor. (Installed packages' actors, such as
    django_dramatiq's, are sent nothing.)"""
    most = 0
    for app in apps.get_app_configs():
        if app.path.startswith(sys.prefix):
            continue
        with suppress(ModuleNotFoundError):
            module = import_module(f"{app.name}.tasks")
            actors = [a for a in vars(module).values() if isinstance(a, dramatiq.Actor)]
            most = max([most, *(actor.options["max_retries"] for actor in actors)])
    return most


def _config_dict(config: ChaosConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    for key, value in data.items():
        if isinstance(value, Path):
            data[key] = str(value)
    data["fault_overrides"] = [list(o) for o in config.fault_overrides]
    return data
