"""Walking a partner's change listing (partners without webhooks or lookups, e.g. legacy).

Every entry enters through the one door, so the walk both settles our own bookings and finds
reservations nobody asked for (orphans). The checkpoint moves only after a complete walk; it
overlaps the last one a little because listing times have one-second resolution, and the one
door drops what it has already seen.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.utils import timezone

from bookings.models import Actor
from partners.connectors import connector_for
from partners.models import Operation, Partner, Source
from partners.services.calls import call_and_close
from partners.services.observations import observation_apply

logger = logging.getLogger(__name__)

OVERLAP = timedelta(seconds=60)
FIRST_WALK = timedelta(days=1)


def change_listing_walk(partner_id: int) -> int:
    """Apply every change since the checkpoint; return how many entries were seen."""
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
        for snapshot in result.reservations:
            observation_apply(
                partner=partner,
                snapshot=snapshot,
                source=Source.LISTING,
                actor=Actor.SWEEPER,
                actor_label="listing",
            )
            if snapshot.modified_at and snapshot.modified_at > newest:
                newest = snapshot.modified_at
            seen += 1
        page = result.next_page
    Partner.objects.filter(pk=partner.pk).update(listing_checkpoint=newest.isoformat())
    return seen
