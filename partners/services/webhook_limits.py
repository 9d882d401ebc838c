"""How much of the webhook URL's traffic we act on: anyone can post to it.

A refused delivery is stored as evidence only while its limits allow, counted atomically in Redis
(`config.throttling.WindowCounter`):

- unverified ones (no valid signature): per source address, then per partner. A source over its
  limit does not use up the partner's budget, so one flooding address cannot keep the others'
  evidence out. If Redis does not answer, none is stored: a forged flood must never reach the
  database unbounded;
- authentic ones (late, or invalid content) per partner, in a budget of their own that forgers
  cannot touch. If Redis does not answer they are stored: only the partner can sign them.

- duplicates (a delivery of an event id we hold, answered `200`): per partner, in a budget of
  their own. Authentic, but not only the partner's: a captured delivery replayed within its
  signature's five minutes is one. If Redis does not answer, only those with other content than
  their original are stored (no replay makes one: its signature covers the content).

Over a limit the delivery is answered exactly the same, just not stored; every unverified one is
still counted, for partner health, and every duplicate in the deliveries' metric. A pull of a
booking's truth that a delivery asks for is made at most once per `PULL_INTERVAL`.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from uuid import UUID

import redis
from django.conf import settings

from config.rates import Rate
from config.throttling import WindowCounter, window_counter
from partners.models import Partner

logger = logging.getLogger(__name__)

PULL_INTERVAL = timedelta(seconds=10)
_WARNING_INTERVAL_S = 10.0
_warned_at = -math.inf


def _counter() -> WindowCounter:
    return window_counter(settings.API_THROTTLE_REDIS_URL, settings.API_THROTTLE_REDIS_TIMEOUT_S)


def _key(*parts: object) -> str:
    return ":".join([settings.API_THROTTLE_NAMESPACE, "webhooks", *map(str, parts)])


def _partner_rate() -> Rate:
    return Rate.parse(settings.WEBHOOK_REFUSED_PARTNER_RATE)


def _seen_key(partner: Partner) -> str:
    return _key("unverified-seen", partner.code)


def evidence_allowed(partner: Partner, *, source: str, authentic: bool) -> bool:
    """Count one refused delivery; may it be stored?"""
    counter = _counter()
    partner_rate = _partner_rate()
    try:
        if authentic:
            [count] = counter.hit([(_key("authentic", partner.code), partner_rate)])
            return _within(count.count, partner_rate, f"authentic refusals of {partner.code}")
        everything = Rate(limit=sys.maxsize, period_ms=partner_rate.period_ms)
        source_rate = Rate.parse(settings.WEBHOOK_REFUSED_SOURCE_RATE)
        _, by_source = counter.hit(
            [(_seen_key(partner), everything), (_key("unverified-source", source), source_rate)]
        )
        if not _within(by_source.count, source_rate, f"unverified deliveries from {source or 'unknown'}"):
            return False
        [by_partner] = counter.hit([(_key("unverified", partner.code), partner_rate)])
        return _within(by_partner.count, partner_rate, f"unverified deliveries for {partner.code}")
    except redis.RedisError:
        _warn_unavailable()
        return authentic


def duplicate_allowed(partner: Partner) -> bool | None:
    """Count one duplicate delivery; may it be stored? (None: Redis did not answer.)"""
    rate = Rate.parse(settings.WEBHOOK_DUPLICATE_PARTNER_RATE)
    try:
        [count] = _counter().hit([(_key("duplicate", partner.code), rate)])
    except redis.RedisError:
        _warn_unavailable()
        return None
    return _within(count.count, rate, f"duplicate deliveries for {partner.code}")


def unverified_seen(partners: list[Partner]) -> dict[int, int]:
    """Unverified deliveries refused in each partner's current window, stored or not (for partner
    health; raises `redis.RedisError`)."""
    counts = _counter().peek([_seen_key(partner) for partner in partners])
    return {partner.pk: count for partner, count in zip(partners, counts, strict=True)}


def pull_due(booking_id: UUID) -> bool:
    """Claim the pull of a booking's truth for `PULL_INTERVAL`: True if no pull was claimed in it
    (raises `redis.RedisError`)."""
    once = Rate(limit=1, period_ms=int(PULL_INTERVAL.total_seconds() * 1000))
    [count] = _counter().hit([(_key("pull", booking_id), once)])
    return not count.over


def _within(count: int, rate: Rate, what: str) -> bool:
    if count == rate.limit + 1:  # once per window, when it fills
        logger.warning(
            "webhook evidence limit reached: not stored for the rest of the window",
            extra={"what": what, "limit": rate.limit, "period_s": rate.period_ms // 1000},
        )
    return count <= rate.limit


def _warn_unavailable() -> None:
    global _warned_at
    now = time.monotonic()
    if now - _warned_at >= _WARNING_INTERVAL_S:
        _warned_at = now
        logger.warning("webhook evidence limit unavailable (Redis): unverified deliveries not stored")
