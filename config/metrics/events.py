"""What happens in a process, counted where it happens: partner calls, webhook deliveries, a
partner's change applied, the payment provider's calls and webhook deliveries, sweeps, requests
the database did not serve.

In multiprocess mode (PROMETHEUS_MULTIPROC_DIR set in the environment before this module is
imported, as `make run` and a deployment's process manager do) each process writes its figures to
its own files in that directory, and `/metrics` sums every process of the machine. Without it, a
process counts in memory and only its own `/metrics` shows its figures (tests, a single process).

Each recorder is one call at the place the event happens and never raises: a metric that cannot be
written is logged once per process and dropped, never a failed partner call or webhook.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, ParamSpec, Protocol

from django.utils import timezone
from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str:
    """The machine's metrics directory, or "" when each process counts on its own."""
    return os.environ.get(MULTIPROCESS_ENV, "")


if multiprocess_dir():
    os.makedirs(multiprocess_dir(), exist_ok=True)

# Partner calls take from milliseconds to their read timeout (seconds to tens of seconds).
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A partner's change reaches us within a second by webhook, within a sync interval by polling,
# within the audit interval (an hour) when it told us nothing.
LAG_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)
SWEEP_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

PARTNER_CALLS = Counter(
    "bookings_partner_calls_total",
    "Calls made to a partner, by how they ended: ok, rejected, transient (did not happen), "
    "ambiguous (may have happened), permanent.",
    ["partner", "operation", "outcome"],
)
PARTNER_CALL_SECONDS = Histogram(
    "bookings_partner_call_duration_seconds",
    "How long a partner took to answer a call (or to fail it), per partner and operation.",
    ["partner", "operation"],
    buckets=CALL_BUCKETS,
)
PARTNER_CALLS_NOT_SENT = Counter(
    "bookings_partner_calls_not_sent_total",
    "Calls not made: circuit_open (the partner's breaker), concurrency_limit (its cap), partner_disabled.",
    ["partner", "operation", "reason"],
)
WEBHOOK_DELIVERIES = Counter(
    "bookings_webhook_deliveries_total",
    "Partner webhook deliveries received, by our answer: accepted, duplicate, ignored, "
    "invalid_signature, timestamp_out_of_tolerance, malformed_body, payload_too_large, "
    "unknown_partner.",
    ["partner", "result"],
)
PARTNER_CHANGE_LAG = Histogram(
    "bookings_partner_change_lag_seconds",
    "From a change at the partner (its time, corrected by its clock skew) to our applying it, "
    "by how we learned it: webhook, response, lookup, listing.",
    ["partner", "source"],
    buckets=LAG_BUCKETS,
)
PAYMENT_CALLS = Counter(
    "bookings_payment_calls_total",
    "Calls made to the payment provider, by operation (authorize, capture, void, refund, retrieve, "
    "find_authorization, find_refund; the settlement's list_intents, list_refunds, "
    "retrieve_refund) and how they ended: ok, declined, refused (asking again changes nothing), "
    "transient (did not happen), ambiguous (may have happened).",
    ["operation", "outcome"],
)
PAYMENT_CALL_SECONDS = Histogram(
    "bookings_payment_call_duration_seconds",
    "How long the payment provider took to answer a call (or to fail it), per operation.",
    ["operation"],
    buckets=CALL_BUCKETS,
)
PAYMENT_WEBHOOK_DELIVERIES = Counter(
    "bookings_payment_webhook_deliveries_total",
    "The payment provider's webhook deliveries, by our answer: accepted, known, duplicate, "
    "ignored, invalid_signature, timestamp_out_of_tolerance, malformed_body, payload_too_large.",
    ["result"],
)
SWEEP_SECONDS = Histogram(
    "bookings_sweep_duration_seconds",
    "How long a scheduled sweep took, by result: ok or failed.",
    ["result"],
    buckets=SWEEP_BUCKETS,
)
SWEEP_LAST_SUCCESS = Gauge(
    "bookings_sweep_last_success_timestamp_seconds",
    "When the last scheduled sweep that ended well ended (Unix time).",
    multiprocess_mode="max",
)

