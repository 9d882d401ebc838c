"""A booking's one timeline (invariant 8): every source merged in our time order.

BookingEvent rows are the backbone. Attempts, observations and inbound deliveries that an event
already describes (by `attempt_id`, `observation_id` or `inbound_event_id` in its data) are
attached to that row's data instead of showing twice; the others get rows of their own, built
one small function per source, ignored ones marked as such. A delivery is here only when it is
linked to the booking, which only an authentic one ever is: what anyone could have posted, naming
the booking or not, is in its partner's feed (`partner_feed`), never here. A booking that pays
adds its payment's operations and the provider's webhook deliveries the same way: attached to the
event that names them (an operation by its key, a delivery by its event id), else rows of their
own (`payments/timeline.py` words them).

Reads at the partner that found nothing new (the audit's hourly re-read of a confirmed booking,
until its stay) are stored like every call (invariant 8), but a run of them reads as one row:
"Checked at the partner N times, <first> to <last>: unchanged" (`SOURCE_CHECKS`). A first query reads
only the events' kinds and times to find the runs; the rows of a run (its events, their attempts
and observations with the partner's payloads) are then left out of the queries that load rows
in full, so a booking audited for two years costs what one audited for a day does, plus one
small row per event in that first query.
"""

from __future__ import annotations

import base64
import json
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from django.db.models import BooleanField, Case, Q, Value, When
from django.db.models.fields.json import KT

from bookings import ports
from bookings.models import Actor, Booking, BookingEvent, Notification
from bookings.notifications import message_id, timeline_entries
from config.text import strict_json
from partners.models import (
    InboundEvent,
    ObservationResult,
    Operation,
    OrphanCaseEvent,
    Outcome,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
    Source,
)
from partners.services.skew import skew_between
from partners.services.sync import HOLDS_NOTHING, HOLDS_PREFIX
from partners.timeline import (
    attempt_data,
    attempt_summary,
    compensation_data,
    compensation_summary,
    observation_data,
    observation_summary,
)
from payments.models import OperationState, PaymentEvent, PaymentOperation
from payments.timeline import event_data, event_mark, event_summary, operation_data, operation_summary
from reconciliation.selectors.partner_feed import delivery_mark

# Where a row came from; the admin template and the command colour rows by it. Rows at the same
# instant keep this order.
SOURCE_EVENT = "event"
SOURCE_ATTEMPT = "attempt"
SOURCE_OBSERVATION = "observation"
SOURCE_INBOUND = "inbound"
SOURCE_COMPENSATION = "compensation"
SOURCE_ORPHAN_CASE = "orphan_case"  # the history of an orphan case that was linked to the booking
SOURCE_NOTIFICATION = "notification"  # mail owed to the customer about a change they were shown
SOURCE_PAYMENT_OPERATION = "payment_operation"  # something asked of the payment provider
SOURCE_PAYMENT_EVENT = "payment_event"  # a webhook delivery of the payment provider
SOURCE_CHECKS = "checks"  # a run of reads at the partner that found nothing new, folded
_SOURCE_ORDER = {
    source: rank
    for rank, source in enumerate(
        [
            SOURCE_EVENT,
            SOURCE_ATTEMPT,
            SOURCE_OBSERVATION,
            SOURCE_INBOUND,
            SOURCE_COMPENSATION,
            SOURCE_ORPHAN_CASE,
            SOURCE_NOTIFICATION,
            SOURCE_PAYMENT_OPERATION,
            SOURCE_PAYMENT_EVENT,
            SOURCE_CHECKS,
        ]
    )
}

# A row's data as the console and the command show it raw.
_RAW_JSON = json.JSONEncoder(indent=2, sort_keys=True, default=str)


