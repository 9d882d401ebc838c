"""Reads of reconciliation: the booking's one timeline (invariant 8), the needs-attention queue
and partner health. Each selector runs a fixed number of queries whatever the row count."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any, TypedDict

import redis
from django.conf import settings
from django.db.models import Count, Max, Q, QuerySet
from django.utils import timezone

from bookings.models import Actor, Booking, BookingEvent
from bookings.states import BookingState
from partners.models import (
    InboundEvent,
    InboundResult,
    InboundState,
    ObservationResult,
    Outcome,
    Partner,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
)

# Where a row came from; the admin template and the command colour rows by it.
SOURCE_EVENT = "event"
SOURCE_ATTEMPT = "attempt"
SOURCE_INBOUND = "inbound"
SOURCE_OBSERVATION = "observation"
SOURCE_COMPENSATION = "compensation"

# What the console shows in a cell with no value.
NO_VALUE = "\N{EN DASH}"
# A row's data as the console and the command show it raw.
_RAW_JSON = json.JSONEncoder(indent=2, sort_keys=True, default=str)


@dataclass(frozen=True)
class TimelineRow:
    """One line of a booking's story.

    `at` is our clock; `partner_time` the partner's clock when the row reflects something the
    partner said; `skew_ms` the partner's clock minus ours (the per-partner estimate when the row
    carries one, else the difference measured on this row). `mark` flags rows that changed
    nothing: ignored, stale, duplicate, rejected, unlinked, failed, in_flight.
    """

    at: datetime
    kind: str
    actor: str
    actor_label: str
    summary: str
    source: str
    source_id: int
    partner_time: datetime | None = None
    skew_ms: int | None = None
    from_state: str = ""
    to_state: str = ""
    mark: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_support(self) -> bool:
        return self.kind.startswith("support.")

    @property
    def transition(self) -> str:
        if self.from_state and self.to_state and self.from_state != self.to_state:
            return f"{self.from_state} → {self.to_state}"
        return ""

    @property
    def data_json(self) -> str:
        return _RAW_JSON.encode(self.data)

    def display(self, zone: tzinfo) -> TimelineRowDisplay:
        """The row's cells as the support console shows them, times in `zone`."""
        at = _local(self.at, zone)
        partner = _local(self.partner_time, zone) if self.partner_time is not None else None
        return TimelineRowDisplay(
            kind=self.kind,
            actor=self.actor,
            actor_label=self.actor_label,
            summary=self.summary,
            transition=self.transition,
            mark=self.mark,
            css_class=" ".join(
                name for name, on in (("support", self.is_support), ("marked", self.mark)) if on
            ),
            at_iso=at.isoformat(),
            at_date=at.date().isoformat(),
            at_clock=at.time().isoformat(timespec="milliseconds"),
            partner_date=partner.date().isoformat() if partner else "",
            partner_clock=partner.time().isoformat(timespec="milliseconds") if partner else "",
            skew=NO_VALUE if self.skew_ms is None else str(self.skew_ms),
            source_label=f"{self.source} #{self.source_id}",
            raw=self.data_json if self.data else "",
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "partner_time": self.partner_time.isoformat() if self.partner_time else None,
            "skew_ms": self.skew_ms,
            "kind": self.kind,
            "actor": self.actor,
            "actor_label": self.actor_label,
            "summary": self.summary,
            "from_state": self.from_state,
            "to_state": self.to_state,
            "mark": self.mark,
            "source": self.source,
            "source_id": self.source_id,
            "data": json.loads(json.dumps(self.data, default=str)),
        }


class TimelineRowDisplay(TypedDict):
    """A timeline row formatted once for the admin page (`timeline_display`), so that its
    template loop only prints strings: a `|date` filter chain per cell cost more than the rest
    of the row. A dict, not an object: the template engine tries `row["kind"]` before
    `row.kind`, and on a thousand rows the failed lookups showed.

    `at_iso` is ISO 8601, `*_date` reads `Y-m-d` and `*_clock` `H:i:s.mmm` (milliseconds,
    truncated), as the `|date` filter showed them. Empty `partner_date`/`partner_clock` mean no
    partner time; `skew` is NO_VALUE when unknown; `raw` (the data as indented JSON) is empty
    when the row has no data.
    """

    kind: str
    actor: str
    actor_label: str
    summary: str
    transition: str
    mark: str
    css_class: str
    at_iso: str
    at_date: str
    at_clock: str
    partner_date: str
    partner_clock: str
    skew: str
    source_label: str
    raw: str


