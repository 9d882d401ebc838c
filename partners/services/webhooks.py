"""Inbound webhooks (invariant 9): verified, deduplicated, stored raw, acknowledged fast,
processed by a worker through the one door for partner truth."""

from __future__ import annotations

import binascii
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bookings.models import Actor
from bookings.timeline import record_event
from partners.connectors.reference import MalformedPayload, parse_webhook
from partners.models import (
    InboundEvent,
    InboundResult,
    InboundState,
    ObservationResult,
    Partner,
    Source,
)
from partners.services.observations import observation_apply
from partners.services.skew import record_skew_sample

logger = logging.getLogger(__name__)

KEPT_HEADERS = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "date",
    "content-type",
    "user-agent",
)


@dataclass(frozen=True)
class Receipt:
    status: int
    code: str
    message: str
    event: InboundEvent | None = None


def _kept(headers: dict[str, str]) -> dict[str, str]:
    lowered = {k.lower(): v for k, v in headers.items()}
    return {name: lowered[name][:2000] for name in KEPT_HEADERS if name in lowered}


def _timestamp(headers: dict[str, str]) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(headers.get("webhook-timestamp", "")), tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None


def verify_signature(partner: Partner, raw: bytes, headers: dict[str, str]) -> str:
    """Return '' when the delivery is authentic and fresh, else why not."""
    secret = partner.resolved_webhook_secret()
    if not secret:
        return "partner has no webhook secret configured"
    try:
        Webhook(secret).verify(raw, headers)
    except WebhookVerificationError as exc:
        return str(exc) or "signature verification failed"
    except (ValueError, binascii.Error, TypeError) as exc:  # malformed header (PITFALLS.md)
        return f"malformed signature header: {exc}"
    return ""


def signature_matches(partner: Partner, raw: bytes, headers: dict[str, str]) -> bool:
    """Re-verify a stored delivery's signature, ignoring its age (support's re-verify)."""
    try:
        timestamp = _timestamp(headers)
        if timestamp is None:
            return False
        expected = Webhook(partner.resolved_webhook_secret()).sign(
            headers["webhook-id"], timestamp, raw.decode()
        )
        expected_sig = expected.split(",", 1)[1]
        offered = [
            part.split(",", 1)[1] for part in headers.get("webhook-signature", "").split() if "," in part
        ]
        return any(hmac.compare_digest(expected_sig, sig) for sig in offered)
    except (KeyError, ValueError, binascii.Error, UnicodeDecodeError):
        return False


def _reject(
    partner: Partner, raw: bytes, headers: dict[str, str], *, status: int, code: str, why: str
) -> Receipt:
    event = InboundEvent.objects.create(
        partner=partner,
        event_id=headers.get("webhook-id", "")[:200],
        raw_body=raw[: settings.WEBHOOK_MAX_BYTES],
        headers=_kept(headers),
        partner_timestamp=_timestamp(headers),
        signature_valid=code != "invalid_signature",
        state=InboundState.REJECTED,
        result=InboundResult.REJECTED,
        error=why[:2000],
        processed_at=timezone.now(),
    )
    logger.warning("webhook rejected", extra={"partner": partner.code, "code": code, "why": why[:200]})
    return Receipt(status, code, why, event)