@dataclass(frozen=True)
class TimelineRow:
    """One line of a booking's story.

    `at` is our clock; `partner_time` the partner's clock when the row reflects something the
    partner said; `skew_ms` the partner's clock minus ours (the per-partner estimate when the row
    carries one, else the difference measured on this row). `mark` flags rows that changed
    nothing: ignored, stale, duplicate, unlinked, late, invalid, failed, in_flight, unknown (a
    mail that may or may not have reached the customer).
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


# --- reads that found nothing new ----------------------------------------------------------------
# A read: a call that only asks the partner what it holds.
_READ_OPERATIONS = [Operation.GET, Operation.LOOKUP]
# An observation a read brought (a webhook's is news the partner sent, never folded).
_READ_SOURCES = [Source.LOOKUP, Source.LISTING, Source.RESPONSE]
# The fewest reads in a row that fold; the pieces of a run that other rows split may be shorter.
FOLD_MIN_CHECKS = 2
# How many runs, the longest first, the full queries leave out by their bounds; the rest (short
# runs between frequent news) are loaded and dropped here, to keep the statements short.
_RUNS_LEFT_OUT_IN_SQL = 50


def _quiet_event() -> Q:
    """The events of a read that found nothing new: its call answered, the partner's copy the same
    as ours (a duplicate observation), and the sync's end naming the reservations it found."""
    return (
        Q(kind="partner.attempt.ok", data__operation__in=_READ_OPERATIONS)
        | Q(kind="partner.observation.duplicate", data__source__in=_READ_SOURCES)
        | (Q(kind="sync.completed", summary__startswith=HOLDS_PREFIX) & ~Q(summary=HOLDS_NOTHING))
    )


@dataclass(frozen=True)
class _Check:
    """One read that found nothing new: its events, from its call's row to the sync's end."""

    first_at: datetime
    last_at: datetime
    event_ids: tuple[int, ...]
    attempt_ids: tuple[int, ...]
    observation_ids: tuple[int, ...]


@dataclass(frozen=True)
class _Run:
    """Consecutive reads that found nothing new, folded into one row."""

    checks: tuple[_Check, ...]

    @property
    def first_at(self) -> datetime:
        return self.checks[0].first_at

    @property
    def last_at(self) -> datetime:
        return self.checks[-1].last_at

    def ids(self, name: str) -> set[int]:
        return {pk for check in self.checks for pk in getattr(check, name)}

    def left_out(self) -> tuple[Q, Q, Q]:
        """Its events, attempts and observations, for the full queries to leave out: by its
        bounds and what only a quiet read writes, so a row of anything else is never left out."""
        events, attempts, observations = (
            self.ids(n) for n in ("event_ids", "attempt_ids", "observation_ids")
        )
        return (
            _quiet_event()
            & Q(occurred_at__range=(self.first_at, self.last_at), id__range=(min(events), max(events))),
            Q(operation__in=_READ_OPERATIONS, outcome=Outcome.OK, id__range=(min(attempts), max(attempts)))
            if attempts
            else Q(pk__in=[]),
            Q(
                result=ObservationResult.DUPLICATE,
                source__in=_READ_SOURCES,
                id__range=(min(observations), max(observations)),
            )
            if observations
            else Q(pk__in=[]),
        )


# The ids a folded run's events name, by the key of the events' data that names them.
_FOLDED_IDS = {"attempt_id": "attempt_ids", "observation_id": "observation_ids"}