def timeline_display(rows: Iterable[TimelineRow]) -> list[TimelineRowDisplay]:
    """The rows as the admin page shows them, in the active time zone (as `|date` would)."""
    zone = timezone.get_current_timezone()
    return [row.display(zone) for row in rows]


def _local(moment: datetime, zone: tzinfo) -> datetime:
    return moment if timezone.is_naive(moment) else moment.astimezone(zone)


def _measured_skew(partner_time: datetime | None, ours: datetime | None) -> int | None:
    if partner_time is None or ours is None:
        return None
    return round((partner_time - ours).total_seconds() * 1000)


def _attempt_data(attempt: PartnerAttempt) -> dict[str, Any]:
    return {
        "attempt_id": attempt.pk,
        "request_id": str(attempt.request_id),
        "operation": attempt.operation,
        "idempotency_key": attempt.idempotency_key,
        "outcome": attempt.outcome,
        "http_status": attempt.http_status,
        "latency_ms": attempt.latency_ms,
        "error": attempt.error,
        "started_at": attempt.started_at.isoformat(),
        "finished_at": attempt.finished_at.isoformat() if attempt.finished_at else None,
        "partner_time": attempt.partner_time.isoformat() if attempt.partner_time else None,
        "resolved_at": attempt.resolved_at.isoformat() if attempt.resolved_at else None,
        "resolution": attempt.resolution,
    }


def _raw_body(event: InboundEvent) -> Any:
    raw = bytes(event.raw_body or b"")
    try:
        return json.loads(raw)
    except ValueError:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode()}


def _inbound_data(event: InboundEvent) -> dict[str, Any]:
    headers = {k: v for k, v in (event.headers or {}).items() if k != "webhook-signature"}
    return {
        "inbound_event_id": event.pk,
        "event_id": event.event_id,
        "state": event.state,
        "result": event.result,
        "signature_valid": event.signature_valid,
        "duplicate_of": event.duplicate_of_id,
        "error": event.error,
        "received_at": event.received_at.isoformat(),
        "processed_at": event.processed_at.isoformat() if event.processed_at else None,
        "headers": headers,
        "body": _raw_body(event),
    }


def _observation_data(observation: PartnerObservation) -> dict[str, Any]:
    return {
        "observation_id": observation.pk,
        "reservation": observation.reservation.partner_ref,
        "source": observation.source,
        "status": observation.status,
        "version": observation.version,
        "result": observation.result,
        "partner_modified_at": (
            observation.partner_modified_at.isoformat() if observation.partner_modified_at else None
        ),
        "payload": observation.payload,
    }


def _inbound_mark(event: InboundEvent) -> str:
    if event.state == InboundState.REJECTED or not event.signature_valid:
        return "rejected"
    if event.duplicate_of_id is not None:
        return "duplicate"
    if event.state == InboundState.RECEIVED:
        return "unprocessed"
    if event.state == InboundState.FAILED:
        return "failed"
    if event.result in (InboundResult.STALE, InboundResult.DUPLICATE, InboundResult.UNLINKED):
        return str(event.result)
    return ""


def _event_mark(event: BookingEvent) -> str:
    if event.kind.startswith("partner.observation.") and event.kind != "partner.observation.applied":
        return event.kind.rsplit(".", 1)[1]  # stale / duplicate: ignored, changed nothing
    if event.kind == "webhook.duplicate":
        return "duplicate"
    if event.kind.endswith(".failed"):
        return "failed"
    return ""


REJECTED_SCAN_LIMIT = 200


