"""Dramatiq's own Prometheus middleware (`dramatiq_messages_total`, `..._errors_total`,
`..._retries_total`, `..._rejects_total`, `dramatiq_messages_inprogress`,
`dramatiq_message_duration_milliseconds`, per queue and actor), writing into the machine's one
metrics directory, and without its exposition server.

Dramatiq's middleware defines its metrics at process boot, which only `rundramatiq` announces, and
keeps them in its own directory (`dramatiq_prom_db`); its server listens on 0.0.0.0:9191 with no
authentication. Here the metrics are defined when the broker is built (every process that has one,
so a worker started inside a test counts too), in PROMETHEUS_MULTIPROC_DIR, where `/metrics`
finds them beside ours; the exposition is config.metrics.exposition, only where WORKER_METRICS_PORT
asks for it. The settings add this middleware only when PROMETHEUS_MULTIPROC_DIR is set.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from config.metrics.events import multiprocess_dir

if multiprocess_dir():
    # Dramatiq's module reads its directory once, at import: the machine's one.
    os.environ.setdefault("dramatiq_prom_db", multiprocess_dir())

from dramatiq.middleware import prometheus as dramatiq_prometheus

from config.metrics import exposition


class WorkerMetrics(dramatiq_prometheus.Prometheus):
    def __init__(self) -> None:
        if not multiprocess_dir():
            raise ImproperlyConfigured("WorkerMetrics writes into PROMETHEUS_MULTIPROC_DIR, which is not set")
        super().__init__()
        dramatiq_prometheus.DB_PATH = multiprocess_dir()
        super().after_process_boot(None)  # the metrics, now

    def after_process_boot(self, broker: object) -> None:
        """Defined at construction already."""

    @property
    def forks(self) -> list:
        return [exposition.serve] if settings.WORKER_METRICS_PORT else []