def _ref(value: Any) -> int | None:
    """An id named in an event's data, as the JSON key text query reads it."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _quiet_runs(booking: Booking) -> list[_Run]:
    """The booking's runs of reads that found nothing new, from one light query over its events
    (kind, time, and the ids a quiet event names; never their data).

    A read counts when every event from its call to the sync's end is quiet and it begins right
    after the end of another sync (or at the start): the first read after anything else (a
    webhook's news, a support action, a read that changed something) keeps its rows, so a read
    whose sync also wrote news never loses a row into a fold."""
    skeleton = (
        BookingEvent.objects.filter(booking=booking)
        .annotate(
            quiet=Case(
                When(_quiet_event(), then=Value(True)), default=Value(False), output_field=BooleanField()
            ),
            attempt_ref=KT("data__attempt_id"),
            observation_ref=KT("data__observation_id"),
        )
        .order_by("occurred_at", "id")
        .values_list("id", "occurred_at", "kind", "quiet", "attempt_ref", "observation_ref")
    )
    runs: list[_Run] = []
    run: list[_Check] = []
    current: list[tuple] = []
    after_sync = True  # whether the last event ended a sync (or there was none yet)

    def close_run() -> None:
        if len(run) >= FOLD_MIN_CHECKS:
            runs.append(_Run(tuple(run)))
        run.clear()

    for row in skeleton:
        _pk, at, kind, quiet, *_refs = row
        if not quiet or not (current or after_sync):
            # News, or a quiet event of a read that began after news: the run ends here.
            close_run()
            current.clear()
            after_sync = kind.startswith("sync.")
            continue
        current.append(row)
        if kind.startswith("sync."):
            if current[0][2].startswith("partner.attempt."):
                run.append(
                    _Check(
                        first_at=current[0][1],
                        last_at=at,
                        event_ids=tuple(r[0] for r in current),
                        attempt_ids=tuple({a for r in current if (a := _ref(r[4])) is not None}),
                        observation_ids=tuple({o for r in current if (o := _ref(r[5])) is not None}),
                    )
                )
            else:
                close_run()  # a sync that read nothing is not a read at the partner
            current.clear()
            after_sync = True
    close_run()  # a read still under way at the end keeps its rows (`current`)
    return runs


def _left_out(runs: list[_Run]) -> tuple[Q, Q, Q]:
    """What the full queries leave out: the rows of the longest runs (`_RUNS_LEFT_OUT_IN_SQL`)."""
    longest = sorted(runs, key=lambda r: len(r.checks), reverse=True)[:_RUNS_LEFT_OUT_IN_SQL]
    nothing = Q(pk__in=[])
    events, attempts, observations = nothing, nothing, nothing
    for run in longest:
        e, a, o = run.left_out()
        events, attempts, observations = events | e, attempts | a, observations | o
    return events, attempts, observations


def _split(run: _Run, times: list[datetime]) -> list[_Run]:
    """The run in pieces wherever another row of the timeline (sorted `times`) falls between two
    of its reads: the fold stands for consecutive rows only."""
    pieces: list[_Run] = []
    piece: list[_Check] = [run.checks[0]]
    for check in run.checks[1:]:
        index = bisect_right(times, piece[-1].last_at)
        if index < len(times) and times[index] < check.first_at:
            pieces.append(_Run(tuple(piece)))
            piece = []
        piece.append(check)
    pieces.append(_Run(tuple(piece)))
    return pieces


def _utc_minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _checks_row(run: _Run, booking: Booking) -> TimelineRow:
    count = len(run.checks)
    times = "once" if count == 1 else f"{count} times"
    span = (
        _utc_minute(run.first_at)
        if count == 1
        else f"{_utc_minute(run.first_at)}\N{EN DASH}{_utc_minute(run.last_at)}"
    )
    events = run.ids("event_ids")
    return TimelineRow(
        at=run.first_at,
        kind="partner.checks.unchanged",
        actor=Actor.WORKER,
        actor_label="",
        summary=f"Checked at the partner {times}, {span} UTC: unchanged",
        source=SOURCE_CHECKS,
        source_id=min(events),
        mark="unchanged",
        data={
            "checks": count,
            "first_at": run.first_at.isoformat(),
            "last_at": run.last_at.isoformat(),
            # The stored rows themselves (invariant 8): the booking's events between these.
            "booking": str(booking.pk),
            "events": len(events),
            "first_event_id": min(events),
            "last_event_id": max(events),
            "attempts": len(run.ids("attempt_ids")),
            "observations": len(run.ids("observation_ids")),
        },
    )


@dataclass(frozen=True)
class _Story:
    """Everything recorded about one booking, by id (seven queries; eight when one of its
    reservations was an orphan with a case; two more when it pays), but the rows of its runs of
    reads that found nothing new (`runs`), which only the first, light query reads."""

    booking: Booking
    events: list[BookingEvent]
    attempts: dict[int, PartnerAttempt]
    observations: dict[int, PartnerObservation]
    inbound: dict[int, InboundEvent]
    reservations: list[PartnerReservation]
    orphan_events: list[OrphanCaseEvent]
    notifications: list[Notification]
    payment_operations: list[PaymentOperation]
    payment_events: list[PaymentEvent]
    runs: list[_Run]

    @classmethod
    def read(cls, booking: Booking) -> _Story:
        runs = _quiet_runs(booking)
        events_folded, attempts_folded, observations_folded = _left_out(runs)
        folded = {
            name: set().union(*(run.ids(name) for run in runs))
            for name in ("event_ids", "attempt_ids", "observation_ids")
        }
        linked = Q(booking=booking) | Q(reservation__booking=booking)
        # Authentic deliveries only, however a row came to be linked.
        deliveries = InboundEvent.objects.filter(linked, signature_valid=True)
        reservations = list(
            PartnerReservation.objects.filter(booking=booking)
            .select_related("orphan_case")
            .order_by("first_seen_at", "id")
        )
        cases = [r.orphan_case.pk for r in reservations if hasattr(r, "orphan_case")]
        pays = ports.pays(booking)
        return cls(
            booking=booking,
            events=[
                e
                for e in BookingEvent.objects.filter(booking=booking)
                .exclude(events_folded)
                .order_by("occurred_at", "id")
                if e.pk not in folded["event_ids"]
            ],
            attempts={
                a.pk: a
                for a in PartnerAttempt.objects.filter(booking=booking)
                .exclude(attempts_folded)
                .order_by("started_at", "id")
                if a.pk not in folded["attempt_ids"]
            },
            observations={
                o.pk: o
                for o in PartnerObservation.objects.filter(linked)
                .exclude(observations_folded)
                .select_related("reservation")
                .order_by("received_at", "id")
                if o.pk not in folded["observation_ids"]
            },
            inbound={e.pk: e for e in deliveries.order_by("received_at", "id")},
            reservations=reservations,
            orphan_events=(
                list(OrphanCaseEvent.objects.filter(case__in=cases).order_by("occurred_at", "id"))
                if cases
                else []
            ),
            notifications=list(Notification.objects.filter(booking=booking).order_by("created_at", "id")),
            payment_operations=(
                list(PaymentOperation.objects.filter(payment__booking=booking).order_by("opened_at", "id"))
                if pays
                else []
            ),
            payment_events=(
                list(PaymentEvent.objects.filter(payment__booking=booking).order_by("received_at", "id"))
                if pays
                else []
            ),
            runs=runs,
        )

    def described(self, key: str) -> set[int]:
        """The ids that events name in their data under `key` (e.g. `attempt_id`), those of the
        folded runs' events included."""
        named = {(event.data or {}).get(key) for event in self.events} - {None}
        if key in _FOLDED_IDS:
            named |= set().union(*(run.ids(_FOLDED_IDS[key]) for run in self.runs))
        return named

    @cached_property
    def operations_by_key(self) -> dict[str, PaymentOperation]:
        return {operation.idempotency_key: operation for operation in self.payment_operations}

    @cached_property
    def payment_event_rows(self) -> dict[str, int]:
        """The first event row describing each provider delivery, by the delivery's event id: the
        rows its processing wrote (their actor label is the event id) or its refusal named."""
        ids = {event.event_id for event in self.payment_events}
        first: dict[str, int] = {}
        for event in self.events:
            named = (event.data or {}).get("event") if event.kind == "payment.webhook.refused" else None
            label = event.actor_label if event.actor == Actor.WEBHOOK else None
            for event_id in (named, label):
                if event_id in ids and event_id not in first:
                    first[event_id] = event.pk
        return first


def _observation_detail(observation: PartnerObservation) -> dict[str, Any]:
    return {**observation_data(observation), "payload": observation.payload}


def _raw_body(event: InboundEvent) -> Any:
    """The stored body as JSON when strict JSON can carry it, else as its text (or base64): an
    authentic delivery is linked to its booking even when refused for what it holds."""
    if event.body_pruned_at is not None:
        return None  # cleared by the retention (`body_pruned_at` says when)
    raw = bytes(event.raw_body or b"")
    try:
        return strict_json(raw)
    except (ValueError, RecursionError):
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
        "tries": event.tries,
        "received_at": event.received_at.isoformat(),
        "processed_at": event.processed_at.isoformat() if event.processed_at else None,
        "source_address": event.source_address,
        "body_size": event.body_size,
        "body_sha256": event.body_sha256,
        "evidence_complete": event.evidence_complete,
        "headers": headers,
        "body": _raw_body(event),
        "body_pruned_at": event.body_pruned_at.isoformat() if event.body_pruned_at else None,
    }