def _rejected_deliveries_about(
    booking: Booking, reservations: list[PartnerReservation]
) -> list[InboundEvent]:
    """Deliveries rejected on receipt are linked to no booking (we did not trust their body);
    show those of the booking's partner since it was made whose raw body names it."""
    needles = [booking.reference.encode(), *(r.partner_ref.encode() for r in reservations)]
    candidates = InboundEvent.objects.filter(
        partner_id=booking.partner_id,
        state=InboundState.REJECTED,
        booking__isnull=True,
        received_at__gte=booking.created_at - timedelta(minutes=5),
    ).order_by("-received_at", "-id")[:REJECTED_SCAN_LIMIT]
    return [e for e in candidates if any(needle in bytes(e.raw_body or b"") for needle in needles)]


def booking_timeline(booking: Booking) -> list[TimelineRow]:
    """Everything that happened to one booking, in our time order (six queries).

    BookingEvent rows are the backbone. Attempts, observations and inbound deliveries that a
    BookingEvent already describes (by `attempt_id`, `observation_id` or `inbound_event_id` in its
    data) are attached to that row's data instead of showing twice; the others get rows of
    their own, ignored ones marked as such.
    """
    events = list(BookingEvent.objects.filter(booking=booking).order_by("occurred_at", "id"))
    attempts = {a.pk: a for a in PartnerAttempt.objects.filter(booking=booking).order_by("started_at", "id")}
    observations = {
        o.pk: o
        for o in PartnerObservation.objects.filter(Q(booking=booking) | Q(reservation__booking=booking))
        .select_related("reservation")
        .order_by("received_at", "id")
    }
    inbound = {
        e.pk: e
        for e in InboundEvent.objects.filter(Q(booking=booking) | Q(reservation__booking=booking)).order_by(
            "received_at", "id"
        )
    }
    reservations = list(PartnerReservation.objects.filter(booking=booking).order_by("first_seen_at", "id"))
    for delivery in _rejected_deliveries_about(booking, reservations):
        inbound.setdefault(delivery.pk, delivery)
    skew_estimate = booking.partner.clock_skew_ms

    described: dict[str, set[int]] = {"attempt": set(), "observation": set(), "inbound": set()}
    rows: list[TimelineRow] = []
    for event in events:
        data = dict(event.data or {})
        attempt = attempts.get(data.get("attempt_id") or 0)
        observation = observations.get(data.get("observation_id") or 0)
        delivery = inbound.get(data.get("inbound_event_id") or 0)
        if attempt is not None:
            described["attempt"].add(attempt.pk)
            data["attempt"] = _attempt_data(attempt)
        if observation is not None:
            described["observation"].add(observation.pk)
            data["observation"] = _observation_data(observation)
        if delivery is not None:
            described["inbound"].add(delivery.pk)
            data["inbound_event"] = _inbound_data(delivery)
        partner_time = event.partner_time or (delivery.partner_timestamp if delivery else None)
        rows.append(
            TimelineRow(
                at=event.occurred_at,
                kind=event.kind,
                actor=event.actor,
                actor_label=event.actor_label,
                summary=event.summary,
                source=SOURCE_EVENT,
                source_id=event.pk,
                partner_time=partner_time,
                skew_ms=(
                    event.skew_ms
                    if event.skew_ms is not None
                    else _measured_skew(partner_time, event.occurred_at)
                ),
                from_state=event.from_state,
                to_state=event.to_state,
                mark=_event_mark(event),
                data=data,
            )
        )

    for attempt in attempts.values():
        if attempt.pk in described["attempt"]:
            continue
        status = f" HTTP {attempt.http_status}" if attempt.http_status else ""
        latency = f" in {attempt.latency_ms} ms" if attempt.latency_ms is not None else ""
        error = f": {attempt.error[:120]}" if attempt.error else ""
        ours = attempt.finished_at or attempt.started_at
        rows.append(
            TimelineRow(
                at=attempt.started_at,
                kind=f"partner.attempt.{attempt.outcome}",
                actor=Actor.WORKER,
                actor_label="",
                summary=f"{attempt.operation} {attempt.outcome}{status}{latency}{error}",
                source=SOURCE_ATTEMPT,
                source_id=attempt.pk,
                partner_time=attempt.partner_time,
                skew_ms=_measured_skew(attempt.partner_time, ours),
                mark="in_flight" if attempt.outcome == Outcome.IN_FLIGHT else "",
                data=_attempt_data(attempt),
            )
        )

    for observation in observations.values():
        if observation.pk in described["observation"]:
            continue
        ignored = observation.result != ObservationResult.APPLIED
        version = f" v{observation.version}" if observation.version is not None else ""
        rows.append(
            TimelineRow(
                at=observation.received_at,
                kind=f"partner.observation.{observation.result}",
                actor=Actor.WEBHOOK if observation.source == "webhook" else Actor.WORKER,
                actor_label="",
                summary=(
                    f"{observation.source}: {observation.reservation.partner_ref} "
                    f"{observation.status}{version}" + (f" ignored ({observation.result})" if ignored else "")
                ),
                source=SOURCE_OBSERVATION,
                source_id=observation.pk,
                partner_time=observation.partner_modified_at,
                skew_ms=skew_estimate,
                mark=str(observation.result) if ignored else "",
                data=_observation_data(observation),
            )
        )
        if observation.inbound_event_id:
            described["inbound"].add(observation.inbound_event_id)

    for delivery in inbound.values():
        if delivery.pk in described["inbound"]:
            continue
        mark = _inbound_mark(delivery)
        rows.append(
            TimelineRow(
                at=delivery.received_at,
                kind=f"webhook.{mark or delivery.result or delivery.state}",
                actor=Actor.WEBHOOK,
                actor_label=f"{booking.partner.code}:{delivery.event_id}",
                summary=(
                    f"Webhook {delivery.event_id or '(no id)'} {delivery.get_state_display().lower()}"
                    + (f": {delivery.error[:120]}" if delivery.error else "")
                ),
                source=SOURCE_INBOUND,
                source_id=delivery.pk,
                partner_time=delivery.partner_timestamp,
                skew_ms=_measured_skew(delivery.partner_timestamp, delivery.received_at),
                mark=mark,
                data=_inbound_data(delivery),
            )
        )

    # Compensations are on the timeline through their events; a decision that left no event
    # (an orphan later linked to this booking) still shows.
    compensation_events = {
        (event.kind, (event.data or {}).get("reservation"))
        for event in events
        if event.kind.startswith("partner.compensation.")
    }
    for reservation in reservations:
        if (
            reservation.compensation_requested_at
            and ("partner.compensation.requested", reservation.partner_ref) not in compensation_events
        ):
            rows.append(_compensation_row(reservation, "requested", reservation.compensation_requested_at))
        if (
            reservation.compensated_at
            and ("partner.compensation.verified", reservation.partner_ref) not in compensation_events
        ):
            rows.append(_compensation_row(reservation, "verified", reservation.compensated_at))

    order = {
        SOURCE_EVENT: 0,
        SOURCE_ATTEMPT: 1,
        SOURCE_OBSERVATION: 2,
        SOURCE_INBOUND: 3,
        SOURCE_COMPENSATION: 4,
    }
    rows.sort(key=lambda row: (row.at, order[row.source], row.source_id))
    return rows