def inbound_event_receive(*, partner: Partner, raw: bytes, headers: dict[str, str]) -> Receipt:
    """Verify and store one delivery; the caller answers with `Receipt.status` at once."""
    headers = {k.lower(): v for k, v in headers.items()}
    if len(raw) > settings.WEBHOOK_MAX_BYTES:
        return _reject(partner, raw, headers, status=413, code="payload_too_large", why=f"{len(raw)} bytes")
    problem = verify_signature(partner, raw, headers)
    if problem:
        return _reject(partner, raw, headers, status=401, code="invalid_signature", why=problem)
    try:
        body = json.loads(raw)
        parse_webhook(body)
    except (ValueError, MalformedPayload) as exc:
        return _reject(partner, raw, headers, status=400, code="malformed_body", why=str(exc))

    received_at = timezone.now()
    if "date" in headers:
        try:
            record_skew_sample(
                partner, partner_time=parsedate_to_datetime(headers["date"]), our_time=received_at
            )
        except (TypeError, ValueError):
            pass
    event_id = headers["webhook-id"][:200]
    fields = {
        "partner": partner,
        "event_id": event_id,
        "raw_body": raw,
        "headers": _kept(headers),
        "partner_timestamp": _timestamp(headers),
        "signature_valid": True,
        "received_at": received_at,
    }
    try:
        with transaction.atomic():
            event = InboundEvent.objects.create(**fields)
            transaction.on_commit(lambda: _queue(event.pk))
    except IntegrityError:
        return _record_duplicate(fields)
    return Receipt(202, "accepted", "Stored; it will be processed shortly.", event)


def _record_duplicate(fields: dict) -> Receipt:
    with transaction.atomic():
        original = InboundEvent.objects.select_for_update().get(
            partner=fields["partner"],
            event_id=fields["event_id"],
            signature_valid=True,
            duplicate_of__isnull=True,
        )
        event = InboundEvent.objects.create(
            **fields,
            duplicate_of=original,
            state=InboundState.PROCESSED,
            result=InboundResult.DUPLICATE,
            processed_at=timezone.now(),
            booking=original.booking,
            reservation=original.reservation,
        )
        if original.booking is not None:
            record_event(
                original.booking,
                "webhook.duplicate",
                actor=Actor.WEBHOOK,
                actor_label=f"{original.partner.code}:{original.event_id}",
                summary=f"Webhook {original.event_id} delivered again: ignored",
                partner_time=event.partner_timestamp,
                data={"inbound_event_id": event.pk, "duplicate_of": original.pk},
            )
    return Receipt(200, "duplicate", "Already received.", event)


def _queue(event_id: int) -> None:
    from partners import tasks

    tasks.process_inbound_event.send(event_id)


_RESULTS = {
    ObservationResult.APPLIED: InboundResult.APPLIED,
    ObservationResult.STALE: InboundResult.STALE,
    ObservationResult.DUPLICATE: InboundResult.DUPLICATE,
}


def inbound_event_process(event_id: int) -> InboundEvent | None:
    """Apply a stored delivery through the one door. Safe to run twice."""
    with transaction.atomic():
        event = InboundEvent.objects.select_for_update().select_related("partner").filter(pk=event_id).first()
        if event is None or event.state != InboundState.RECEIVED:
            return event
        webhook = parse_webhook(json.loads(bytes(event.raw_body)))
        observed = observation_apply(
            partner=event.partner,
            snapshot=webhook.reservation,
            source=Source.WEBHOOK,
            actor=Actor.WEBHOOK,
            actor_label=f"{event.partner.code}:{event.event_id}",
            inbound_event=event,
        )
        event.state = InboundState.PROCESSED
        event.result = InboundResult.UNLINKED if observed.booking is None else _RESULTS[observed.result]
        event.booking = observed.booking
        event.reservation = observed.reservation
        event.processed_at = timezone.now()
        event.save(update_fields=["state", "result", "booking", "reservation", "processed_at"])
        return event


def inbound_event_replay(event_id: int, *, actor_label: str) -> InboundEvent:
    """Support: re-verify a stored delivery and process it again (the one door dedupes it)."""
    with transaction.atomic():
        event = InboundEvent.objects.select_for_update().select_related("partner").get(pk=event_id)
        if not signature_matches(event.partner, bytes(event.raw_body), event.headers):
            raise PermissionError("The stored delivery's signature does not verify; it will not be replayed.")
        event.state = InboundState.RECEIVED
        event.error = ""
        event.save(update_fields=["state", "error"])
    logger.info("webhook replayed", extra={"inbound_event_id": event_id, "by": actor_label})
    return inbound_event_process(event_id)