def _event_mark(event: BookingEvent) -> str:
    if event.kind.startswith("partner.observation.") and event.kind != "partner.observation.applied":
        return event.kind.rsplit(".", 1)[1]  # stale / duplicate: ignored, changed nothing
    if event.kind in ("webhook.duplicate", "webhook.duplicate.other_content"):
        return "duplicate"
    if event.kind.endswith(".failed"):
        return "failed"
    return ""


def _inbound_mark(event: InboundEvent) -> str:
    mark = delivery_mark(signature_valid=event.signature_valid, state=event.state, result=event.result)
    return "" if mark == "applied" else mark


# --- one row builder per source ---------------------------------------------------------------
def _event_row(event: BookingEvent, story: _Story) -> TimelineRow:
    """An event, with the attempt, observation and delivery it describes attached to its data."""
    data = dict(event.data or {})
    attempt = story.attempts.get(data.get("attempt_id") or 0)
    observation = story.observations.get(data.get("observation_id") or 0)
    delivery = story.inbound.get(data.get("inbound_event_id") or 0)
    if attempt is not None:
        data["attempt"] = attempt_data(attempt)
    if observation is not None:
        data["observation"] = _observation_detail(observation)
    if delivery is not None:
        data["inbound_event"] = _inbound_data(delivery)
    operation = story.operations_by_key.get(data.get("idempotency_key") or "")
    if operation is not None:
        data["payment_operation"] = operation_data(operation)
    for payment_event in story.payment_events:
        if story.payment_event_rows.get(payment_event.event_id) == event.pk:
            data["payment_event"] = event_data(payment_event)
    partner_time = event.partner_time or (delivery.partner_timestamp if delivery else None)
    return TimelineRow(
        at=event.occurred_at,
        kind=event.kind,
        actor=event.actor,
        actor_label=event.actor_label,
        summary=event.summary,
        source=SOURCE_EVENT,
        source_id=event.pk,
        partner_time=partner_time,
        skew_ms=event.skew_ms if event.skew_ms is not None else skew_between(partner_time, event.occurred_at),
        from_state=event.from_state,
        to_state=event.to_state,
        mark=_event_mark(event),
        data=data,
    )


