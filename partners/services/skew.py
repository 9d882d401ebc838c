"""Per-partner clock skew: partner clock minus ours, from `Date` headers and webhook timestamps.

The estimate is an exponential moving average kept on the Partner row. Every partner call
yields a sample, so the row is written at most every `PERSIST_EVERY` (or on a jump of a second
or more): a row that every call rewrote would be the hottest row of the database, contended by
every worker.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from partners.models import Partner

SMOOTHING = 0.2  # one odd header does not swing the estimate
PERSIST_EVERY = timedelta(seconds=10)
JUMP_MS = 1000
# HTTP dates have whole seconds, truncated by the sender: a sample is centred on its second.
WHOLE_SECOND_CENTRE = timedelta(milliseconds=500)


def record_skew_sample(partner: Partner, *, partner_time: datetime, our_time: datetime) -> int:
    """Fold one sample into the partner's estimate and return the sample (ms)."""
    sample = round((partner_time - our_time).total_seconds() * 1000)
    previous = partner.clock_skew_ms
    estimate = sample if previous is None else round(previous + SMOOTHING * (sample - previous))
    now = timezone.now()
    jumped = previous is None or abs(estimate - previous) >= JUMP_MS
    written_at = partner.clock_skew_measured_at
    # A copy that shows a write less than PERSIST_EVERY ago needs no round trip: the row can
    # only be newer, so the conditional update would match nothing.
    if jumped or written_at is None or written_at < now - PERSIST_EVERY:
        due = Q(clock_skew_measured_at__isnull=True) | Q(clock_skew_measured_at__lt=now - PERSIST_EVERY)
        if jumped:
            due |= Q(pk=partner.pk)
        if Partner.objects.filter(due, pk=partner.pk).update(
            clock_skew_ms=estimate, clock_skew_measured_at=now
        ):
            partner.clock_skew_measured_at = now
    partner.clock_skew_ms = estimate
    return sample


def skew_between(partner_time: datetime | None, our_time: datetime) -> int | None:
    """The partner's clock minus ours at one moment, in ms (None without the partner's time)."""
    if partner_time is None:
        return None
    return round((partner_time - our_time).total_seconds() * 1000)
