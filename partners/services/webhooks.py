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
from django.db.models import QuerySet
from django.utils import timezone
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook, WebhookVerificationError

from bookings.models import Actor
from bookings.timeline import record_event
from config.errors import Conflict
from partners.connectors.reference import MalformedPayload, UnsupportedEvent, parse_webhook
from partners.messages import send_inbound_event_on_commit
from partners.models import (
    InboundEvent,
    InboundResult,
    InboundState,
    ObservationResult,
    Partner,
    Source,
)
from partners.services.observations import observation_apply
from partners.services.skew import WHOLE_SECOND_CENTRE, record_skew_sample

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
        # json_parse=False: the signature is about bytes; a body that is not JSON but carries a
        # valid signature is a malformed body (400), not a bad signature (401).
        Webhook(secret).verify(raw, headers, json_parse=False)
    except WebhookVerificationError as exc:
        return str(exc) or "signature verification failed"
    except (ValueError, binascii.Error, TypeError) as exc:  # malformed header: see docs/design.md
        return f"malformed signature header: {exc}"
    except EmptyWebhookSecretError:
        return "partner has no webhook secret configured"
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
    except (KeyError, ValueError, binascii.Error, UnicodeDecodeError, EmptyWebhookSecretError):
        return False


def _reject(
    partner: Partner,
    raw: bytes,
    headers: dict[str, str],
    *,
    status: int,
    code: str,
    why: str,
    signature_valid: bool,
) -> Receipt:
    """Record a delivery we refuse: kept for support (never applied), answered 4xx."""
    event = InboundEvent.objects.create(
        partner=partner,
        event_id=headers.get("webhook-id", "")[:200],
        raw_body=raw[: settings.WEBHOOK_MAX_BYTES],
        headers=_kept(headers),
        partner_timestamp=_timestamp(headers),
        signature_valid=signature_valid,
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
        return body_too_large(partner, raw, headers, size=len(raw))
    problem = verify_signature(partner, raw, headers)
    if problem:
        return _reject(
            partner, raw, headers, status=401, code="invalid_signature", why=problem, signature_valid=False
        )
    unsupported = ""
    try:
        parse_webhook(json.loads(raw))
    except UnsupportedEvent as exc:
        unsupported = str(exc)  # authentic and well-formed, just not ours to apply: acknowledge it
    except (ValueError, RecursionError, MalformedPayload) as exc:
        return _reject(
            partner, raw, headers, status=400, code="malformed_body", why=str(exc), signature_valid=True
        )

    received_at = timezone.now()
    _sample_skew(partner, headers, received_at)
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
    if unsupported:
        fields.update(
            state=InboundState.PROCESSED,
            result=InboundResult.UNSUPPORTED,
            error=unsupported[:2000],
            processed_at=received_at,
        )
    try:
        with transaction.atomic():
            event = InboundEvent.objects.create(**fields)
            if not unsupported:
                send_inbound_event_on_commit(event.pk)
    except IntegrityError:
        return _record_duplicate(fields)
    if unsupported:
        logger.info("webhook of an unsupported type", extra={"partner": partner.code, "why": unsupported})
        return Receipt(200, "ignored", "Event type not handled; acknowledged.", event)
    return Receipt(202, "accepted", "Stored; it will be processed shortly.", event)


def body_too_large(partner: Partner, raw: bytes, headers: dict[str, str], *, size: int | None) -> Receipt:
    """413, recorded (the first bytes only, unverified: a signature over a cut body means nothing)."""
    return _reject(
        partner,
        raw[: settings.WEBHOOK_MAX_BYTES],
        {k.lower(): v for k, v in headers.items()},
        status=413,
        code="payload_too_large",
        why=f"{size if size is not None else 'unknown'} bytes, more than {settings.WEBHOOK_MAX_BYTES}",
        signature_valid=False,
    )


def _sample_skew(partner: Partner, headers: dict[str, str], received_at: datetime) -> None:
    """Partner clock minus ours: from its `Date` header, else the signed `webhook-timestamp`."""
    partner_time: datetime | None = None
    if "date" in headers:
        try:
            partner_time = parsedate_to_datetime(headers["date"])
        except (TypeError, ValueError, IndexError):
            partner_time = None
        if partner_time is not None and partner_time.tzinfo is None:
            partner_time = partner_time.replace(tzinfo=UTC)
        if partner_time is not None:
            partner_time += WHOLE_SECOND_CENTRE
    if partner_time is None:
        stamp = _timestamp(headers)  # whole seconds, floored by the sender: centre it
        partner_time = stamp + WHOLE_SECOND_CENTRE if stamp is not None else None
    if partner_time is not None:
        record_skew_sample(partner, partner_time=partner_time, our_time=received_at)


def _record_duplicate(fields: dict) -> Receipt:
    with transaction.atomic():
        original = (
            InboundEvent.objects.select_for_update(no_key=True)
            .exclude(state=InboundState.REJECTED)
            .get(
                partner=fields["partner"],
                event_id=fields["event_id"],
                signature_valid=True,
                duplicate_of__isnull=True,
            )
        )
        fields = {k: v for k, v in fields.items() if k not in ("state", "result", "error", "processed_at")}
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


_RESULTS = {
    ObservationResult.APPLIED: InboundResult.APPLIED,
    ObservationResult.STALE: InboundResult.STALE,
    ObservationResult.DUPLICATE: InboundResult.DUPLICATE,
}


def _locked_events() -> QuerySet[InboundEvent]:
    # The delivery's row only (not its partner's, which every delivery shares), in the mode
    # that leaves other transactions' foreign key checks alone (see `lock_booking`).
    return InboundEvent.objects.select_for_update(of=("self",), no_key=True).select_related("partner")


def inbound_event_process(event_id: int) -> InboundEvent | None:
    """Apply a stored delivery through the one door. Safe to run twice: only a delivery still
    `received` is applied, under its row lock, and the one door ignores what it already holds."""
    with transaction.atomic():
        event = _locked_events().filter(pk=event_id).first()
        if event is None or event.state != InboundState.RECEIVED:
            return event
        try:
            webhook = parse_webhook(json.loads(bytes(event.raw_body)))
        except (ValueError, RecursionError, MalformedPayload) as exc:
            # Verified on receipt, so this is a stored row we cannot read: keep it for support
            # instead of retrying it for ever.
            event.state = InboundState.FAILED
            event.error = f"unreadable stored body: {exc}"[:2000]
            event.processed_at = timezone.now()
            event.save(update_fields=["state", "error", "processed_at"])
            logger.error("stored webhook unreadable", extra={"inbound_event_id": event.pk, "error": str(exc)})
            return event
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
    """Support: re-verify a stored delivery (its HMAC; its age no longer matters) and process it
    again through the one door, which records it as a duplicate or stale if nothing is new."""
    with transaction.atomic():
        event = _locked_events().get(pk=event_id)
        if event.duplicate_of_id is not None:
            raise Conflict(
                f"Delivery {event.pk} repeats delivery {event.duplicate_of_id}; replay that one.",
                code="replay_duplicate",
            )
        if not signature_matches(event.partner, bytes(event.raw_body), event.headers):
            raise Conflict(
                "The stored delivery's signature does not verify; it will not be replayed.",
                code="signature_mismatch",
            )
        try:
            parse_webhook(json.loads(bytes(event.raw_body)))
        except (ValueError, RecursionError, MalformedPayload) as exc:
            raise Conflict(f"The stored body cannot be applied: {exc}", code="malformed_body") from None
        event.state = InboundState.RECEIVED
        event.error = ""
        event.save(update_fields=["state", "error"])
    logger.info("webhook replayed", extra={"inbound_event_id": event_id, "by": actor_label})
    processed = inbound_event_process(event_id)
    assert processed is not None
    return processed
