"""A partner's feed of webhook deliveries, for support: every one we kept, newest first, each
marked by what came of it.

Refused deliveries are here and only here: an unverified one (no valid signature, or too large)
is marked `unverified`, since anyone could have posted it, and it is never linked to a booking
whatever its body says. Authentic ones link to the booking they concern.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.db.models import Q

from partners.models import InboundEvent, InboundResult, InboundState, Partner
from partners.services.skew import skew_between

FEED_PAGE = 100
# What was not applied, for a reason of its own (the other marks: `applied` and those of
# authentic deliveries that changed nothing).
REFUSED_MARKS = ("unverified", "late", "invalid", "failed")
# The feed's filters.
FILTERS = {
    "unverified": Q(signature_valid=False),
    "late": Q(result=InboundResult.LATE),
    "invalid": Q(state=InboundState.INVALID),
    "failed": Q(state=InboundState.FAILED),
    "accepted": Q(signature_valid=True, state__in=[InboundState.RECEIVED, InboundState.PROCESSED]),
}
_RAW_JSON = json.JSONEncoder(indent=2, sort_keys=True, default=str)


def delivery_mark(*, signature_valid: bool, state: str, result: str) -> str:
    """One word for what came of a delivery; "applied" when it changed what we hold."""
    if not signature_valid:
        return "unverified"
    if result == InboundResult.LATE:
        return "late"
    if state in (InboundState.INVALID, InboundState.FAILED):
        return str(state)
    if state == InboundState.RECEIVED:
        return "unprocessed"
    return str(result) or "applied"


@dataclass(frozen=True)
class FeedRow:
    delivery: InboundEvent
    mark: str
    skew_ms: int | None  # its signed time minus our receipt

    @property
    def booking_reference(self) -> str:
        return self.delivery.booking.reference if self.delivery.booking_id else ""

    @property
    def kept_bytes(self) -> int:
        return len(self.delivery.raw_body or b"")

    @property
    def evidence_json(self) -> str:
        """What we kept of it: the headers (signature left out) and the body (or its first bytes)."""
        headers = self.delivery.headers or {}
        return _RAW_JSON.encode(
            {
                "headers": {k: v for k, v in headers.items() if k != "webhook-signature"},
                "body": bytes(self.delivery.raw_body or b"").decode(errors="replace"),
            }
        )


def partner_feed(
    partner: Partner, *, show: str = "", before: int | None = None, limit: int = FEED_PAGE
) -> list[FeedRow]:
    """The partner's deliveries, newest first: `show` one of FILTERS (all when empty), `before`
    the id of the last row of the previous page. Two queries."""
    rows = InboundEvent.objects.filter(partner=partner).select_related("booking")
    if show:
        rows = rows.filter(FILTERS[show])
    if before is not None:  # keyset: the rows after that one in (received_at, id) order
        at = InboundEvent.objects.filter(pk=before).values_list("received_at", flat=True).first()
        if at is not None:
            rows = rows.filter(Q(received_at__lt=at) | Q(received_at=at, pk__lt=before))
    return [
        FeedRow(
            delivery=delivery,
            mark=delivery_mark(
                signature_valid=delivery.signature_valid, state=delivery.state, result=delivery.result
            ),
            skew_ms=skew_between(delivery.partner_timestamp, delivery.received_at),
        )
        for delivery in rows.order_by("-received_at", "-id")[:limit]
    ]
