"""The scheduler process: one sweep every RECONCILE_INTERVAL_S, never two at once.

A Redis lock (with a timeout, so a killed scheduler cannot hold it forever) makes a second
scheduler on another machine wait its turn instead of sweeping in parallel.
"""

from __future__ import annotations

import logging
import signal
import threading

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from config.redis_client import redis_client
from reconciliation.services.sweeper import sweep

logger = logging.getLogger(__name__)
LOCK_NAME = "reconciliation:sweeper-lock"


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
        client = redis_client()
        self.stdout.write(f"scheduler: sweeping every {interval:g}s")
        while not stop.is_set():
            self._sweep_once(client, interval)
            if options["once"]:
                return
            stop.wait(interval)
        self.stdout.write("scheduler: stopped")

    def _sweep_once(self, client: redis.Redis, interval: float) -> None:
        try:
            lock = client.lock(LOCK_NAME, timeout=max(60.0, interval * 4), blocking=False)
            if not lock.acquire():
                logger.info("another scheduler is sweeping; skipping this round")
                return
            try:
                sweep()
            finally:
                lock.release()
        except redis.RedisError:
            logger.warning("sweep skipped: Redis unavailable", exc_info=True)
        except Exception:
            logger.exception("sweep failed")
        finally:
            close_old_connections()
