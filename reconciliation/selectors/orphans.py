"""Orphan cases for support (orphans, and a booking's duplicates automation could not cancel): the
queue (flagged first, then the oldest), a case's story, and the open cases per partner."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import Case, Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When

from partners.models import (
    OrphanAutomation,
    OrphanCase,
    OrphanCaseEvent,
    OrphanCaseState,
    Partner,
    PartnerAttempt,
    PartnerObservation,
)

_FLAGGED = Q(state=OrphanCaseState.OPEN, automation=OrphanAutomation.CANCEL_FAILED)


def orphan_queue(*, partner: Partner | None = None, include_closed: bool = False) -> QuerySet[OrphanCase]:
    """Open cases (`include_closed`: every case), those automation gave up on first, then the
    oldest; each annotated with its latest step (`last_kind`, `last_summary`)."""
    latest = OrphanCaseEvent.objects.filter(case=OuterRef("pk")).order_by("-occurred_at", "-id")
    related = ("reservation__partner", "reservation__booking", "booking")
    rows = OrphanCase.objects.select_related(*related).annotate(
        flag_order=Case(When(_FLAGGED, then=Value(0)), default=Value(1), output_field=IntegerField()),
        last_kind=Subquery(latest.values("kind")[:1]),
        last_summary=Subquery(latest.values("summary")[:1]),
    )
    if not include_closed:
        rows = rows.filter(state=OrphanCaseState.OPEN)
    if partner is not None:
        rows = rows.filter(reservation__partner=partner)
    return rows.order_by("state", "flag_order", "opened_at", "id")


def orphan_case_row(case: OrphanCase) -> dict[str, Any]:
    """A case as the queue, `orphans --json` and the case page state it."""
    reservation = case.reservation
    return {
        "case": case.pk,
        "state": case.state,
        "flagged": case.flagged,
        "partner": reservation.partner.code,
        "partner_ref": reservation.partner_ref,
        "client_reference": reservation.client_reference,
        "status": reservation.status,
        "version": reservation.version,
        "learned_from": reservation.learned_from,
        "first_seen_at": reservation.first_seen_at.isoformat(),
        "opened_at": case.opened_at.isoformat(),
        "opened_because": case.opened_because,
        # A booking's duplicate (`opened_because` duplicate): that booking, which keeps its own.
        "duplicate_of": reservation.booking.reference if case.of_duplicate else None,
        "automation": case.automation,
        "compensation": (
            "verified"
            if reservation.compensated_at
            else ("requested" if reservation.compensation_requested_at else "")
        ),
        "last_step": getattr(case, "last_summary", None),
        "booking": case.booking.reference if case.booking_id else None,
        "closed_at": case.closed_at.isoformat() if case.closed_at else None,
        "closed_because": case.closed_because,
        "closed_by": case.closed_by,
        "closed_note": case.closed_note,
    }


@dataclass(frozen=True)
class OrphanStory:
    """Everything recorded about one orphan: the case's history, and the calls and observations
    about its reservation (three queries)."""

    case: OrphanCase
    events: list[OrphanCaseEvent]
    attempts: list[PartnerAttempt]
    observations: list[PartnerObservation]


def orphan_story(case: OrphanCase) -> OrphanStory:
    return OrphanStory(
        case=case,
        events=list(case.events.order_by("occurred_at", "id")),
        attempts=list(
            PartnerAttempt.objects.filter(reservation=case.reservation).order_by("started_at", "id")
        ),
        observations=list(
            PartnerObservation.objects.filter(reservation=case.reservation).order_by("received_at", "id")
        ),
    )


@dataclass
class OrphanCounts:
    open: int = 0
    flagged: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"open": self.open, "flagged": self.flagged}


def open_orphans_by_partner(partner_ids: list[int] | None = None) -> dict[int, OrphanCounts]:
    """Open cases and, of those, the flagged ones, per partner id (one query)."""
    rows = OrphanCase.objects.filter(state=OrphanCaseState.OPEN)
    if partner_ids is not None:
        rows = rows.filter(reservation__partner_id__in=partner_ids)
    counts: dict[int, OrphanCounts] = defaultdict(OrphanCounts)
    for partner_id, n, flagged in (
        rows.values_list("reservation__partner_id")
        .annotate(n=Count("id"), flagged=Count("id", filter=Q(automation=OrphanAutomation.CANCEL_FAILED)))
        .order_by()
    ):
        counts[partner_id] = OrphanCounts(open=n, flagged=flagged)
    return dict(counts)
