"""The honest-status contract (docs/design.md), judged by what the run's clients were shown.

Each view a client received (`Snapshot.shown`: a stream's event, a poll's answer, the API's answer
to a POST or cancel, with the time it arrived on our clock) is held against the partner's own
history (its timestamps brought to our clock by its configured skew) and our record:

- `customer_confirmed_after_partner`: `confirmed` only once the partner had confirmed;
- `customer_ended_when_released`: `failed`, `cancelled` or `disrupted_ended` (the views that say
  nothing is held) only while nothing was live at the partner for the booking;
- `customer_never_backwards`: per client, versions never go back; one version is one view for
  every client; `pending` never after `confirmed`, neither as shown nor on the timeline's record
  of every version;
- `customer_last_shown_final`: every client that followed a booking to the end shows the
  booking's final view (the run stops our processes, then lets its clients catch up).

A run in which nobody watched (`Snapshot.shown is None`, e.g. a cluster run) reports each as not
observed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from chaos.checks.base import CheckResult, Violation, booking_evidence
from chaos.model import LIVE, OurReservation, ShownView, Snapshot, TruthReservation
from chaos.stats import summary

SHOWN_LINES = 40  # views of one booking kept as evidence
# The views that tell the customer nothing is held at the partner for the booking, by label.
NOTHING_HELD = {"failed": "failed", "cancelled": "cancelled"}
ENDED_MESSAGE = "disrupted_ended"


def not_observed(result: CheckResult, what: str) -> CheckResult:
    result.notes.append(f"not observed: {what}")
    result.figures["observed"] = False
    return result


def shown_lines(views: list[ShownView]) -> list[str]:
    lines = [v.excerpt() for v in views]
    if len(lines) > SHOWN_LINES:
        half = SHOWN_LINES // 2
        lines = [*lines[:half], f"... {len(lines) - SHOWN_LINES} views ...", *lines[-half:]]
    return lines


def evidence(
    snapshot: Snapshot,
    reference: str,
    views: list[ShownView],
    *,
    truth: dict[str, list[TruthReservation]] | None = None,
    **more: Any,
) -> dict[str, Any]:
    """What was shown of the booking, its final view, our timeline and the partner's history
    (`truth`: `snapshot.truth_by_reference()`, computed once by the caller)."""
    booking = snapshot.bookings.get(reference)
    grouped = truth if truth is not None else snapshot.truth_by_reference()
    data = booking_evidence(booking, grouped.get(reference, []))
    if booking is not None:
        data["final_view"] = f"{booking.view_status}/{booking.view_message} v{booking.view_version}"
    return {"shown": shown_lines(views), **more, **data}


# --- confirmed only once the partner confirmed ---------------------------------------------------
def check_confirmed_after_partner(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="customer_confirmed_after_partner",
        invariant="no client is shown `confirmed` before the partner confirmed the booking's reservation "
        "(its own history, on our clock)",
    )
    if snapshot.shown is None:
        return not_observed(result, "no client followed the bookings in this run")
    truth = snapshot.truth_by_reference()
    delays: list[float] = []
    for reference, views in snapshot.shown_by_reference().items():
        confirmed = [v for v in views if v.status == "confirmed"]
        if not confirmed:
            continue
        first = confirmed[0]
        partner_confirmed = min(
            (
                snapshot.real_time(r.partner_code, h.at)
                for r in truth.get(reference, [])
                for h in r.history
                if h.status == "confirmed"
            ),
            default=None,
        )
        if partner_confirmed is None:
            result.violations.append(
                Violation(
                    "confirmed_never_at_partner",
                    f"{reference} was shown confirmed ({first.client} at "
                    f"{first.at.isoformat(timespec='milliseconds')}) but its partner never confirmed it",
                    booking=reference,
                    evidence=evidence(snapshot, reference, views, truth=truth),
                )
            )
        elif first.at < partner_confirmed:
            early = (partner_confirmed - first.at).total_seconds()
            result.violations.append(
                Violation(
                    "confirmed_before_partner",
                    f"{reference} was shown confirmed ({first.client}) {early:.3f}s before its partner "
                    f"confirmed it ({partner_confirmed.isoformat(timespec='milliseconds')} on our clock)",
                    booking=reference,
                    evidence=evidence(snapshot, reference, views, truth=truth),
                )
            )
        else:
            delays.append((first.at - partner_confirmed).total_seconds())
    result.figures.update(
        {
            "bookings_shown_confirmed": len(delays) + len(result.violations),
            "partner_confirmed_to_first_shown_s": summary(delays),
        }
    )
    return result


# --- nothing held when it says so ----------------------------------------------------------------
def live_at(snapshot: Snapshot, reservation: TruthReservation, moment: datetime) -> bool:
    """Whether the partner held the reservation at `moment` (our clock), by its own history."""
    code = reservation.partner_code
    if reservation.vanished_at is not None and snapshot.real_time(code, reservation.vanished_at) <= moment:
        return False
    status = None
    for change in reservation.history:
        if snapshot.real_time(code, change.at) > moment:
            break
        status = change.status
    return status in LIVE


def _release_asked(ours: OurReservation | None, moment: datetime) -> bool:
    return bool(ours and ours.compensation_requested_at and ours.compensation_requested_at <= moment)


def _claim(view: ShownView) -> str | None:
    """What a view claims to be over, if it claims that nothing is held."""
    if view.message == ENDED_MESSAGE:
        return "ended"
    return NOTHING_HELD.get(view.status)


def check_ended_when_released(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="customer_ended_when_released",
        invariant="no client is shown `failed`, `cancelled` or `disrupted_ended` while the partner holds "
        "a live reservation for the booking (releasing: it must still say `pending`/`cancelling`)",
    )
    if snapshot.shown is None:
        return not_observed(result, "no client followed the bookings in this run")
    truth = snapshot.truth_by_reference()
    ours = snapshot.ours_by_key()
    judged: Counter[str] = Counter()
    for reference, views in snapshot.shown_by_reference().items():
        found: dict[str, list[tuple[ShownView, TruthReservation]]] = defaultdict(list)
        for view in views:
            claim = _claim(view)
            if claim is None:
                continue
            judged[claim] += 1
            for reservation in truth.get(reference, []):
                if live_at(snapshot, reservation, view.at):
                    mine = ours.get((reservation.partner_code, reservation.partner_ref))
                    how = "releasing" if _release_asked(mine, view.at) else "held"
                    found[f"{claim}_while_{how}"].append((view, reservation))
        for kind, cases in found.items():
            view, reservation = cases[0]
            result.violations.append(
                Violation(
                    kind,
                    f"{reference} was shown {view.status}/{view.message} ({view.client} at "
                    f"{view.at.isoformat(timespec='milliseconds')}) while {reservation.partner_code}:"
                    f"{reservation.partner_ref} was live at the partner"
                    + (" (its cancellation asked, not done)" if kind.endswith("releasing") else "")
                    + (f"; {len(cases)} such views" if len(cases) > 1 else ""),
                    booking=reference,
                    evidence=evidence(snapshot, reference, views, truth=truth),
                )
            )
    result.figures["views_judged"] = dict(judged)
    return result


# --- never backwards -----------------------------------------------------------------------------
def check_never_backwards(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="customer_never_backwards",
        invariant="per client, status_version never goes back; one version is one view everywhere; "
        "never `pending` after `confirmed` (as shown, and on the timeline's record of every version)",
    )
    if snapshot.shown is None:
        return not_observed(result, "no client followed the bookings in this run")
    truth = snapshot.truth_by_reference()
    clients: set[str] = set()
    for reference, views in snapshot.shown_by_reference().items():
        kinds: dict[str, str] = {}
        by_version: dict[int, ShownView] = {}
        by_client: dict[str, list[ShownView]] = defaultdict(list)
        for view in views:
            by_client[view.client].append(view)
            first = by_version.setdefault(view.version, view)
            if (first.status, first.message) != (view.status, view.message):
                kinds.setdefault(
                    "same_version_different_view",
                    f"version {view.version} of {reference} was {first.status}/{first.message} to "
                    f"{first.client} and {view.status}/{view.message} to {view.client}",
                )
        clients.update(by_client)
        for client, seen in by_client.items():
            highest: ShownView | None = None
            confirmed: ShownView | None = None
            for view in seen:
                if highest is not None and view.version < highest.version:
                    kinds.setdefault(
                        "version_went_back",
                        f"{client} was shown {reference} v{view.version} after v{highest.version}",
                    )
                if confirmed is not None and view.status == "pending" and view.version > confirmed.version:
                    kinds.setdefault(
                        "pending_after_confirmed",
                        f"{client} was shown {reference} pending (v{view.version}) after confirmed "
                        f"(v{confirmed.version})",
                    )
                if highest is None or view.version > highest.version:
                    highest = view
                if view.status == "confirmed":
                    confirmed = view
        for kind, message in kinds.items():
            result.violations.append(
                Violation(
                    kind,
                    message,
                    booking=reference,
                    evidence=evidence(snapshot, reference, views, truth=truth),
                )
            )
    shown = snapshot.shown_by_reference()
    for reference, booking in snapshot.bookings.items():
        changes = sorted(booking.view_changes(), key=lambda c: c.version)
        confirmed_at = next((c.version for c in changes if c.status == "confirmed"), None)
        regressed = [
            c for c in changes if confirmed_at and c.version > confirmed_at and c.status == "pending"
        ]
        if regressed:
            result.violations.append(
                Violation(
                    "record_pending_after_confirmed",
                    f"{reference} is recorded as shown pending (v{regressed[0].version}) after confirmed "
                    f"(v{confirmed_at})",
                    booking=reference,
                    evidence=evidence(snapshot, reference, shown.get(reference, []), truth=truth),
                )
            )
        numbers = [c.version for c in changes]
        if numbers != list(range(2, booking.view_version + 1)):
            result.violations.append(
                Violation(
                    "record_versions_not_consecutive",
                    f"{reference} is at v{booking.view_version} but its timeline numbers its changes "
                    f"{numbers[:20]}",
                    booking=reference,
                    evidence=evidence(snapshot, reference, shown.get(reference, []), truth=truth),
                )
            )
    result.figures.update({"clients": len(clients), "views_shown": len(snapshot.shown)})
    return result


# --- the last view is the truth ------------------------------------------------------------------
def check_last_shown_final(snapshot: Snapshot) -> CheckResult:
    result = CheckResult(
        name="customer_last_shown_final",
        invariant="every client following a booking ends showing its final view (status, message, version)",
    )
    if snapshot.shown is None:
        return not_observed(result, "no client followed the bookings in this run")
    truth = snapshot.truth_by_reference()
    shown = snapshot.shown_by_reference()
    figures: Counter[str] = Counter()
    for reference, booking in snapshot.bookings.items():
        clients = snapshot.followers.get(reference, ())
        if not clients:
            figures["bookings_not_followed"] += 1
            continue
        figures["bookings_followed"] += 1
        views = shown.get(reference, [])
        final = (booking.view_status, booking.view_message, booking.view_version)
        for client in clients:
            seen = [v for v in views if v.client == client]
            figures[f"followers_{client.split(':', 1)[0]}"] += 1
            if not seen:
                result.violations.append(
                    Violation(
                        "never_shown",
                        f"{client} followed {reference} but was never shown it",
                        booking=reference,
                        evidence=evidence(snapshot, reference, views, truth=truth),
                    )
                )
                continue
            last = seen[-1]
            if (last.status, last.message, last.version) != final:
                result.violations.append(
                    Violation(
                        "last_shown_not_final",
                        f"{client} last showed {reference} as {last.status}/{last.message} v{last.version} "
                        f"(at {last.at.isoformat(timespec='milliseconds')}); it ended "
                        f"{final[0]}/{final[1]} v{final[2]}",
                        booking=reference,
                        evidence=evidence(snapshot, reference, views, truth=truth),
                    )
                )
    result.figures.update(dict(figures))
    return result
