"""What the database and Redis hold, read when Prometheus scrapes: the same figures from every web
process, whatever the machine.

- `bookings_by_state{state}`: bookings in each state (every state, 0 included);
- `bookings_needs_attention{partner, reason, urgency}`: bookings waiting for a person, as the
  support console counts them (reconciliation.selectors.attention);
- `bookings_support_messages_owed{partner, actor}`: messages support actions owe a partner's
  queue that our Redis has not taken yet (`OwedMessage` rows not sent: the sweeper sends them
  once it answers), a database figure, so it is there while Redis is down;
- `bookings_payments_by_status{status}`: payments in each status (every status, 0 included);
  `bookings_payments_in_doubt` and `bookings_payments_in_doubt_oldest_seconds`: those whose
  authorization's outcome is unknown (fenced until the provider answers under the same key), and
  how long the oldest has been so (0 when none);
- `bookings_payments_overdue`: payments due for a run longer than PAYMENTS_RUN_GRACE_S ago (as
  payment health counts overdue runs: a worker or the scheduler is not running them);
- `bookings_payment_operations_open{kind}` and `bookings_payment_operations_open_oldest_seconds{kind}`:
  operations asked of the provider whose outcome is not known yet (a call out, or asked again
  until the provider answers), and the age of the oldest of each kind;
- `bookings_payment_events_unapplied` and `bookings_payment_events_unapplied_oldest_seconds`: the
  provider's deliveries stored and not applied yet (`received`), and the age of the oldest;
  `bookings_payment_events_set_aside`: those given up on after their tries or refused at our edge
  (`failed`: support reads them, the sweeper's runs read the intent instead);
- `bookings_queue_depth{queue}`, `bookings_queue_delayed{queue}`,
  `bookings_queue_dead_letters{queue}`: messages waiting on each Dramatiq queue (the actors' and
  every partner's two, `partner-<code>` and its audit reads' `audit-<code>`), delayed (retries,
  syncs due later) and dead-lettered;
- `bookings_partner_breaker_state{partner, state}`: 1 for the state each partner's circuit is in
  (closed, open, half-open), 0 for the others;
- `bookings_metrics_source_up{source}` and `bookings_metrics_source_seconds{source}`: whether the
  database and Redis answered this scrape, and how long they took.

Nine queries (on PostgreSQL under a statement timeout, METRICS_QUERY_TIMEOUT_MS), each read
through an index (the payments' through `payment_status_age`, `payment_due`,
`operation_one_open_per_payment`, `payment_event_unprocessed` and `payment_event_set_aside`), and
two Redis round trips. A source that does not answer leaves its figures out of the scrape, marked 0 in
`bookings_metrics_source_up`: never a guess (a breaker read as closed because Redis is down), never
an error for the whole scrape.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dramatiq
import redis
from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bookings.models import Booking
from bookings.states import BookingState
from config.redis_client import redis_client
from partners import guard
from partners.models import Partner
from payments.models import (
    EventState,
    OperationKind,
    OperationState,
    Payment,
    PaymentEvent,
    PaymentOperation,
    PaymentStatus,
)
from reconciliation.models import OwedMessage
from reconciliation.selectors.attention import needs_attention_summary

logger = logging.getLogger(__name__)

BREAKER_STATES = ("closed", "open", "half-open")


class StateCollector(Collector):
    def describe(self) -> list[Metric]:
        return []  # registering it must not query anything

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "bookings_metrics_source_up",
            "Whether a source of the scrape-time figures answered this scrape (1) or not (0).",
            labels=["source"],
        )
        took = GaugeMetricFamily(
            "bookings_metrics_source_seconds",
            "How long reading a source of the scrape-time figures took this scrape.",
            labels=["source"],
        )
        codes: list[str] | None = None
        started = time.monotonic()
        try:
            states, attention, owed, codes = _database_figures()
        except DatabaseError:
            logger.warning("metrics: the database did not answer; its figures are left out", exc_info=True)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            yield _by_state(states)
            yield _needs_attention(attention)
            yield _owed(owed)
        took.add_metric(["database"], time.monotonic() - started)

        # A source of their own: a slow read of the payments (every one ever kept, counted by
        # status) leaves out their figures alone, never the bookings' or the database's "up".
        started = time.monotonic()
        try:
            with _bounded():
                money = _payment_figures()
        except DatabaseError:
            logger.warning("metrics: the payments' figures did not answer; they are left out", exc_info=True)
            up.add_metric(["payments"], 0)
        else:
            up.add_metric(["payments"], 1)
            yield from _payment_families(money)
        took.add_metric(["payments"], time.monotonic() - started)

        started = time.monotonic()
        try:
            queues, breakers = _redis_figures(codes)
        except redis.RedisError:
            logger.warning("metrics: Redis did not answer; its figures are left out", exc_info=True)
            up.add_metric(["redis"], 0)
        else:
            up.add_metric(["redis"], 1)
            yield from _queue_families(queues)
            yield _breaker_family(breakers)
        took.add_metric(["redis"], time.monotonic() - started)
        yield up
        yield took


# --- the database -----------------------------------------------------------------------------
@dataclass
class PaymentFigures:
    """The payments' figures of one scrape; ages in seconds as of `now` (0 when there is none)."""

    by_status: dict[str, int] = field(default_factory=dict)
    in_doubt: int = 0
    in_doubt_oldest_s: float = 0.0
    overdue: int = 0
    open_operations: dict[str, tuple[int, float]] = field(default_factory=dict)
    unapplied: int = 0
    unapplied_oldest_s: float = 0.0
    set_aside: int = 0