def _attempt_row(attempt: PartnerAttempt) -> TimelineRow:
    return TimelineRow(
        at=attempt.started_at,
        kind=f"partner.attempt.{attempt.outcome}",
        actor=Actor.WORKER,
        actor_label="",
        summary=attempt_summary(attempt),
        source=SOURCE_ATTEMPT,
        source_id=attempt.pk,
        partner_time=attempt.partner_time,
        skew_ms=skew_between(attempt.partner_time, attempt.finished_at or attempt.started_at),
        mark="in_flight" if attempt.outcome == Outcome.IN_FLIGHT else "",
        data=attempt_data(attempt),
    )


def _observation_row(observation: PartnerObservation, skew_estimate: int | None) -> TimelineRow:
    ignored = observation.result != ObservationResult.APPLIED
    return TimelineRow(
        at=observation.received_at,
        kind=f"partner.observation.{observation.result}",
        actor=Actor.WEBHOOK if observation.source == "webhook" else Actor.WORKER,
        actor_label="",
        summary=observation_summary(observation),
        source=SOURCE_OBSERVATION,
        source_id=observation.pk,
        partner_time=observation.partner_modified_at,
        skew_ms=skew_estimate,
        mark=str(observation.result) if ignored else "",
        data=_observation_detail(observation),
    )


def _inbound_row(delivery: InboundEvent, partner_code: str) -> TimelineRow:
    mark = _inbound_mark(delivery)
    error = f": {delivery.error[:160]}" if delivery.error else ""
    return TimelineRow(
        at=delivery.received_at,
        kind=f"webhook.{mark or delivery.result or delivery.state}",
        actor=Actor.WEBHOOK,
        actor_label=f"{partner_code}:{delivery.event_id}",
        summary=f"Webhook {delivery.event_id or '(no id)'} {delivery.get_state_display().lower()}{error}",
        source=SOURCE_INBOUND,
        source_id=delivery.pk,
        partner_time=delivery.partner_timestamp,
        skew_ms=skew_between(delivery.partner_timestamp, delivery.received_at),
        mark=mark,
        data=_inbound_data(delivery),
    )


def _compensation_rows(story: _Story) -> list[TimelineRow]:
    """Compensations are on the timeline through their events; a decision that left no event
    (an orphan later linked to this booking) still shows."""
    recorded = {
        (event.kind, (event.data or {}).get("reservation"))
        for event in story.events
        if event.kind.startswith("partner.compensation.")
    }
    rows = []
    for reservation in story.reservations:
        for step, at in (
            ("requested", reservation.compensation_requested_at),
            ("verified", reservation.compensated_at),
        ):
            kind = f"partner.compensation.{step}"
            if at is not None and (kind, reservation.partner_ref) not in recorded:
                rows.append(
                    TimelineRow(
                        at=at,
                        kind=kind,
                        actor=Actor.SYSTEM,
                        actor_label="",
                        summary=compensation_summary(reservation, step),
                        source=SOURCE_COMPENSATION,
                        source_id=reservation.pk,
                        data=compensation_data(reservation),
                    )
                )
    return rows


