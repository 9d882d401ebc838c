"""Reads of the partner side that a hot path makes."""

from __future__ import annotations

from django.conf import settings
from django.core.cache import caches

from partners.models import Partner

# The per-process cache of rows that change a few times a day (bookings.catalogue): a partner's
# save or delete clears it in the process that made it; others see the change within the TTL.
CACHE_ALIAS = "catalogue"


def webhook_partner(code: str) -> Partner | None:
    """The partner a webhook URL names. Cached, so that deliveries (a forged flood included) cost
    the database nothing to find it; an unknown code is not cached, and is looked up each time."""
    ttl = settings.CATALOGUE_CACHE_TTL_S
    if ttl <= 0:
        return Partner.objects.filter(code=code).first()
    cache, key = caches[CACHE_ALIAS], f"webhook-partner:{code}"
    partner = cache.get(key)
    if partner is None:
        partner = Partner.objects.filter(code=code).first()
        if partner is not None:
            cache.set(key, partner, ttl)
    return partner
