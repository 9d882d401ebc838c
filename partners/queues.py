"""One Dramatiq queue per partner, so that one slow partner cannot starve the others.

Messages for a partner go to `partner-<code>`. Workers declare (and so consume) the queue of
every partner in the database at boot and again every `PARTNER_QUEUE_REFRESH_S`, so that a
partner registered while workers run is served without a restart.
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

    names = [Partner(code=code).queue_name for code in Partner.objects.values_list("code", flat=True)]
    for name in names:
        broker.declare_queue(name)
    return names


class PartnerQueuesMiddleware(Middleware):
    def __init__(self) -> None:
        self._stop = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.clear()
        threading.Thread(target=self._refresh, args=(broker,), name="partner-queues", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self._stop.set()

    def _refresh(self, broker: dramatiq.Broker) -> None:
        from django.db import DatabaseError, connection

        try:
            while not self._stop.is_set():
                try:
                    declare_partner_queues(broker)
                except DatabaseError:
                    logger.warning("could not declare partner queues", exc_info=True)
                finally:
                    connection.close()  # one query every few seconds: no connection kept open
                self._stop.wait(settings.PARTNER_QUEUE_REFRESH_S)
        finally:
            connection.close()
