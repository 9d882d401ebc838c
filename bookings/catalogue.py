"""Offers as the booking path reads them: through a short-lived cache in each process.

Every booking request reads its offer and the offer's partner (price, capacity, whether either
is taking bookings): rows that change a few times a day. The cache is local to the process
(Django's local-memory backend: no network trip, and the partner's credentials never leave the
process), and a save or delete of an offer or partner clears it at once in the process that made
it. Other processes see the change within `CATALOGUE_CACHE_TTL_S` (default 5 s); a booking taken
in that window for a partner just disabled waits like any other booking whose partner is not
taking calls (the partner guard refuses to call it), and a price changed in that window is
honoured for it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import BaseCache
from django.db import transaction
from django.db.models.signals import post_delete, post_save

from bookings.models import Booking, Offer

CACHE_ALIAS = "catalogue"


def _cache() -> BaseCache:
    return caches[CACHE_ALIAS]


def _key(offer_id: int) -> str:
    return f"offer:{offer_id}"


def offer_with_partner(offer_id: int) -> Offer | None:
    """The offer and its partner (joined), or None if there is no such offer."""
    ttl = settings.CATALOGUE_CACHE_TTL_S
    if ttl <= 0:
        return Offer.objects.select_related("partner").filter(pk=offer_id).first()
    offer = _cache().get(_key(offer_id))
    if offer is None:
        offer = Offer.objects.select_related("partner").filter(pk=offer_id).first()
        if offer is not None:
            _cache().set(_key(offer_id), offer, ttl)
    return offer


def forget_offers() -> None:
    """Drop every cached offer of this process."""
    _cache().clear()


def _forget(**kwargs: object) -> None:
    # At once, and again after commit: a read racing the write may have cached the old row in
    # between. All offers on a partner change: a partner has few offers and changes rarely.
    forget_offers()
    transaction.on_commit(forget_offers)


def connect_signals() -> None:
    """Called once by the app config: offer and partner writes clear the cache."""
    partner_model = Booking._meta.get_field("partner").related_model
    for model in (Offer, partner_model):
        for signal in (post_save, post_delete):
            signal.connect(_forget, sender=model, dispatch_uid=f"catalogue-{model.__name__}")