def _age_s(since: datetime | None, now: datetime) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def _payment_figures() -> PaymentFigures:
    """Five queries, each through an index: the count by status and each status's oldest move
    (an index-only scan of `payment_status_age`), the overdue ones (`payment_due`), the open
    operations (`operation_one_open_per_payment`: a handful), the deliveries not applied
    (`payment_event_unprocessed`) and those set aside (`payment_event_set_aside`)."""
    now = timezone.now()
    figures = PaymentFigures()
    oldest: dict[str, datetime] = {}
    for status, n, since in (
        Payment.objects.order_by()
        .values_list("status")
        .annotate(n=Count("*"), since=Min("status_changed_at"))
    ):
        figures.by_status[status], oldest[status] = n, since
    figures.in_doubt = figures.by_status.get(PaymentStatus.UNKNOWN, 0)
    figures.in_doubt_oldest_s = _age_s(oldest.get(PaymentStatus.UNKNOWN), now)
    grace = timedelta(seconds=settings.PAYMENTS_RUN_GRACE_S)
    figures.overdue = Payment.objects.filter(next_check_at__lte=now - grace).count()
    figures.open_operations = {
        kind: (n, _age_s(since, now))
        for kind, n, since in PaymentOperation.objects.filter(state=OperationState.OPEN)
        .order_by()
        .values_list("kind")
        .annotate(n=Count("*"), since=Min("opened_at"))
    }
    unapplied = PaymentEvent.objects.filter(state=EventState.RECEIVED).aggregate(
        n=Count("*"), since=Min("received_at")
    )
    figures.unapplied, figures.unapplied_oldest_s = unapplied["n"], _age_s(unapplied["since"], now)
    figures.set_aside = PaymentEvent.objects.filter(state=EventState.FAILED).count()
    return figures


@contextlib.contextmanager
def _bounded() -> Iterator[None]:
    """A transaction whose statements give up after METRICS_QUERY_TIMEOUT_MS on PostgreSQL: a
    scrape never waits on a slow database longer (as is, on SQLite)."""
    if connection.vendor != "postgresql":
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:  # for this transaction only
            timeout = str(settings.METRICS_QUERY_TIMEOUT_MS)
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [timeout])
        yield


def _database_figures() -> tuple[
    dict[str, int], list[tuple[str, str, str, int]], list[tuple[str, str, int]], list[str]
]:
    with _bounded():
        states = dict(Booking.objects.order_by().values_list("status").annotate(n=Count("*")))
        summary = needs_attention_summary()
        # The unsent rows only, through their partial index (`owed_message_unsent`): a handful.
        owed = list(
            OwedMessage.objects.filter(sent_at__isnull=True)
            .order_by()
            .values_list("booking__partner__code", "actor_name")
            .annotate(n=Count("*"))
        )
        codes = list(Partner.objects.order_by("code").values_list("code", flat=True))
    attention = [
        (code, reason or "unspecified", urgency, n)
        for code, counts in summary.partners.items()
        for reason, by_urgency in counts.by_reason.items()
        for urgency, n in by_urgency.items()
        if n
    ]
    return states, attention, owed, codes


