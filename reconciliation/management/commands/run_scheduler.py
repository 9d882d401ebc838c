"""The scheduler process: one sweep every RECONCILE_INTERVAL_S, by one scheduler at a time.

Any number of schedulers may run (a standby on another machine): each round, the one that takes
the sweeper lock sweeps and the others skip (reconciliation/sweeper_lock.py). The lock lasts
LOCK_INTERVALS intervals and a sweep renews it as it progresses, so a scheduler that dies or is
cut off mid-sweep is replaced within that time.
"""

from __future__ import annotations

import logging
import signal
import threading

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from config.metrics import events as metrics
from config.redis_client import redis_client
from reconciliation.services.sweeper import sweep
from reconciliation.sweeper_lock import SweeperLock

logger = logging.getLogger(__name__)
# The lock's life in sweep intervals: a missed renewal or two is not a lost lock.
LOCK_INTERVALS = 3
LOCK_LOST = "sweeper lock lost before the sweep ended; another scheduler may have swept beside it"


class Command(BaseCommand):
    help = "Run the reconciliation sweeper periodically (the Procfile's scheduler process)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=None, help="Seconds between sweeps.")
        parser.add_argument("--once", action="store_true", help="Run one locked sweep and exit.")

    def handle(self, *args, **options) -> None:
        interval = options["interval"] or settings.RECONCILE_INTERVAL_S
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        lock = SweeperLock(redis_client(), ttl_s=LOCK_INTERVALS * interval, name=settings.SWEEPER_LOCK_KEY)
        self.stdout.write(f"scheduler: sweeping every {interval:g}s")
        while not stop.is_set():
            self._sweep_once(lock)
            if options["once"]:
                return
            stop.wait(interval)
        self.stdout.write("scheduler: stopped")

    def _sweep_once(self, lock: SweeperLock) -> None:
        try:
            if not lock.take():
                logger.info("another scheduler is sweeping; skipping this round")
                return
            try:
                with metrics.sweep_timed():
                    sweep(progress=lambda _rows: _renew(lock))
            finally:
                if not lock.release():
                    logger.warning(LOCK_LOST)
        except redis.RedisError:
            logger.warning("sweep skipped: Redis unavailable", exc_info=True)
        except Exception:
            logger.exception("sweep failed")
        finally:
            close_old_connections()


def _renew(lock: SweeperLock) -> None:
    """After each batch: the sweep goes on whether or not the lock does (an overlap is harmless)."""
    try:
        if not lock.renew():
            logger.warning(LOCK_LOST)
    except redis.RedisError:
        logger.warning("sweeper lock not renewed: Redis unavailable", exc_info=True)
