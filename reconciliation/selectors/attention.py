"""The support console's queue: bookings waiting for a person, the most urgent first.

Urgency is business time: how soon the stay starts (a booking two days before its stay waits
for nobody), then the money at stake (the booking's price), then how long
it has waited. A booking whose stay starts within ATTENTION_URGENT_HORIZON_H is urgent; the
stay is taken to start at the first moment of its start date (UTC), the earliest it can.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import BooleanField, Case, Count, QuerySet, Value, When
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from partners.models import Partner


def urgent_until(now: datetime | None = None) -> date:
    """The last start date that is urgent now."""
    now = now or timezone.now()
    return (now + timedelta(hours=settings.ATTENTION_URGENT_HORIZON_H)).date()


def _urgent(now: datetime | None) -> Case:
    return Case(
        When(start_date__lte=urgent_until(now), then=Value(True)),
        default=Value(False),
        output_field=BooleanField(),
    )


def needs_attention_queue(
    *, partner: Partner | None = None, urgent: bool | None = None, now: datetime | None = None
) -> QuerySet[Booking]:
    """Bookings waiting for a person, the most urgent first, each annotated `urgent`; `urgent`
    True or False keeps only those (None: all)."""
    rows = (
        Booking.objects.filter(status=BookingState.NEEDS_ATTENTION)
        .select_related("partner", "customer")
        .annotate(urgent=_urgent(now))
    )
    if partner is not None:
        rows = rows.filter(partner=partner)
    if urgent is not None:
        rows = rows.filter(urgent=urgent)
    return rows.order_by("start_date", "-total_price", "status_changed_at", "id")


@dataclass
class AttentionCounts:
    """Bookings waiting for a person, counted by urgency, and by reason and urgency."""

    urgent: int = 0
    later: int = 0
    by_reason: dict[str, dict[str, int]] = field(default_factory=dict)  # reason -> urgent / later

    def add(self, reason: str, *, urgent: bool, n: int) -> None:
        bucket = "urgent" if urgent else "later"
        setattr(self, bucket, getattr(self, bucket) + n)
        counts = self.by_reason.setdefault(reason, {"urgent": 0, "later": 0})
        counts[bucket] += n

    @property
    def total(self) -> int:
        return self.urgent + self.later

    @property
    def reasons(self) -> list[tuple[str, int, int, int]]:
        """(reason, urgent, later, total), the most urgent reasons first."""
        rows = [
            (reason, c["urgent"], c["later"], c["urgent"] + c["later"])
            for reason, c in self.by_reason.items()
        ]
        return sorted(rows, key=lambda row: (-row[1], -row[3], row[0]))

    def as_dict(self) -> dict[str, Any]:
        return {"urgent": self.urgent, "later": self.later, "total": self.total, "by_reason": self.by_reason}


@dataclass
class AttentionSummary:
    horizon_h: int
    overall: AttentionCounts
    partners: dict[str, AttentionCounts]  # partner code -> its counts


def _counted(now: datetime | None, partner_ids: list[int] | None = None) -> Iterator[tuple[Any, ...]]:
    """(partner id, partner code, reason, urgent, count) of the bookings waiting: one query."""
    rows = Booking.objects.filter(status=BookingState.NEEDS_ATTENTION)
    if partner_ids is not None:
        rows = rows.filter(partner_id__in=partner_ids)
    yield from (
        rows.annotate(urgent=_urgent(now))
        .values_list("partner_id", "partner__code", "attention_reason", "urgent")
        .annotate(n=Count("id"))
        .order_by()
    )


def needs_attention_summary(*, now: datetime | None = None) -> AttentionSummary:
    """What waits for a person: by urgency, by reason and by partner (one query)."""
    overall, partners = AttentionCounts(), defaultdict(AttentionCounts)
    for _, code, reason, urgent, n in _counted(now):
        overall.add(reason, urgent=urgent, n=n)
        partners[code].add(reason, urgent=urgent, n=n)
    ordered = dict(sorted(partners.items(), key=lambda item: (-item[1].urgent, -item[1].total, item[0])))
    return AttentionSummary(horizon_h=settings.ATTENTION_URGENT_HORIZON_H, overall=overall, partners=ordered)


def attention_by_partner(
    partner_ids: list[int], *, now: datetime | None = None
) -> dict[int, AttentionCounts]:
    """The counts of each of these partners (one query); a partner with none waiting is absent."""
    counts: dict[int, AttentionCounts] = defaultdict(AttentionCounts)
    for partner_id, _, reason, urgent, n in _counted(now, partner_ids):
        counts[partner_id].add(reason, urgent=urgent, n=n)
    return dict(counts)
