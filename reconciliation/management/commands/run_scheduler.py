"""The scheduler process: one sweep every RECONCILE_INTERVAL_S, by one scheduler at a time.

Any number of schedulers may run (a standby on another machine): each round, the one that takes
the sweeper lock sweeps and the others skip (reconciliation/sweeper_lock.py). A sweep marks its
round swept for one interval: no scheduler sweeps before that has passed, so together they sweep
as often as one scheduler would, however their rounds fall. A scheduler that skipped waits for
the lock or the mark to go (at most an interval) and tries again: when the one that swept dies,
another sweeps about an interval after its last sweep. The lock lasts LOCK_INTERVALS intervals
and a sweep renews it as it progresses, so a scheduler that dies or is cut off mid-sweep is
replaced within that time.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from config.metrics import events as metrics
from config.redis_client import redis_client
from reconciliation.management.commands._ops import window_help, window_option
from reconciliation.services.sweeper import sweep
from reconciliation.sweeper_lock import SweeperLock, sweeper_lock_key

logger = logging.getLogger(__name__)
# The lock's life in sweep intervals: a missed renewal or two is not a lost lock.
LOCK_INTERVALS = 3
LOCK_LOST = "sweeper lock lost before the sweep ended; another scheduler may have swept beside it"
SKIPPED_SWEEPING = "another scheduler is sweeping; skipping this round"
SKIPPED_SWEPT = "another scheduler swept this round; skipping it"
# Past the moment the lock or the swept mark goes: the next take finds it gone.
TAKE_AFTER_S = 0.05
SECOND = timedelta(seconds=1)
# The shortest interval: a round takes the lock, sweeps and marks it (a few round trips to Redis
# and the database), so a shorter one only sweeps back to back. Tests use 0.5 s, production 15.
MIN_INTERVAL_S = 0.1


class Command(BaseCommand):
    help = "Run the reconciliation sweeper periodically (the Procfile's scheduler process)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help=(
                f"Seconds between sweeps: at least {MIN_INTERVAL_S:g}, {window_help(SECOND)} "
                "(default: RECONCILE_INTERVAL_S)."
            ),
        )
        parser.add_argument("--once", action="store_true", help="Run one locked sweep and exit.")

    def handle(self, *args, **options) -> None:
        interval = sweep_interval_s(options["interval"])
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        lock = SweeperLock(redis_client(), ttl_s=LOCK_INTERVALS * interval, name=sweeper_lock_key())
        # Log lines, not stdout: under LOG_FORMAT=json every line of the process is one object.
        logger.info(f"scheduler: sweeping every {interval:g}s", extra={"interval_s": interval})
        while not stop.is_set():
            pause_s = self._sweep_once(lock, interval, now=options["once"])
            if options["once"]:
                return
            stop.wait(pause_s)
        logger.info("scheduler: stopped")

    def _sweep_once(self, lock: SweeperLock, interval: float | None = None, *, now: bool = False) -> float:
        """One round: sweep if this scheduler takes the lock, else skip. How long to wait for the
        next round: after a sweep, the interval it marked; after a skip, until the lock or the
        mark goes, at most an interval."""
        interval = interval or settings.RECONCILE_INTERVAL_S
        try:
            if not lock.take(now=now):
                return _skipped(lock, interval)
            try:
                with metrics.sweep_timed():
                    sweep(progress=lambda _rows: _renew(lock))
            finally:
                if not lock.finish(interval_s=interval):
                    logger.warning(LOCK_LOST)
        except redis.RedisError:
            logger.warning("sweep skipped: Redis unavailable", exc_info=True)
        except Exception:
            logger.exception("sweep failed")
        finally:
            close_old_connections()
        return interval + TAKE_AFTER_S


def sweep_interval_s(option: float | None) -> float:
    """`--interval`, else RECONCILE_INTERVAL_S, refused (a CommandError naming which, exit status 1)
    unless a finite number of seconds from MIN_INTERVAL_S to `window_option`'s bound: nan or inf
    would fail the sweep's arithmetic, and 0, a negative or a tiny interval would sweep back to back
    under a lock that expires at once, beside a standby scheduler."""
    if option is None:
        named, interval = "RECONCILE_INTERVAL_S", float(settings.RECONCILE_INTERVAL_S)
    else:
        named, interval = "--interval", option
    window_option(named, interval, SECOND, least=MIN_INTERVAL_S)  # the refusal; the seconds are kept as given
    return interval


def _skipped(lock: SweeperLock, interval: float) -> float:
    lock_s, mark_s = lock.free_in_s()
    logger.info(SKIPPED_SWEEPING if lock_s != 0 else SKIPPED_SWEPT)
    if -1 in (lock_s, mark_s):
        return interval  # a key without expiry (none of ours): look again next round
    return min(interval, max(lock_s, mark_s) + TAKE_AFTER_S)


def _renew(lock: SweeperLock) -> None:
    """After each batch: the sweep goes on whether or not the lock does (an overlap is harmless)."""
    try:
        if not lock.renew():
            logger.warning(LOCK_LOST)
    except redis.RedisError:
        logger.warning("sweeper lock not renewed: Redis unavailable", exc_info=True)