def _orphan_case_row(event: OrphanCaseEvent) -> TimelineRow:
    """A step of the case of a reservation that was an orphan before it was linked here."""
    return TimelineRow(
        at=event.occurred_at,
        kind=event.kind,
        actor=event.actor,
        actor_label=event.actor_label,
        summary=f"Orphan case #{event.case_id}: {event.summary}",
        source=SOURCE_ORPHAN_CASE,
        source_id=event.pk,
        data=event.data,
    )


def _notification_rows(notification: Notification) -> list[TimelineRow]:
    """A mail owed to the customer: when it was owed, and how its latest attempt went."""
    data = {
        "notification_id": notification.pk,
        "kind": notification.kind,
        "status_version": notification.status_version,
        "message": notification.message,
        "state": notification.state,
        "attempts": notification.attempts,
        "error": notification.error,
        "message_id": message_id(notification),
    }
    return [
        TimelineRow(
            at=entry.at,
            kind=entry.kind,
            actor=entry.actor,
            actor_label="",
            summary=entry.summary,
            source=SOURCE_NOTIFICATION,
            source_id=notification.pk,
            mark=entry.mark,
            data=data,
        )
        for entry in timeline_entries(notification)
    ]


def _payment_operation_row(operation: PaymentOperation, currency: str) -> TimelineRow:
    """An operation no event names (e.g. committed, and its run died before the first call)."""
    return TimelineRow(
        at=operation.opened_at,
        kind=f"payment.operation.{operation.state}",
        actor=Actor.WORKER,
        actor_label="",
        summary=operation_summary(operation, currency),
        source=SOURCE_PAYMENT_OPERATION,
        source_id=operation.pk,
        mark="in_flight" if operation.state == OperationState.OPEN else "",
        data=operation_data(operation),
    )


def _payment_event_row(event: PaymentEvent) -> TimelineRow:
    """A provider delivery no event describes: not processed yet, or set aside."""
    return TimelineRow(
        at=event.received_at,
        kind=f"payment.webhook.{event.state}",
        actor=Actor.WEBHOOK,
        actor_label=event.event_id,
        summary=event_summary(event),
        source=SOURCE_PAYMENT_EVENT,
        source_id=event.pk,
        mark=event_mark(event),
        data=event_data(event),
    )


def booking_timeline(booking: Booking) -> list[TimelineRow]:
    """Everything that happened to one booking, in our time order, runs of reads that found
    nothing new folded into one row each (seven queries, eight with the history of an orphan
    case linked to it, two more when it pays)."""
    story = _Story.read(booking)
    attempts_described = story.described("attempt_id")
    observations_described = story.described("observation_id")
    own_observations = [o for pk, o in story.observations.items() if pk not in observations_described]
    # A delivery is described by the event naming it, or by the observation it brought.
    inbound_described = story.described("inbound_event_id") | {o.inbound_event_id for o in own_observations}
    rows = [_event_row(event, story) for event in story.events]
    rows += [_attempt_row(a) for pk, a in story.attempts.items() if pk not in attempts_described]
    rows += [_observation_row(o, booking.partner.clock_skew_ms) for o in own_observations]
    rows += [
        _inbound_row(d, booking.partner.code)
        for pk, d in story.inbound.items()
        if pk not in inbound_described
    ]
    rows += _compensation_rows(story)
    rows += [
        _orphan_case_row(e)
        for e in story.orphan_events
        if e.pk not in story.described("orphan_case_event_id")
    ]
    rows += [row for notification in story.notifications for row in _notification_rows(notification)]
    keys_named = story.described("idempotency_key")
    rows += [
        _payment_operation_row(o, booking.currency)
        for o in story.payment_operations
        if o.idempotency_key not in keys_named
    ]
    described_deliveries = story.payment_event_rows
    rows += [_payment_event_row(e) for e in story.payment_events if e.event_id not in described_deliveries]
    times = sorted(row.at for row in rows)
    rows += [_checks_row(piece, booking) for run in story.runs for piece in _split(run, times)]
    rows.sort(key=lambda row: (row.at, _SOURCE_ORDER[row.source], row.source_id))
    return rows