DATABASE_UNAVAILABLE = Counter(
    "bookings_database_unavailable_total",
    "Requests answered 503 because the database did not serve them, by cause (disk_full, "
    "read_only, io_error, busy, unreachable, other) and request (read or write).",
    ["cause", "request"],
)
P = ParamSpec("P")
_failed: set[str] = set()


def _never_raises(record: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(record)
    def recording(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:
            if record.__name__ not in _failed:  # once per process, not once per event
                _failed.add(record.__name__)
                logger.warning("metric not recorded", extra={"recorder": record.__name__}, exc_info=True)

    return recording


class CallResultLike(Protocol):
    outcome: Any
    latency_ms: int
    error_code: str


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


@_never_raises
def partner_call(*, partner: str, operation: str, result: CallResultLike, sent: bool) -> None:
    """One call through a partner's guard (partners.guard.guarded_call)."""
    if not sent:
        PARTNER_CALLS_NOT_SENT.labels(partner, operation, result.error_code or "not_sent").inc()
        return
    PARTNER_CALLS.labels(partner, operation, _text(result.outcome)).inc()
    PARTNER_CALL_SECONDS.labels(partner, operation).observe(result.latency_ms / 1000)


@_never_raises
def webhook_delivery(*, partner: str, result: str) -> None:
    """One delivery to the webhook receiver (partners.views), by the code of our answer."""
    WEBHOOK_DELIVERIES.labels(partner, result).inc()


@_never_raises
def partner_change_applied(
    *, partner: str, source: str, changed_at: datetime | None, skew_ms: int | None
) -> None:
    """A partner's change applied to what we hold (partners.services.observations), measured as
    it is applied: the transaction around it commits within milliseconds of this."""
    if changed_at is None:
        return
    at_our_clock = changed_at - timedelta(milliseconds=skew_ms or 0)
    lag = (timezone.now() - at_our_clock).total_seconds()
    PARTNER_CHANGE_LAG.labels(partner, source).observe(max(0.0, lag))


@_never_raises
def payment_call(*, operation: str, outcome: Any, seconds: float) -> None:
    """One call to the payment provider (payments.connector), made and answered or failed."""
    PAYMENT_CALLS.labels(operation, _text(outcome)).inc()
    PAYMENT_CALL_SECONDS.labels(operation).observe(max(0.0, seconds))


@_never_raises
def payment_webhook_delivery(*, result: str) -> None:
    """One delivery to the payment webhook receiver (payments.views), by the code of our answer."""
    PAYMENT_WEBHOOK_DELIVERIES.labels(result).inc()


@_never_raises
def database_unavailable_series(causes: tuple[str, ...]) -> None:
    """Every series of `bookings_database_unavailable_total` at 0, made when a process starts: an
    alert on its increase sees the first 503, and a process whose disk is full has no new entry
    to write into its metrics file when that 503 comes."""
    for cause in causes:
        for request in ("read", "write"):
            DATABASE_UNAVAILABLE.labels(cause, request)


@_never_raises
def database_unavailable(*, cause: str, request: str) -> None:
    """A request answered 503 because the database did not serve it (config.database_errors)."""
    DATABASE_UNAVAILABLE.labels(cause, request).inc()


@_never_raises
def _sweep_ended(result: str, seconds: float) -> None:
    SWEEP_SECONDS.labels(result).observe(seconds)
    if result == "ok":
        SWEEP_LAST_SUCCESS.set(time.time())


@contextmanager
def sweep_timed() -> Iterator[None]:
    """Around one scheduled sweep (reconciliation's run_scheduler): its duration and result."""
    started, result = time.monotonic(), "failed"
    try:
        yield
        result = "ok"
    finally:
        _sweep_ended(result, time.monotonic() - started)