def _by_state(states: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily("bookings_by_state", "Bookings in each state.", labels=["state"])
    for state in [*BookingState.values, *sorted(set(states) - set(BookingState.values))]:
        family.add_metric([state], states.get(state, 0))
    return family


def _needs_attention(rows: list[tuple[str, str, str, int]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "bookings_needs_attention",
        "Bookings waiting for a person, by partner, reason and urgency (urgent: the stay starts "
        "within ATTENTION_URGENT_HORIZON_H).",
        labels=["partner", "reason", "urgency"],
    )
    for code, reason, urgency, n in rows:
        family.add_metric([code, reason, urgency], n)
    return family


def _owed(rows: list[tuple[str, str, int]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "bookings_support_messages_owed",
        "Messages support actions owe a partner's queue that our Redis has not taken yet, by partner "
        "and actor; the sweeper sends them once it answers.",
        labels=["partner", "actor"],
    )
    for code, actor, n in rows:
        family.add_metric([code, actor], n)
    return family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _payment_families(money: PaymentFigures) -> Iterator[GaugeMetricFamily]:
    by_status = GaugeMetricFamily(
        "bookings_payments_by_status", "Payments in each status.", labels=["status"]
    )
    for status in [*PaymentStatus.values, *sorted(set(money.by_status) - set(PaymentStatus.values))]:
        by_status.add_metric([status], money.by_status.get(status, 0))
    yield by_status
    yield _gauge(
        "bookings_payments_in_doubt",
        "Payments whose authorization's outcome is unknown: fenced until the provider answers.",
        money.in_doubt,
    )
    yield _gauge(
        "bookings_payments_in_doubt_oldest_seconds",
        "How long the oldest payment whose authorization's outcome is unknown has been so (0: none).",
        money.in_doubt_oldest_s,
    )
    yield _gauge(
        "bookings_payments_overdue",
        "Payments due for a run longer than PAYMENTS_RUN_GRACE_S ago: no worker or scheduler ran them.",
        money.overdue,
    )
    count = GaugeMetricFamily(
        "bookings_payment_operations_open",
        "Operations asked of the payment provider whose outcome is not known yet, by kind.",
        labels=["kind"],
    )
    age = GaugeMetricFamily(
        "bookings_payment_operations_open_oldest_seconds",
        "How long the oldest open operation of each kind has been open (0: none).",
        labels=["kind"],
    )
    for kind in OperationKind.values:
        n, oldest_s = money.open_operations.get(kind, (0, 0.0))
        count.add_metric([kind], n)
        age.add_metric([kind], oldest_s)
    yield count
    yield age
    yield _gauge(
        "bookings_payment_events_unapplied",
        "The payment provider's deliveries stored and not applied yet (received).",
        money.unapplied,
    )
    yield _gauge(
        "bookings_payment_events_unapplied_oldest_seconds",
        "How long the oldest delivery stored and not applied yet has waited (0: none).",
        money.unapplied_oldest_s,
    )
    yield _gauge(
        "bookings_payment_events_set_aside",
        "The payment provider's deliveries set aside (failed): given up after their tries or "
        "refused at our edge, never applied.",
        money.set_aside,
    )


# --- Redis ------------------------------------------------------------------------------------
@functools.cache
def _actor_queues() -> frozenset[str]:
    """The queues of every actor, as `rundramatiq` finds them (each app's tasks module)."""
    for app in apps.get_app_configs():
        for name in settings.DRAMATIQ_AUTODISCOVER_MODULES:
            module = f"{app.name}.{name}"
            try:
                found = importlib.util.find_spec(module) is not None
            except ImportError:
                found = False
            if found:
                importlib.import_module(module)
    return frozenset(q for q in dramatiq.get_broker().get_declared_queues() if not q.endswith(".DQ"))


def _redis_figures(codes: list[str] | None) -> tuple[dict[str, tuple[int, int, int]], dict[str, str]]:
    """Per queue (waiting, delayed, dead); per partner its breaker's state. With no partner list
    (the database did not answer), the actors' queues only."""
    broker = dramatiq.get_broker()
    partners = [Partner(code=code) for code in codes or []]
    queues = sorted(_actor_queues() | {name for partner in partners for name in partner.queue_names})
    pipe = broker.client.pipeline(transaction=False)
    for queue in queues:
        key = f"{broker.namespace}:{queue}"
        pipe.llen(key)
        pipe.llen(f"{key}.DQ")
        pipe.zcard(f"{key}.XQ")
    counts = pipe.execute()
    depths = {queue: tuple(counts[3 * i : 3 * i + 3]) for i, queue in enumerate(queues)}
    states = redis_client().mget([guard.breaker_state_key(p) for p in partners]) if partners else []
    breakers = {
        partner.code: state.decode() if state else "closed"
        for partner, state in zip(partners, states, strict=True)
    }
    return depths, breakers  # type: ignore[return-value]


def _queue_families(depths: dict[str, tuple[int, int, int]]) -> Iterator[GaugeMetricFamily]:
    described = (
        ("bookings_queue_depth", "Messages waiting on a Dramatiq queue for a worker."),
        ("bookings_queue_delayed", "Messages on a queue's delay queue: retries and steps due later."),
        ("bookings_queue_dead_letters", "Messages a queue gave up on (Dramatiq keeps them a week)."),
    )
    for i, (name, documentation) in enumerate(described):
        family = GaugeMetricFamily(name, documentation, labels=["queue"])
        for queue, counts in depths.items():
            family.add_metric([queue], counts[i])
        yield family


def _breaker_family(breakers: dict[str, str]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(
        "bookings_partner_breaker_state",
        "1 for the state a partner's circuit breaker is in (closed, open, half-open), 0 for the others.",
        labels=["partner", "state"],
    )
    for code, current in breakers.items():
        for state in BREAKER_STATES:
            family.add_metric([code, state], 1 if current == state else 0)
    return family
