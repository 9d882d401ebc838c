"""Backoff with full jitter for our own re-sends (Retry-After wins when the partner gives one)."""

from __future__ import annotations

import random

from django.conf import settings


def delay_s(tries: int, *, retry_after_s: float | None = None) -> float:
    base = settings.PARTNER_RETRY_BASE_S * (2 ** max(0, tries - 1))
    jittered = random.uniform(0, min(settings.PARTNER_RETRY_MAX_S, base))
    return max(retry_after_s or 0.0, jittered, settings.PARTNER_RETRY_MIN_S)
