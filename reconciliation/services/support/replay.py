"""Stored webhook deliveries, for support: re-verify a signature, and replay a delivery through
the one door (which records, and ignores, what it already holds), once per confirmation (a token
used for another ask is refused: `once.claim_token`)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import redis
from django.core.cache import cache
from django.db import transaction

from bookings.models import Actor, Booking
from bookings.services import lock_booking
from bookings.timeline import record_event
from config.errors import ApplicationError, NotFound, Unavailable
from partners.models import InboundEvent
from partners.services.webhooks import (
    inbound_event_named_booking_id,
    inbound_event_replay,
    replay_refusal,
    signature_matches,
)
from reconciliation.services.support.once import Ask, claim_token, clean_token, target_key
from reconciliation.services.support.permissions import REPLAY, REPLAY_PERMISSION, Operator

TOKEN_TTL_S = 7 * 24 * 3600


@dataclass(frozen=True)
class ReplayResult:
    event: InboundEvent
    performed: bool
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "inbound_event": self.event.pk,
            "event_id": self.event.event_id,
            "performed": self.performed,
            "state": self.event.state,
            "result": self.event.result,
            "booking": self.event.booking.reference if self.event.booking_id else None,
            "message": self.message,
        }


def inbound_event_reverify(event: InboundEvent) -> bool:
    """Does the stored delivery's signature still verify with the partner's secret (age ignored)?"""
    return signature_matches(event.partner, bytes(event.raw_body), event.headers or {})


def inbound_event_replay_refusal(event: InboundEvent) -> ApplicationError | None:
    """Why its replay would be refused, or None: the replay's own rule (`replay_refusal`), for
    its previews (`replay_inbound_event --dry-run`, the console's confirmation page)."""
    return replay_refusal(event)


def _forget(replay_key: str) -> None:
    # Our Redis gone too: the claim lapses with its TTL, and the error said is the first one.
    with contextlib.suppress(redis.RedisError):
        cache.delete(replay_key)


def _record_replayed(
    replayed: InboundEvent, *, operator: Operator, token: str, named: UUID | None, before: str | None
) -> None:
    """The replay's row on its booking's timeline: from the state the replay found (read before it
    moved the booking), or, for a booking the processing found otherwise (linked meanwhile), its
    state as it is now."""
    with transaction.atomic():
        booking = lock_booking(replayed.booking_id)
        found = before if replayed.booking_id == named and before else booking.status
        record_event(
            booking,
            "support.webhook_replayed",
            actor=Actor.SUPPORT,
            actor_label=operator.label,
            summary=f"Webhook {replayed.event_id} replayed by {operator.label}: {replayed.result}",
            from_state=found,
            to_state=booking.status,
            partner_time=replayed.partner_timestamp,
            data={"action_token": token, "inbound_event_id": replayed.pk, "result": replayed.result},
        )


def support_replay_inbound(
    *, event_id: int, operator: Operator, token: str, batch: Sequence[str] = ()
) -> ReplayResult:
    """Re-verify a stored webhook and process it again through the one door. The token is held
    for this ask (`batch`: every webhook it covers, `#<id>`) before the replay, and claimed per
    webhook in the shared cache, so a double submit does nothing extra."""
    operator.require(REPLAY_PERMISSION)
    token = clean_token(token)
    event = InboundEvent.objects.select_related("partner", "booking").filter(pk=event_id).first()
    if event is None:
        raise NotFound(f"No inbound event {event_id}.")
    replay_key = f"support-token:replay:{event_id}:{token}"
    with transaction.atomic():
        claim_token(token, Ask.of(REPLAY, target_key(event), operator=operator.label, batch=batch))
        try:
            first = cache.add(replay_key, "1", timeout=TOKEN_TTL_S)
        except redis.RedisError:
            # The once-per-confirmation claim lives in our Redis: refused before anything is
            # replayed, and the token's claim rolls back with it.
            raise Unavailable(
                "Our queue (Redis) is not answering; nothing was done. Try again shortly.",
                code="queue_unavailable",
            ) from None
    if not first:
        return ReplayResult(event, False, "Already replayed with this confirmation; nothing more was done.")
    # The state the replay finds, for its row: read before it moves the booking.
    named = inbound_event_named_booking_id(event)
    before = Booking.objects.filter(pk=named).values_list("status", flat=True).first() if named else None
    try:
        replayed = inbound_event_replay(event.pk, actor_label=operator.label)
        if replayed.booking_id:
            _record_replayed(replayed, operator=operator, token=token, named=named, before=before)
    except Exception:
        # Refused, or cut short (the database gone) before its support row was written: not known
        # replayed, so the same ask may try again (the one door ignores what it already holds, and
        # the row is written then), and is told so; kept, the claim answered that run "already
        # replayed" for a delivery still unapplied, or one whose replay the timeline never shows.
        _forget(replay_key)
        raise
    return ReplayResult(
        replayed, True, f"Replayed: {replayed.get_state_display()}, {replayed.result or '-'}."
    )
