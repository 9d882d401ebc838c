"""Per-partner clock skew: partner clock minus ours, from `Date` headers and webhook timestamps."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from partners.models import Partner

SMOOTHING = 0.2  # exponential moving average: one odd header does not swing the estimate


def record_skew_sample(partner: Partner, *, partner_time: datetime, our_time: datetime) -> int:
    """Fold one sample into the partner's estimate and return the sample (ms)."""
    sample = round((partner_time - our_time).total_seconds() * 1000)
    previous = partner.clock_skew_ms
    estimate = sample if previous is None else round(previous + SMOOTHING * (sample - previous))
    Partner.objects.filter(pk=partner.pk).update(
        clock_skew_ms=estimate, clock_skew_measured_at=timezone.now()
    )
    partner.clock_skew_ms = estimate
    return sample


def skew_between(partner_time: datetime | None, our_time: datetime) -> int | None:
    if partner_time is None:
        return None
    return round((partner_time - our_time).total_seconds() * 1000)