def _compensation_row(reservation: PartnerReservation, step: str, at: datetime) -> TimelineRow:
    return TimelineRow(
        at=at,
        kind=f"partner.compensation.{step}",
        actor=Actor.SYSTEM,
        actor_label="",
        summary=f"Compensation of {reservation.partner_ref} {step} ({reservation.compensation_reason})",
        source=SOURCE_COMPENSATION,
        source_id=reservation.pk,
        data={
            "reservation": reservation.partner_ref,
            "reason": reservation.compensation_reason,
            "status": reservation.status,
        },
    )


# --- the support console's lists ------------------------------------------------------------
def needs_attention_queue(*, partner: Partner | None = None) -> QuerySet[Booking]:
    """Bookings waiting for a person, oldest first."""
    rows = Booking.objects.filter(status=BookingState.NEEDS_ATTENTION).select_related("partner", "customer")
    if partner is not None:
        rows = rows.filter(partner=partner)
    return rows.order_by("status_changed_at", "id")


def needs_attention_summary() -> dict[str, list[tuple[str, int]]]:
    base = Booking.objects.filter(status=BookingState.NEEDS_ATTENTION)
    by_reason = (
        base.values_list("attention_reason").annotate(n=Count("id")).order_by("-n", "attention_reason")
    )
    by_partner = base.values_list("partner__code").annotate(n=Count("id")).order_by("-n", "partner__code")
    return {"reasons": list(by_reason), "partners": list(by_partner)}


