"""Walking a partner's change listing (partners without webhooks or lookups, e.g. legacy).

Every entry enters through the one door, so the walk both settles our own bookings and finds
reservations nobody asked for (orphans). The checkpoint moves only after a complete walk; it
overlaps the last one because listing times have one-second resolution and an entry may be
committed after a walk that already passed its time. Entries that say what we already hold
(the same status, no later modified time) are re-reads, not news: they are not fed to the one
door again, which would write an ignored observation per entry per walk.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.utils import timezone

from bookings.models import Actor
from partners.connectors import connector_for
from partners.connectors.base import ReservationSnapshot
from partners.models import Operation, Partner, PartnerReservation, Source
from partners.services.calls import call_and_close
from partners.services.observations import observation_apply

logger = logging.getLogger(__name__)

OVERLAP = timedelta(seconds=60)
FIRST_WALK = timedelta(days=1)


def change_listing_walk(partner_id: int) -> int:
    """Apply every change since the checkpoint; return how many entries were news."""
    partner = Partner.objects.get(pk=partner_id)
    connector = connector_for(partner)
    since = (
        datetime.fromisoformat(partner.listing_checkpoint)
        if partner.listing_checkpoint
        else timezone.now() - FIRST_WALK
    )
    newest = since
    seen = 0
    page: int | None = 1
    while page:
        _, result = call_and_close(
            partner=partner,
            operation=Operation.LIST,
            call=lambda p=page: connector.list_changes(since=since - OVERLAP, page=p),
        )
        if not result.ok:
            logger.warning(
                "change listing walk stopped", extra={"partner": partner.code, "error": result.error_code}
            )
            return seen
        held = dict(
            (ref, (status, modified))
            for ref, status, modified in PartnerReservation.objects.filter(
                partner=partner, partner_ref__in=[s.partner_ref for s in result.reservations]
            ).values_list("partner_ref", "status", "partner_modified_at")
        )
        for snapshot in result.reservations:
            if snapshot.modified_at and snapshot.modified_at > newest:
                newest = snapshot.modified_at
            if _is_reread(held.get(snapshot.partner_ref), snapshot):
                continue
            observation_apply(
                partner=partner,
                snapshot=snapshot,
                source=Source.LISTING,
                actor=Actor.SWEEPER,
                actor_label="listing",
            )
            seen += 1
        page = result.next_page
    Partner.objects.filter(pk=partner.pk).update(listing_checkpoint=newest.isoformat())
    return seen


def _is_reread(held: tuple[str, datetime | None] | None, snapshot: ReservationSnapshot) -> bool:
    """The same status and nothing later than what we hold (a create response carries no
    modified time, so what we hold may have none): the one door would only ignore it."""
    if held is None or held[0] != snapshot.status:
        return False
    held_modified = held[1]
    return held_modified is None or snapshot.modified_at is None or snapshot.modified_at <= held_modified
