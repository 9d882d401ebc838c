"""A chaos run's options, and the settings every child process of the run receives.

The children are configured only through the environment (config/settings/base.py reads every
tunable from it), with short deadlines and intervals so that a run fits in minutes, and with
Redis namespaces of their own so that a run never shares queues, locks or caches with another.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("reference", "legacy")
# States in which a booking is at rest: automation owes it nothing more (docs/design.md, invariant 7).
SETTLED_STATES = frozenset({"confirmed", "rejected", "failed", "expired", "cancelled", "needs_attention"})
# The children's settings module: `config.settings.test` pins a shared Dramatiq namespace, which
# would mix this run's queues with the test suite's.
DEFAULT_CHILD_SETTINGS = "config.settings.dev"
# The most of the partners' reads the detection window allows for going unanswered.
MAX_UNANSWERED_SHARE = 0.5


def new_run_id() -> str:
    return secrets.token_hex(3)


@dataclass(frozen=True)
class Timing:
    """Short deadlines and intervals for the children (seconds)."""

    confirmation_window_s: int = 120
    sweep_interval_s: float = 2.0
    sync_age_s: int = 3
    submit_grace_s: int = 3
    sync_delay_s: float = 1.0
    retry_min_s: float = 0.2
    retry_base_s: float = 0.5
    retry_max_s: float = 5.0
    listing_settle_s: float = 2.0
    inbound_stale_s: int = 5
    breaker_reset_s: float = 3.0
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 2.0
    # The audit of confirmed bookings: each re-read this often, at most `audit_batch` per sweep
    # (about a third of what the partners' concurrency caps allow at their injected latency, so
    # that it never crowds the load); past a few hundred confirmed bookings the batch sets the pace.
    audit_age_s: int = 10
    audit_batch: int = 20
    lost_recheck_s: float = 3.0
    refused_max_tries: int = 3
    # Notifications: a lost message is queued again after `notification_requeue_after_s`; an
    # attempt whose worker died is, after `notification_claim_timeout_s` (longer than the actor's
    # 60 s time limit, as in production), put back for another try if it never handed the mail
    # over, else settled `delivery_unknown`.
    notification_requeue_after_s: int = 10
    notification_claim_timeout_s: int = 70
    notification_retry_base_s: float = 1.0
    notification_retry_max_s: float = 5.0

    @property
    def customer_slow_after_s(self) -> int:
        """ "Taking longer than usual": a third of the confirmation window, as production's 10
        minutes are of its 30, so that the slowest bookings of a run meet it."""
        return max(1, self.confirmation_window_s // 3)

    def env(self) -> dict[str, str]:
        return {
            "BOOKING_CONFIRMATION_WINDOW_S": str(self.confirmation_window_s),
            "BOOKING_SUBMIT_GRACE_S": str(self.submit_grace_s),
            "RECONCILE_INTERVAL_S": str(self.sweep_interval_s),
            "RECONCILE_SYNC_AGE_S": str(self.sync_age_s),
            "RECONCILE_INBOUND_STALE_S": str(self.inbound_stale_s),
            "PARTNER_SYNC_DELAY_S": str(self.sync_delay_s),
            "PARTNER_RETRY_MIN_S": str(self.retry_min_s),
            "PARTNER_RETRY_BASE_S": str(self.retry_base_s),
            "PARTNER_RETRY_MAX_S": str(self.retry_max_s),
            "PARTNER_LISTING_SETTLE_S": str(self.listing_settle_s),
            "PARTNER_BREAKER_RESET_S": str(self.breaker_reset_s),
            "PARTNER_QUEUE_REFRESH_S": "2",
            "PARTNER_ACTOR_TIME_LIMIT_MS": "60000",
            "RECONCILE_AUDIT_AGE_S": str(self.audit_age_s),
            "RECONCILE_AUDIT_BATCH": str(self.audit_batch),
            "PARTNER_LOST_RECHECK_S": str(self.lost_recheck_s),
            "PARTNER_REFUSED_MAX_TRIES": str(self.refused_max_tries),
            "NOTIFICATION_REQUEUE_AFTER_S": str(self.notification_requeue_after_s),
            "NOTIFICATION_CLAIM_TIMEOUT_S": str(self.notification_claim_timeout_s),
            "NOTIFICATION_RETRY_BASE_S": str(self.notification_retry_base_s),
            "NOTIFICATION_RETRY_MAX_S": str(self.notification_retry_max_s),
            "CUSTOMER_SLOW_AFTER_S": str(self.customer_slow_after_s),
        }

    def detection_window_s(self, confirmed: int, *, unanswered_share: float = 0.0) -> float:
        """How long after a partner's silent change (a cancellation whose news is lost, a lost
        reservation, new terms) its booking is handed over at the latest: the audit reads each
        confirmed booking again after `audit_age_s`, or after a round over all of them at
        `audit_batch` per sweep, whichever is longer; a lost one is read a second time
        `lost_recheck_s` later; and a sweep on either side.

        The round is over *answered* reads: a read the partner does not answer (its 429s, 5xx,
        outage, refused key) keeps its booking at the front and takes a slot of the next batch,
        and the audit does not send more to make up for a partner that is refusing it. So where
        a share `unanswered_share` of the partners' reads goes unanswered, the round lasts
        1 / (1 - share) as long (the share is capped at a half: past that the partner is down,
        not slow, and the run's other checks say so)."""
        answered = 1.0 - min(max(unanswered_share, 0.0), MAX_UNANSWERED_SHARE)
        round_s = math.ceil(confirmed / self.audit_batch) * self.sweep_interval_s / answered
        return max(self.audit_age_s, round_s) + self.lost_recheck_s + 2 * self.sweep_interval_s


@dataclass(frozen=True)
class ClientBehaviour:
    """How the load generator behaves like real clients."""

    retries: int = 8
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    replay_rate: float = 0.05  # resend an accepted request with the same key: same booking?
    race_rate: float = 0.05  # send the same request twice at once (double click)
    cancel_rate: float = 0.03  # cancel an accepted booking a little later
    # Cancel a booking once it shows confirmed: the cancellation policy's refund (or the hold's
    # release, when the capture has not happened yet) against the provider's faults.
    cancel_confirmed_rate: float = 0.03
    confirmed_wait_s: float = 180.0  # how long such a client waits to see it confirmed
    confirmed_poll_s: float = 2.0  # and how often it looks


@dataclass(frozen=True)
class WatchOptions:
    """The customers' clients (`chaos.watchers`): every customer's stream, plus a sample of
    bookings with a stream of their own and another polled with If-None-Match."""

    enabled: bool = True
    booking_streams: int = 100
    pollers: int = 50
    rest_poll_s: float = 10.0  # a poller's pace once no news is awaited (Retry-After gone)
    # At the end, how long the clients get to show the final views: one stream heartbeat (the
    # re-read that corrects a lost publish) and a margin.
    catch_up_s: float = 30.0


@dataclass(frozen=True)
class ClusterOptions:
    """`--cluster`: every role on a host of its own (docs/chaos.md, "Cluster"), and the faults
    that only exist between machines."""

    web_hosts: int = 2
    worker_hosts: int = 2
    standby_scheduler: bool = True
    network_faults: bool = True
    # Longer than the broker's heartbeat timeout (DRAMATIQ_HEARTBEAT_TIMEOUT_MS, 20 s) plus the
    # wait for its maintenance (one broker command in twenty), which hands the host's messages to
    # another worker while the cut-off one still holds them.
    worker_cut_s: float = 100.0
    web_cut_s: float = 15.0
    broker_cut_s: float = 8.0
    # Longer than the sweeper lock's time to live (three sweep intervals): the standby takes over
    # while the cut scheduler still believes it holds the lock.
    scheduler_cut_s: float = 70.0
    partition_s: float = 20.0
    subnet: str = ""  # "": the first free 10.231.N.0/24


@dataclass(frozen=True)
class ChaosConfig:
    bookings: int = 2000
    concurrency: int = 16
    customers: int = 0  # 0: twice the concurrency
    duration_s: float = 0.0  # spread the bookings over this long; 0: as fast as they go
    settle_timeout_s: float = 0.0  # 0: the confirmation window plus a margin
    profiles: tuple[str, ...] = PROFILES
    fault_rate: float = 1.0
    fault_overrides: tuple[tuple[str | None, str, Any], ...] = ()  # (profile or None, key, value)
    phase_interval_s: float = 10.0
    kill_workers: bool = True
    kill_interval_s: float = 10.0
    restart_delay_s: float = 1.0
    redis_restart: bool = True
    payments: bool = True  # a share of the bookings pays, at a payment provider with its faults on
    db_drop: bool = True
    workers: int = 3
    worker_threads: int = 4
    web_workers: int = 2
    seed: int = 0
    json_path: Path | None = None
    allow_sqlite: bool = False
    own_database: bool = False
    keep_database: bool = False
    deadline_slack_s: float = 5.0
    quiet_s: float = 4.0
    time_scale: float = 60.0
    log_level: str = "INFO"
    child_settings: str = DEFAULT_CHILD_SETTINGS
    run_root: Path = Path("var/chaos")
    live: bool | None = None  # None: a live display only on a terminal
    timing: Timing = field(default_factory=Timing)
    client: ClientBehaviour = field(default_factory=ClientBehaviour)
    watch: WatchOptions = field(default_factory=WatchOptions)
    cluster: ClusterOptions | None = None  # None: every process on this machine's network

    @property
    def customer_count(self) -> int:
        return self.customers or max(2, self.concurrency * 2)

    @property
    def effective_settle_timeout_s(self) -> float:
        if self.settle_timeout_s:
            return self.settle_timeout_s
        # Long enough for the last booking's deadline, one sweep and the compensations after it.
        return self.timing.confirmation_window_s + 6 * self.timing.sweep_interval_s + 30

    @property
    def deadline_allowance_s(self) -> float:
        """Invariant 7: terminal or needs_attention within deadline + one sweep (+ slack)."""
        return self.timing.sweep_interval_s + self.deadline_slack_s


@dataclass(frozen=True)
class RunIdentity:
    """Names this run gives to everything it creates, so that nothing collides with another."""

    run_id: str
    directory: Path

    @property
    def namespace(self) -> str:
        return f"chaos-{self.run_id}"

    def partner_code(self, profile: str) -> str:
        return f"chaos-{profile[:3]}-{self.run_id}"

    def app_name(self, role: str) -> str:
        """PostgreSQL application_name of a child: lets the run drop only its own connections."""
        return f"{self.namespace}-{role}"

    @property
    def app_name_pattern(self) -> str:
        return f"{self.namespace}-%"


def child_env(
    base: dict[str, str],
    *,
    config: ChaosConfig,
    identity: RunIdentity,
    database_url: str,
    redis_url: str,
    role: str,
) -> dict[str, str]:
    """The environment of one child process of the run."""
    env = dict(base)
    env.update(config.timing.env())
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": config.child_settings,
            "DEBUG": "false",
            "SECRET_KEY": f"chaos-run-{identity.run_id}-" + "k" * 40,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "DRAMATIQ_NAMESPACE": identity.namespace,
            "CACHE_KEY_PREFIX": identity.namespace,
            "PARTNER_GUARD_NAMESPACE": f"{identity.namespace}-guard",
            "LIVE_CHANNEL_PREFIX": f"{identity.namespace}-live",
            "API_THROTTLE_RATE": "1000000/min",
            "API_THROTTLE_ADDRESS_RATE": "1000000/min",
            "PAGE_THROTTLE_RATE": "1000000/min",
            "PAGE_THROTTLE_ADDRESS_RATE": "1000000/min",
            "ACCOUNT_THROTTLE_RATE": "1000000/min",
            "PASSWORD_RESET_EMAIL_RATE": "1000000/min",
            "LOG_LEVEL": config.log_level,
            "PGAPPNAME": identity.app_name(role),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env