# --- partner health ----------------------------------------------------------------
ERROR_OUTCOMES = (Outcome.AMBIGUOUS, Outcome.TRANSIENT, Outcome.PERMANENT)


@dataclass
class PartnerHealth:
    partner: Partner
    calls: int = 0
    errors: int = 0
    in_flight: int = 0
    p50_ms: int | None = None
    p99_ms: int | None = None
    outcomes: dict[str, int] = field(default_factory=dict)
    queue_ready: int | None = None
    queue_delayed: int | None = None
    last_webhook_at: datetime | None = None
    circuit: dict[str, Any] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        finished = self.calls - self.in_flight
        return None if finished <= 0 else self.errors / finished

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
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "outcomes": self.outcomes,
            "queue_ready": self.queue_ready,
            "queue_delayed": self.queue_delayed,
            "last_webhook_at": self.last_webhook_at.isoformat() if self.last_webhook_at else None,
            "circuit": self.circuit,
            "clock_skew_ms": self.partner.clock_skew_ms,
            "clock_skew_measured_at": (
                self.partner.clock_skew_measured_at.isoformat()
                if self.partner.clock_skew_measured_at
                else None
            ),
            "problems": self.problems,
        }


def percentile(sorted_values: list[int], fraction: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * fraction // 1))  # ceil
    return sorted_values[int(rank) - 1]


def _broker_client() -> tuple[redis.Redis, str]:
    import dramatiq

    broker = dramatiq.get_broker()
    namespace = settings.DRAMATIQ_BROKER["OPTIONS"].get("namespace", "dramatiq")
    return broker.client, namespace


def partner_health(
    *, window: timedelta = timedelta(hours=1), now: datetime | None = None
) -> list[PartnerHealth]:
    """Per partner over the window: calls, error rate, p50/p99 latency (from PartnerAttempt),
    queue depth (Redis), last webhook, circuit breaker state and clock skew. Three queries."""
    from partners.guard import guard_status

    now = now or timezone.now()
    partners = list(Partner.objects.order_by("code"))
    health = {p.pk: PartnerHealth(partner=p) for p in partners}
    latencies: dict[int, list[int]] = defaultdict(list)
    outcomes: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for partner_id, outcome, latency in PartnerAttempt.objects.filter(
        started_at__gte=now - window
    ).values_list("partner_id", "outcome", "latency_ms"):
        row = health.get(partner_id)
        if row is None:
            continue
        row.calls += 1
        outcomes[partner_id][outcome] += 1
        if outcome in ERROR_OUTCOMES:
            row.errors += 1
        elif outcome == Outcome.IN_FLIGHT:
            row.in_flight += 1
        if latency is not None:
            latencies[partner_id].append(latency)
    last_webhooks = dict(
        InboundEvent.objects.values_list("partner_id").annotate(last=Max("received_at")).order_by()
    )
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
        if client is not None:
            key = f"{namespace}:{partner.queue_name}"
            try:
                row.queue_ready = int(client.llen(key))
                row.queue_delayed = int(client.llen(f"{key}.DQ"))
            except redis.RedisError as exc:
                row.problems.append(f"queue depth unavailable: {exc}")
        elif broker_problem:
            row.problems.append(broker_problem)
        try:
            row.circuit = guard_status(partner)
        except redis.RedisError as exc:
            row.problems.append(f"circuit state unavailable: {exc}")
    return [health[p.pk] for p in partners]
