"""Two Dramatiq queues per partner, so that one slow partner cannot starve the others.

Messages for a partner go to `partner-<code>`, except the sweeper's audit reads of confirmed
bookings, which go to `audit-<code>`: a Redis list is served in order, so on the partner's
queue an audit waited behind every submission queued before it, and under load amendments and
losses were found minutes late (a cluster chaos run: 183-220 s against a 158 s detection
window). On a queue of its own an audit waits only for a free worker thread. Both queues are
the same partner's calls: its concurrency cap and circuit breaker (`partners.guard`) are keyed
by partner, not by queue, and cover both.

Workers declare (and so consume) both queues of every partner in the database at boot and again
every `PARTNER_QUEUE_REFRESH_S`, so that a partner registered while workers run is served
without a restart.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
from django.conf import settings
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


def declare_partner_queues(broker: dramatiq.Broker) -> list[str]:
    from partners.models import Partner

    codes = Partner.objects.values_list("code", flat=True)
    names = [name for code in codes for name in Partner(code=code).queue_names]
    for name in names:
        broker.declare_queue(name)
    return names


class PartnerQueuesMiddleware(Middleware):
    """Declares the partner queues when the worker boots, before it says it is ready (a worker
    that reports ready serves every partner known then), and again every
    `PARTNER_QUEUE_REFRESH_S` from a thread of its own, which no failure ends."""

    def __init__(self) -> None:
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        self._declare(broker)
        threading.Thread(target=self._refresh, args=(broker,), name="partner-queues", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _refresh(self, broker: dramatiq.Broker) -> None:
        while not self._stop.wait(settings.PARTNER_QUEUE_REFRESH_S):
            self._declare(broker)

    @staticmethod
    def _declare(broker: dramatiq.Broker) -> None:
        from django.db import connection

        try:
            declare_partner_queues(broker)
        except Exception:  # the database is down, say: the next refresh tries again
            logger.warning("could not declare partner queues", exc_info=True)
        finally:
            connection.close()  # one query every few seconds: no connection kept open
