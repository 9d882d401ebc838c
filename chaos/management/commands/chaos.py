"""`manage.py chaos`: the real processes under load and faults, then every invariant checked.

Exit status: 0 when every invariant held, 1 on any violation, 2 when the run itself could not be
carried out as asked (a process would not start, a disruption failed). See docs/chaos.md.
"""

from __future__ import annotations

import random
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console

from chaos import report as chaos_report
from chaos.cluster import registry
from chaos.cluster import report as cluster_report
from chaos.cluster.runner import ClusterRun, ClusterUnavailable, check_possible
from chaos.config import PROFILES, ChaosConfig, ClientBehaviour, ClusterOptions, Timing, WatchOptions
from chaos.database import DatabaseNotSupported
from chaos.faults import FaultOptionError, parse_override
from chaos.runner import ChaosRun


def _profiles(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(PROFILES))
    if not chosen or unknown:
        raise CommandError(f"--profiles {text!r}: choose from {', '.join(PROFILES)}")
    return chosen


# A steady arrival rate the default stack (3 workers x 4 threads on two cores) keeps up with
# under every fault; flat out, queues grow without bound and deadlines pass in the queue.
DEFAULT_ARRIVALS_PER_S = 8.0


class Command(BaseCommand):
    help = (
        "Run the whole system (gunicorn, Dramatiq workers, scheduler, sandbox partners) under load "
        "and faults, then check the invariants of docs/design.md against our database and each partner's "
        "ground truth. Exit status 1 on any violation."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        size = parser.add_argument_group("size and pace")
        size.add_argument("--bookings", type=int, default=2000, help="Bookings to request (default 2000).")
        size.add_argument("--concurrency", type=int, default=16, help="Concurrent clients (default 16).")
        size.add_argument("--customers", type=int, default=0, help="Customers (default 2 x concurrency).")
        size.add_argument(
            "--duration",
            type=float,
            default=None,
            help=(
                "Spread the requests over this many seconds (default: bookings / "
                f"{DEFAULT_ARRIVALS_PER_S:g} per second, what two cores sustain with every fault on; "
                "0: flat out, to find where the system saturates)."
            ),
        )
        size.add_argument(
            "--settle-timeout",
            type=float,
            default=0.0,
            help="Longest wait for every booking to come to rest (default: confirmation window + margin).",
        )
        size.add_argument("--profiles", default=",".join(PROFILES), help="Partner profiles (default both).")
        size.add_argument(
            "--seed", type=int, default=None, help="Seed for the load and the faults (default random)."
        )

        faults = parser.add_argument_group("faults")
        faults.add_argument(
            "--fault-rate",
            type=float,
            default=1.0,
            help="Scale every fault rate (default 1.0; 0 makes perfect partners).",
        )
        faults.add_argument(
            "--fault",
            action="append",
            default=[],
            metavar="[PROFILE.]KEY=VALUE",
            help=(
                "Override one sandbox fault, value as JSON, e.g. reference.webhook_delay_s=[0,1200]; "
                "unscoped at every partner, payments.KEY at the payment provider alone "
                "(e.g. payments.refund_refused_rate=0.7, payments.void_refused_rate=0.7)."
            ),
        )
        faults.add_argument(
            "--phase-interval",
            type=float,
            default=10.0,
            help="Switch asynchronous confirmation on/off this often (0: never).",
        )
        faults.add_argument(
            "--time-scale", type=float, default=60.0, help="Partner delays are divided by this."
        )
        faults.add_argument("--no-kill", action="store_true", help="Do not SIGKILL workers.")
        faults.add_argument("--kill-interval", type=float, default=10.0, help="Seconds between worker kills.")
        faults.add_argument("--no-redis-restart", action="store_true")
        faults.add_argument("--no-db-drop", action="store_true")
        faults.add_argument(
            "--no-payments",
            action="store_true",
            help="No payment provider: no booking pays (by default a share pays, chaos/payments.py).",
        )
        faults.add_argument("--client-replay-rate", type=float, default=0.05)
        faults.add_argument("--client-race-rate", type=float, default=0.05)
        faults.add_argument("--cancel-rate", type=float, default=0.03)
        faults.add_argument(
            "--cancel-confirmed-rate",
            type=float,
            default=0.03,
            help="Share of bookings whose customer cancels once it shows confirmed (a refund).",
        )

        system = parser.add_argument_group("system under test")
        system.add_argument("--workers", type=int, default=3, help="Dramatiq worker processes (default 3).")
        system.add_argument("--worker-threads", type=int, default=4)
        system.add_argument(
            "--web-workers", type=int, default=2, help="gunicorn workers of web, and of the webhook receiver."
        )
        system.add_argument(
            "--confirmation-window",
            type=int,
            default=120,
            help="BOOKING_CONFIRMATION_WINDOW_S for the run (> 60: the API refuses shorter).",
        )
        system.add_argument("--sweep-interval", type=float, default=2.0, help="RECONCILE_INTERVAL_S.")
        system.add_argument(
            "--sync-age",
            type=int,
            default=3,
            help="RECONCILE_SYNC_AGE_S: open bookings are synced this often.",
        )
        system.add_argument(
            "--deadline-slack",
            type=float,
            default=5.0,
            help="Seconds allowed beyond deadline + one sweep interval before a booking is late.",
        )
        system.add_argument("--allow-sqlite", action="store_true", help="Run on SQLite anyway.")
        system.add_argument(
            "--own-database", action="store_true", help="Create a fresh PostgreSQL database for the run."
        )
        system.add_argument(
            "--keep-database", action="store_true", help="Keep the --own-database afterwards."
        )
        system.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the children.")

        customers = parser.add_argument_group("the customers' clients (what they are shown, their mail)")
        customers.add_argument(
            "--no-watch",
            action="store_true",
            help="No streams or pollers: the customer checks then observe nothing.",
        )
        customers.add_argument(
            "--watch-streams",
            type=int,
            default=100,
            help="Bookings with a stream of their own, besides every customer's stream (default 100).",
        )
        customers.add_argument(
            "--watch-pollers",
            type=int,
            default=50,
            help="Bookings polled with If-None-Match (default 50).",
        )

        cluster = parser.add_argument_group(
            "cluster (root only: network namespaces, a bridge, cgroups; see docs/chaos.md)"
        )
        cluster.add_argument(
            "--cluster",
            action="store_true",
            help="Every role on a host of its own (its own PostgreSQL and Redis), plus network faults.",
        )
        cluster.add_argument("--web-hosts", type=int, default=2, help="Web hosts (default 2).")
        cluster.add_argument(
            "--worker-hosts", type=int, default=2, help="Worker hosts, --workers processes each (default 2)."
        )
        cluster.add_argument("--no-standby-scheduler", action="store_true", help="No second scheduler host.")
        cluster.add_argument("--no-network-faults", action="store_true", help="No cuts, no partition.")
        for name, default, what in (
            (
                "worker-cut",
                100.0,
                "a worker host is cut off (> the broker's heartbeat timeout, 20 s by default)",
            ),
            ("web-cut", 15.0, "web-1 is cut off"),
            ("broker-cut", 8.0, "the broker host is cut off"),
            (
                "scheduler-cut",
                70.0,
                "the scheduler host is cut off (> the sweeper lock's time to live, three sweep intervals)",
            ),
            ("partition", 20.0, "the partners are unreachable from the last worker host"),
        ):
            cluster.add_argument(f"--{name}", type=float, default=default, help=f"Seconds {what} (0: not).")
        cluster.add_argument("--subnet", default="", help="Default: the first free 10.231.N.0/24.")
        cluster.add_argument(
            "--cleanup",
            action="store_true",
            help="Only remove what crashed cluster runs left (namespaces, links, processes, data).",
        )

        output = parser.add_argument_group("output")
        output.add_argument("--json", dest="json_path", type=Path, help="Write the full report here.")
        output.add_argument("--run-dir", type=Path, default=None, help="Parent of the run's directory.")
        output.add_argument(
            "--live", dest="live", action="store_true", default=None, help="Force the live display."
        )
        output.add_argument(
            "--no-live", dest="live", action="store_false", default=None, help="Plain progress lines."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["cleanup"]:
            self._cleanup()
            return
        config = self._config(options)
        console = Console(file=self.stdout, highlight=False)
        if not console.is_terminal:
            console = Console(file=self.stdout, highlight=False, width=140)  # CI logs: room for tables
        signal.signal(signal.SIGTERM, _interrupt)
        run = ClusterRun(config, console=console) if config.cluster else ChaosRun(config, console=console)
        try:
            result = run.run()
        except (DatabaseNotSupported, ClusterUnavailable) as exc:
            raise CommandError(str(exc), returncode=2) from None
        except KeyboardInterrupt:
            raise CommandError(
                f"interrupted: what the run started was stopped (logs in {run.identity.directory})",
                returncode=130,
            ) from None
        chaos_report.render(result, console)
        if result.cluster:
            cluster_report.render(result, console)
        if config.json_path:
            console.print(f"JSON report: {config.json_path}")
        if result.violations:
            raise SystemExit(1)
        if not result.passed:
            raise SystemExit(2)

    def _cleanup(self) -> None:
        try:
            check_possible()
        except ClusterUnavailable as exc:
            raise CommandError(str(exc), returncode=2) from None
        removed = registry.sweep()
        self.stdout.write("\n".join(removed) if removed else "nothing left by earlier cluster runs")

    def _cluster(self, options: dict[str, Any]) -> ClusterOptions | None:
        if not options["cluster"]:
            return None
        return ClusterOptions(
            web_hosts=options["web_hosts"],
            worker_hosts=options["worker_hosts"],
            standby_scheduler=not options["no_standby_scheduler"],
            network_faults=not options["no_network_faults"],
            worker_cut_s=options["worker_cut"],
            web_cut_s=options["web_cut"],
            broker_cut_s=options["broker_cut"],
            scheduler_cut_s=options["scheduler_cut"],
            partition_s=options["partition"],
            subnet=options["subnet"],
        )

    def _config(self, options: dict[str, Any]) -> ChaosConfig:
        if options["bookings"] < 1 or options["concurrency"] < 1 or options["workers"] < 1:
            raise CommandError("--bookings, --concurrency and --workers must be at least 1")
        if options["confirmation_window"] <= 60:
            raise CommandError(
                "--confirmation-window must exceed 60 s: the API refuses bookings that cannot be "
                "resolved within a minute"
            )
        try:
            overrides = tuple(parse_override(text) for text in options["fault"])
        except FaultOptionError as exc:
            raise CommandError(str(exc)) from None
        seed = options["seed"] if options["seed"] is not None else random.randrange(2**31)
        return ChaosConfig(
            bookings=options["bookings"],
            concurrency=options["concurrency"],
            customers=options["customers"],
            duration_s=(
                options["duration"]
                if options["duration"] is not None
                else options["bookings"] / DEFAULT_ARRIVALS_PER_S
            ),
            settle_timeout_s=options["settle_timeout"],
            profiles=_profiles(options["profiles"]),
            fault_rate=options["fault_rate"],
            fault_overrides=overrides,
            phase_interval_s=options["phase_interval"],
            kill_workers=not options["no_kill"],
            kill_interval_s=options["kill_interval"],
            redis_restart=not options["no_redis_restart"],
            db_drop=not options["no_db_drop"],
            payments=not options["no_payments"],
            workers=options["workers"],
            worker_threads=options["worker_threads"],
            web_workers=options["web_workers"],
            seed=seed,
            json_path=options["json_path"],
            allow_sqlite=options["allow_sqlite"],
            own_database=options["own_database"],
            keep_database=options["keep_database"],
            deadline_slack_s=options["deadline_slack"],
            time_scale=options["time_scale"],
            log_level=options["log_level"],
            run_root=options["run_dir"] or Path(settings.VAR_DIR) / "chaos",
            live=options["live"],
            timing=Timing(
                confirmation_window_s=options["confirmation_window"],
                sweep_interval_s=options["sweep_interval"],
                sync_age_s=options["sync_age"],
            ),
            watch=WatchOptions(
                enabled=not options["no_watch"],
                booking_streams=max(0, options["watch_streams"]),
                pollers=max(0, options["watch_pollers"]),
            ),
            client=ClientBehaviour(
                replay_rate=options["client_replay_rate"],
                race_rate=options["client_race_rate"],
                cancel_rate=options["cancel_rate"],
                cancel_confirmed_rate=options["cancel_confirmed_rate"],
            ),
            cluster=self._cluster(options),
        )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds the run, which stops every process it started
