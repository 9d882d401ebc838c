"""Backoff with full jitter for our own re-sends (Retry-After wins when the partner gives one)."""

from __future__ import annotations

import random

from django.conf import settings


def delay_s(tries: int, *, retry_after_s: float | None = None) -> float:
    base = settings.PARTNER_RETRY_BASE_S * (2 ** max(0, tries - 1))
    jittered = random.uniform(0, min(settings.PARTNER_RETRY_MAX_S, base))
    return max(retry_after_s or 0.0, jittered, settings.PARTNER_RETRY_MIN_S)


def spacing_s(tries: int) -> float:
    """The least time between one try of a budgeted series and the next, after `tries`: half of
    `delay_s`'s ceiling. Full jitter alone may draw a few tries within seconds, and copies of a
    message (a sweeper's re-send beside the chain) draw their own: a series that must outlast a
    partner's bad spell (a key rotation's minutes of 401s) keeps at least this gap, so that its
    budget spans at least the sum of the gaps (64 s before an eighth try at the defaults)."""
    if tries <= 0:
        return 0.0
    return min(settings.PARTNER_RETRY_MAX_S, settings.PARTNER_RETRY_BASE_S * 2 ** (tries - 1)) / 2
