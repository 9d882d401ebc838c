"""`GET /metrics` (or HEAD): every figure for Prometheus, in its text format (OpenMetrics when asked for).

Who may read it: with METRICS_TOKEN set, a request that sends `Authorization: Bearer <token>`
(anything else is a 401 in the one error shape); without a token, everybody where METRICS_OPEN
says so (development), nobody otherwise (404, as a path that does not exist). Production never
sets METRICS_OPEN: it has a token, or no metrics page.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from config.errors import error_response
from config.methods import allow
from config.metrics import dead_processes, events
from config.metrics.exposition import bearer_token_matches
from reconciliation.metrics.collector import StateCollector


class _ThisProcess(Collector):
    """Without a metrics directory: this process's own figures (and its process_* figures)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def registry() -> CollectorRegistry:
    """What one scrape reads: every process of the machine (or this one), then the database and
    Redis as they are now."""
    scraped = CollectorRegistry()
    if events.multiprocess_dir():
        dead_processes.collect(scraped, events.multiprocess_dir())
    else:
        scraped.register(_ThisProcess())
    scraped.register(StateCollector())
    return scraped


@never_cache
@allow("GET")  # and HEAD
def metrics(request: HttpRequest) -> HttpResponse:
    if settings.METRICS_TOKEN:
        if not bearer_token_matches(request.headers.get("Authorization", ""), settings.METRICS_TOKEN):
            return error_response(
                401,
                "unauthorized",
                "A valid bearer token is required.",
                headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
    elif not settings.METRICS_OPEN:
        raise Http404
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry()), content_type=content_type)
