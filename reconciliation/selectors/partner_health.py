"""Partner health for support and ops: calls, errors and latency from the attempts, queue depth
and circuit state from Redis, the webhook deliveries (how many were refused and why, and the
clock skew of those signed outside the tolerance), the last webhook, the clock skew (said only
beyond its uncertainty: a slow partner's wide bound is not a skew), and what waits for support
now (bookings by urgency and reason, open orphan cases). Seven queries."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median
from typing import Any

import dramatiq
import redis
from django.conf import settings
from django.db.models import Count, Max
from django.utils import timezone

from partners.guard import guard_status
from partners.models import InboundEvent, InboundResult, Outcome, Partner, PartnerAttempt
from partners.services.skew import SkewVerdict, skew_between, skew_verdict
from partners.services.webhook_limits import unverified_seen
from reconciliation.selectors.attention import AttentionCounts, attention_by_partner
from reconciliation.selectors.orphans import OrphanCounts, open_orphans_by_partner
from reconciliation.selectors.partner_feed import REFUSED_MARKS, delivery_mark

ERROR_OUTCOMES = (Outcome.AMBIGUOUS, Outcome.TRANSIENT, Outcome.PERMANENT)
# Webhook deliveries are counted by the feed's marks, all that were not refused as "accepted".
DELIVERY_BUCKETS = ("accepted", *REFUSED_MARKS)


@dataclass
class PartnerHealth:
    partner: Partner
    calls: int = 0
    errors: int = 0
    in_flight: int = 0
    refused: int = 0  # answers whose data we refused at our edge (malformed, out of range)
    p50_ms: int | None = None
    p99_ms: int | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    queue_ready: int | None = None
    queue_delayed: int | None = None
    # The partner's audit queue (the sweeper's re-reads of confirmed bookings, partners.queues).
    audit_ready: int | None = None
    audit_delayed: int | None = None
    last_webhook_at: datetime | None = None
    # Deliveries kept over the window, by bucket; unverified ones over their storage limit are
    # only in `unverified_seen` (the current window of that limit, from Redis).
    deliveries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DELIVERY_BUCKETS, 0))
    unverified_seen: int | None = None
    late_skew_ms: int | None = None  # median, over the late deliveries of the window
    circuit: dict[str, Any] | None = None
    # What waits for support now: bookings by urgency and reason, open orphan cases.
    attention: AttentionCounts = field(default_factory=AttentionCounts)
    orphans: OrphanCounts = field(default_factory=OrphanCounts)
    problems: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        finished = self.calls - self.in_flight
        return None if finished <= 0 else self.errors / finished

    @property
    def clock_skew(self) -> SkewVerdict:
        return skew_verdict(self.partner)

    @property
    def error_rate_display(self) -> str:
        return "-" if self.error_rate is None else f"{self.error_rate:.1%}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "partner": self.partner.code,
            "enabled": self.partner.enabled,
            "calls": self.calls,
            "errors": self.errors,
            "error_rate": None if self.error_rate is None else round(self.error_rate, 4),
            "in_flight": self.in_flight,
            "refused_answers": self.refused,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "outcomes": self.outcomes,
            "queue_ready": self.queue_ready,
            "queue_delayed": self.queue_delayed,
            "audit_ready": self.audit_ready,
            "audit_delayed": self.audit_delayed,
            "last_webhook_at": self.last_webhook_at.isoformat() if self.last_webhook_at else None,
            "deliveries": self.deliveries,
            "unverified_seen": self.unverified_seen,
            "late_skew_ms": self.late_skew_ms,
            "circuit": self.circuit,
            # Beyond its uncertainty, else 0 (None: never measured); the estimate and its bound
            # as they stand, and what they let us say.
            # The estimate, as before bounds were measured and as the partner's row keeps it.
            "clock_skew_ms": self.partner.clock_skew_ms,
            "clock_skew_beyond_doubt_ms": self.clock_skew.beyond_doubt_ms,
            "clock_skew_uncertainty_ms": self.partner.clock_skew_uncertainty_ms,
            "clock_skew": self.clock_skew.text,
            "clock_skew_measured_at": (
                self.partner.clock_skew_measured_at.isoformat()
                if self.partner.clock_skew_measured_at
                else None
            ),
            "needs_attention": self.attention.as_dict(),
            "orphan_cases": self.orphans.as_dict(),
            "problems": self.problems,
        }


def percentile(sorted_values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * fraction // 1))  # ceil
    return sorted_values[int(rank) - 1]


def _broker_client() -> tuple[redis.Redis, str]:
    broker = dramatiq.get_broker()
    namespace = settings.DRAMATIQ_BROKER["OPTIONS"].get("namespace", "dramatiq")
    return broker.client, namespace


def _count_deliveries(health: dict[int, PartnerHealth], since: datetime) -> None:
    """Deliveries by bucket, and the median skew of the late ones (two queries)."""
    deliveries = InboundEvent.objects.filter(partner_id__in=list(health), received_at__gte=since)
    for row in deliveries.values("partner_id", "signature_valid", "state", "result").annotate(n=Count("id")):
        mark = delivery_mark(signature_valid=row["signature_valid"], state=row["state"], result=row["result"])
        health[row["partner_id"]].deliveries[mark if mark in REFUSED_MARKS else "accepted"] += row["n"]
    skews: dict[int, list[int]] = defaultdict(list)
    for partner_id, signed_at, received_at in deliveries.filter(result=InboundResult.LATE).values_list(
        "partner_id", "partner_timestamp", "received_at"
    ):
        if signed_at is not None:
            skews[partner_id].append(skew_between(signed_at, received_at))
    for partner_id, samples in skews.items():
        health[partner_id].late_skew_ms = round(median(samples))


def _delivery_problems(row: PartnerHealth) -> list[str]:
    problems = []
    if row.deliveries["late"]:
        seconds = round((row.late_skew_ms or 0) / 1000)
        problems.append(
            f"{row.deliveries['late']} authentic webhooks signed outside the time tolerance (its clock "
            f"is about {abs(seconds)} s {'ahead of' if seconds >= 0 else 'behind'} ours): not applied, "
            "their bookings synced instead"
        )
    if row.deliveries["invalid"]:
        problems.append(f"{row.deliveries['invalid']} webhooks with content we cannot use (quarantined)")
    if row.deliveries["failed"]:
        problems.append(f"{row.deliveries['failed']} webhooks set aside after their tries")
    return problems


def partner_health(
    *, window: timedelta = timedelta(hours=1), now: datetime | None = None
) -> list[PartnerHealth]:
    """Per partner over the window: calls, error rate, p50/p99 latency (from PartnerAttempt),
    webhook deliveries by kind, queue depth (Redis), last webhook, circuit breaker state and
    clock skew; and bookings waiting for support by urgency and reason, and open orphan cases.
    Seven queries."""
    now = now or timezone.now()
    partners = list(Partner.objects.order_by("code"))
    health = {p.pk: PartnerHealth(partner=p) for p in partners}
    latencies: dict[int, list[int]] = defaultdict(list)
    outcomes: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for partner_id, outcome, latency, refusal in PartnerAttempt.objects.filter(
        started_at__gte=now - window
    ).values_list("partner_id", "outcome", "latency_ms", "refusal"):
        row = health.get(partner_id)
        if row is None:
            continue
        row.calls += 1
        row.refused += bool(refusal)
        outcomes[partner_id][outcome] += 1
        if outcome in ERROR_OUTCOMES:
            row.errors += 1
        elif outcome == Outcome.IN_FLIGHT:
            row.in_flight += 1
        if latency is not None:
            latencies[partner_id].append(latency)
    _count_deliveries(health, now - window)
    attention = attention_by_partner(list(health), now=now)
    orphans = open_orphans_by_partner(list(health))
    last_webhooks = dict(  # an authentic one: anyone can post to the URL
        InboundEvent.objects.filter(signature_valid=True)
        .values_list("partner_id")
        .annotate(last=Max("received_at"))
        .order_by()
    )
    try:
        seen = unverified_seen(partners)
    except redis.RedisError as exc:
        seen, seen_problem = {}, f"refused deliveries uncounted: {exc}"
    else:
        seen_problem = ""
    try:
        client, namespace = _broker_client()
    except Exception as exc:  # noqa: BLE001 - health pages must render without a broker
        client, namespace = None, ""
        broker_problem = f"broker unavailable: {exc}"
    else:
        broker_problem = ""
    for partner in partners:
        row = health[partner.pk]
        values = sorted(latencies[partner.pk])
        row.p50_ms, row.p99_ms = percentile(values, 0.5), percentile(values, 0.99)
        row.outcomes = dict(outcomes[partner.pk])
        row.last_webhook_at = last_webhooks.get(partner.pk)
        row.unverified_seen = seen.get(partner.pk)
        row.attention = attention.get(partner.pk, row.attention)
        row.orphans = orphans.get(partner.pk, row.orphans)
        row.problems += _delivery_problems(row)
        if row.refused:
            row.problems.append(
                f"partner answers refused at our edge (malformed or out of range): {row.refused}"
            )
        if seen_problem:
            row.problems.append(seen_problem)
        if client is not None:
            pipe = client.pipeline(transaction=False)
            for name in partner.queue_names:  # its own queue, then its audit queue
                pipe.llen(f"{namespace}:{name}")
                pipe.llen(f"{namespace}:{name}.DQ")
            try:
                row.queue_ready, row.queue_delayed, row.audit_ready, row.audit_delayed = map(
                    int, pipe.execute()
                )
            except redis.RedisError as exc:
                row.problems.append(f"queue depth unavailable: {exc}")
        elif broker_problem:
            row.problems.append(broker_problem)
        try:
            row.circuit = guard_status(partner)
        except redis.RedisError as exc:
            row.problems.append(f"circuit state unavailable: {exc}")
    return [health[p.pk] for p in partners]
