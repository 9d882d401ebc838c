"""What the system did during each network fault, read after the run from everything recorded:
the broker samples (`partitions`), the clients' requests, our partner attempts, the bookings'
timelines, the partners' ground truth and the schedulers' logs.

These are figures, not verdicts: the invariants are judged by `chaos.checks` as in every run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bookings.models import Booking
from chaos.cluster.partitions import FaultRecord, Sample
from chaos.cluster.stack import RequestRecord
from chaos.model import Snapshot
from chaos.stats import summary
from partners.models import Operation, PartnerAttempt

LOG_LINE = re.compile(r"^ts=(\S+) level=(\w+) logger=(\S+) msg=(\"(?:[^\"\\]|\\.)*\"|\S+)")
SWEEP_DONE = "sweep finished"
# A sweep that outlived its lock: the scheduler finds the lock expired (or another's) on release.
LOCK_LOST = ("sweeper lock lost", "LockNotOwnedError", "LockError", "Cannot release")
ATTEMPT_GRACE_S = 5.0  # attempts this long after a fault still belong to it
DUPLICATE_GRACE_S = 30.0


@dataclass(frozen=True)
class AttemptRow:
    operation: str
    outcome: str
    started: float  # epoch seconds
    finished: float | None
    resolution: str
    error: str


@dataclass(frozen=True)
class LogEvent:
    at: float  # epoch seconds
    level: str
    message: str
    line: str


def attempt_rows(partner_codes: list[str]) -> list[AttemptRow]:
    return [
        AttemptRow(
            operation=operation,
            outcome=outcome,
            started=started.timestamp(),
            finished=finished.timestamp() if finished else None,
            resolution=resolution,
            error=error[:200],
        )
        for operation, outcome, started, finished, resolution, error in PartnerAttempt.objects.filter(
            partner__code__in=partner_codes
        ).values_list("operation", "outcome", "started_at", "finished_at", "resolution", "error")
    ]


def log_events(path: Path) -> list[LogEvent]:
    events = []
    if not path.exists():
        return events
    with path.open(errors="replace") as handle:
        for line in handle:
            match = LOG_LINE.match(line)
            if match:
                at = datetime.fromisoformat(match.group(1)).timestamp()
                message = match.group(4).strip('"')
                events.append(LogEvent(at=at, level=match.group(2), message=message, line=line))
    return events


def fault_figures(
    record: FaultRecord,
    *,
    started_at: float,
    samples: list[Sample],
    requests: list[RequestRecord],
    attempts: list[AttemptRow],
    snapshot: Snapshot,
    scheduler_logs: dict[str, list[LogEvent]],
    addresses: dict[str, str],
    references: dict[str, str],
) -> dict[str, Any]:
    """Figures for one fault; times in seconds, relative to the fault's start or end as named.

    `addresses`: host name -> address (the clients' records name hosts by address);
    `references`: booking id -> reference (messages name bookings by id).
    """
    if record.began_s is None or record.ended_s is None:
        return {**record.as_dict(), "ran": False}
    begin, end = started_at + record.began_s, started_at + record.ended_s
    figures: dict[str, Any] = {**record.as_dict(), "ran": True}
    figures["clients"] = _clients(requests, begin, end)
    figures["attempts"] = _attempts(attempts, begin, end)
    figures["duplicates"] = _duplicates(snapshot, begin, end)
    kind = record.fault.kind
    if kind == "worker_cut":
        figures.update(_worker_cut(record, samples, snapshot, references, begin, end))
    elif kind == "web_cut":
        figures.update(_web_cut(addresses[record.fault.hosts[0]], requests, begin, end))
    elif kind == "broker_cut":
        figures.update(_broker_cut(record, samples, snapshot, begin, end))
    elif kind == "scheduler_cut":
        figures.update(_scheduler_cut(record, scheduler_logs, begin, end))
    return figures


# --- every fault -------------------------------------------------------------------------------
def _clients(requests: list[RequestRecord], begin: float, end: float) -> dict[str, Any]:
    during = [r for r in requests if begin <= r.started < end]
    outcomes: dict[str, int] = {}
    for r in during:
        outcomes[_outcome_class(r.outcome)] = outcomes.get(_outcome_class(r.outcome), 0) + 1
    booking_posts = [r.seconds for r in during if r.method == "POST" and r.path.endswith("/bookings")]
    return {"requests": len(during), "outcomes": outcomes, "booking_post_s": summary(booking_posts)}


def _attempts(attempts: list[AttemptRow], begin: float, end: float) -> dict[str, Any]:
    during = [a for a in attempts if begin <= a.started < end + ATTEMPT_GRACE_S]
    by_outcome: dict[str, int] = {}
    for a in during:
        key = f"{a.operation} {a.outcome}"
        by_outcome[key] = by_outcome.get(key, 0) + 1
    fenced = [a for a in during if a.operation == Operation.CREATE and a.outcome == "ambiguous"]
    resolutions: dict[str, int] = {}
    for a in fenced:
        resolutions[a.resolution or "unresolved"] = resolutions.get(a.resolution or "unresolved", 0) + 1
    outlived = [a for a in attempts if a.started < begin and (a.finished is None or a.finished > end)]
    return {
        "by_outcome": by_outcome,
        "fenced_creates": len(fenced),
        "fence_resolutions": resolutions,
        "begun_before_and_finished_after": len(outlived),
    }


def _duplicates(snapshot: Snapshot, begin: float, end: float) -> dict[str, int]:
    """Second reservations the partners created for one booking during the fault (or just after)."""
    created = compensated = 0
    for reservations in snapshot.truth_by_reference().values():
        if len(reservations) < 2:
            continue
        ordered = sorted(reservations, key=lambda t: _created_at(snapshot, t.partner_code, t.history))
        for duplicate in ordered[1:]:
            at = _created_at(snapshot, duplicate.partner_code, duplicate.history)
            if begin <= at < end + DUPLICATE_GRACE_S:
                created += 1
                compensated += int(not duplicate.live)
    return {"created": created, "compensated": compensated}


def _created_at(snapshot: Snapshot, code: str, history: tuple[Any, ...]) -> float:
    return snapshot.real_time(code, history[0].at).timestamp() if history else 0.0


# --- per fault ---------------------------------------------------------------------------------
def _worker_cut(
    record: FaultRecord,
    samples: list[Sample],
    snapshot: Snapshot,
    references: dict[str, str],
    begin: float,
    end: float,
) -> dict[str, Any]:
    """What the cut host held, who moved it on meanwhile, the broker's redelivery, the return."""
    ids = set(record.worker_ids)
    began, ended = record.began_s or 0.0, record.ended_s or 0.0
    requeued = next(
        (s.at_s for s in samples if s.at_s > began and not any(s.acks.get(w, 0) for w in ids)), None
    )
    before = [s for s in samples if s.at_s < began]
    workers_before = _live_workers(before[-1]) if before else 0
    back = next((s.at_s for s in samples if s.at_s > ended and _live_workers(s) >= workers_before), None)
    # The cut host's own processes (the ids seen from its address) talking to the broker again: the
    # count above also waits for web and scheduler processes, which beat only when they enqueue.
    host_back = next(
        (s.at_s for s in samples if s.at_s > ended and any(s.heartbeats.get(w, -1.0) > ended for w in ids)),
        None,
    )
    # A booking another host took further while this one was away: the cut host could not
    # commit anything then, so its timeline's events in the window are the others' work.
    held_references = {references[arg] for _, arg in record.held if arg in references}
    held = [snapshot.bookings[r] for r in held_references if r in snapshot.bookings]
    moved_on = [b for b in held if any(begin < e.occurred_at.timestamp() < end for e in b.events)]
    return {
        "held_at_cut": len(record.held),
        "held_bookings": len(held),
        "held_bookings_moved_on_elsewhere_while_cut_off": len(moved_on),
        "broker_redelivered_after_s": _since(requeued, began),
        "broker_redelivered_while_cut_off": requeued is not None and requeued < ended,
        "all_workers_back_after_s": _since(back, ended),
        "cut_host_back_after_s": _since(host_back, ended),
    }


def booking_references(partner_codes: list[str]) -> dict[str, str]:
    """Booking id -> reference for the run's bookings (messages name bookings by id)."""
    rows = Booking.objects.filter(partner__code__in=partner_codes).values_list("pk", "reference")
    return {str(pk): reference for pk, reference in rows}


def _web_cut(address: str, requests: list[RequestRecord], begin: float, end: float) -> dict[str, Any]:
    """Requests that died with the host, the same key retried on another, the host's return."""
    on_cut = [r for r in requests if r.host.split(":")[0] == address]
    failed = [r for r in on_cut if r.started < end and r.started + r.seconds >= begin and _failed(r)]
    failed_keys = {r.idempotency_key for r in failed if r.idempotency_key}
    rescued = {
        r.idempotency_key
        for r in requests
        if r.idempotency_key in failed_keys
        and r.host.split(":")[0] != address
        and r.outcome == "202"
        and r.started >= begin
    }
    answered = sorted(r.started for r in on_cut if r.started >= end and not _failed(r))
    return {
        "requests_lost_with_the_host": len(failed),
        "in_flight_at_cut": sum(1 for r in on_cut if r.started < begin < r.started + r.seconds),
        "keys_retried_elsewhere_and_accepted": len(rescued),
        "host_back_after_s": _since(answered[0], end) if answered else None,
    }


def _broker_cut(
    record: FaultRecord, samples: list[Sample], snapshot: Snapshot, begin: float, end: float
) -> dict[str, Any]:
    """Bookings accepted while the broker was away, when they were submitted, the workers' return."""
    made = [b for b in snapshot.bookings.values() if begin <= b.created_at.timestamp() < end]
    submitted = []
    for booking in made:
        moved = next((e for e in booking.events if e.from_state == "requested" and e.to_state), None)
        if moved is not None:
            submitted.append(moved.occurred_at.timestamp() - end)
    began, ended = record.began_s or 0.0, record.ended_s or 0.0
    before = [s for s in samples if s.at_s < began]
    workers_before = _live_workers(before[-1]) if before else 0
    # Killed and restarted workers come back under new ids: count live workers, not ids.
    back = next((s.at_s for s in samples if s.at_s > ended and _live_workers(s) >= workers_before), None)
    return {
        "bookings_accepted_while_away": len(made),
        "of_them_submitted": len(submitted),
        "submitted_after_heal_s": summary(submitted),
        "workers_before": workers_before,
        "all_workers_back_after_s": _since(back, ended),
    }


def _live_workers(sample: Sample) -> int:
    """Broker clients whose heartbeat is at most two seconds old in the sample: the workers, and
    the web and scheduler processes too (Dramatiq's dispatch script beats for every command, an
    enqueue included)."""
    return sum(1 for beat in sample.heartbeats.values() if beat > sample.at_s - 2)


def _scheduler_cut(
    record: FaultRecord,
    logs: dict[str, list[LogEvent]],
    begin: float,
    end: float,
) -> dict[str, Any]:
    """Who held the sweeper lock, when the standby took over, whether sweeps overlapped."""
    cut = record.fault.hosts[0]
    others = [name for name in logs if name != cut]
    ttl_s = record.at_begin.get("sweeper_lock_ttl_ms_at_begin", -2) / 1000
    took_over = min(
        (e.at for name in others for e in logs[name] if e.at >= begin and e.message == SWEEP_DONE),
        default=None,
    )
    # The cut host held the lock if the standby could only sweep once the lock had expired.
    held = ttl_s > 0 and (took_over is None or took_over >= begin + ttl_s - 0.5)
    own = logs.get(cut, [])
    lock_lost = [e for e in own if e.at >= end and any(marker in e.line for marker in LOCK_LOST)]
    back = next((e.at for e in own if e.at >= end and e.message == SWEEP_DONE), None)
    return {
        "cut_host_held_the_lock": held,
        "standby_swept_after_s": _since(took_over, begin),
        "sweeps_during_cut": {
            name: sum(1 for e in events if begin <= e.at < end and e.message == SWEEP_DONE)
            for name, events in logs.items()
        },
        "sweep_outlived_its_lock": len(lock_lost),
        "cut_host_swept_again_after_s": _since(back, end),
    }


def _outcome_class(outcome: str) -> str:
    return f"{outcome[0]}xx" if outcome[:1].isdigit() else outcome


def _failed(record: RequestRecord) -> bool:
    return not record.outcome[:1].isdigit() or record.outcome.startswith("5")


def _since(at: float | None, origin: float) -> float | None:
    return None if at is None else round(at - origin, 2)
