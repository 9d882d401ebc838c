"""Inbound webhooks (invariant 9): verified, deduplicated, stored raw, acknowledged fast,
processed by a worker through the one door for partner truth.

What arrives is sorted at the edge, before anything is applied:

- unverified (no valid signature, or too large): refused, kept only as bounded evidence, linked
  to nothing, whatever booking its body names (anyone can post it);
- authentic but late (the signature verifies, the timestamp is out of tolerance): refused and
  not applied, but the booking it names is synced from the partner at once;
- authentic with content we cannot use (unparseable, or a value out of range): `invalid`, never
  retried, and the booking it names is synced at once;
- authentic and readable: stored and queued; processing runs at most WEBHOOK_PROCESS_MAX_TRIES
  times, and content that turns out not to fit is set aside as `invalid` on the first run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import redis
from django.conf import settings
from django.db import DataError, IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.states import OPEN_STATES, BookingState
from bookings.timeline import record_event
from config.errors import Conflict
from partners import messages
from partners.connectors import bounds
from partners.connectors.http import parse_http_date
from partners.connectors.reference import MalformedPayload, UnsupportedEvent, WebhookEvent, parse_webhook
from partners.models import (
    InboundEvent,
    InboundResult,
    InboundState,
    ObservationResult,
    Partner,
    PartnerReservation,
    Source,
)
from partners.services import signatures, webhook_limits
from partners.services.observations import observation_apply
from partners.services.skew import record_skew_sample, sample_from_delivery

logger = logging.getLogger(__name__)

# Standard Webhooks' freshness window (the library's): older or newer signatures are refused.
TOLERANCE = timedelta(minutes=5)
KEPT_HEADERS = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "date",
    "content-type",
    "user-agent",
)
HEADER_CHARS = 1000
ERROR_CHARS = 2000
EVENT_ID_CHARS = 200  # InboundEvent.event_id: a longer id is refused, never cut (two would become one)
# What reading a body we cannot use raises: not JSON, nested past the parser, or refused by it
# (`MalformedPayload`, out-of-range values included).
UNREADABLE = (ValueError, RecursionError, MalformedPayload)


@dataclass(frozen=True)
class Receipt:
    status: int
    code: str
    message: str
    event: InboundEvent | None = None


@dataclass(frozen=True)
class Delivery:
    """One POST to a partner's webhook URL, as received."""

    partner: Partner
    raw: bytes  # all of it, or (too large to read) its first bytes
    headers: dict[str, str]  # lower-cased names
    source: str
    size: int | None = None  # as declared, when the body was too large to read

    @property
    def body_size(self) -> int | None:
        return len(self.raw) if self.size is None else self.size

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest() if self.size is None else ""

    @property
    def event_id(self) -> str:
        # As evidence, a refused delivery's id is kept cut and without NUL (the database's text
        # holds none); an accepted one's is whole (`_event_id_problem`).
        return self.headers.get("webhook-id", "")[:EVENT_ID_CHARS].replace("\x00", "\ufffd")

    @property
    def kept_headers(self) -> dict[str, str]:
        return {name: self.headers[name][:HEADER_CHARS] for name in KEPT_HEADERS if name in self.headers}

    @property
    def timestamp(self) -> datetime | None:
        return _timestamp(self.headers)


def _timestamp(headers: dict[str, str]) -> datetime | None:
    return signatures.signed_time(headers)


# --- signatures ---------------------------------------------------------------------------------
def verify_signature(partner: Partner, raw: bytes, headers: dict[str, str]) -> str:
    """Return '' when the delivery is authentic, whatever its age, else why not (our words, one
    line). Checked over the raw bytes (`signatures`): a body that is not UTF-8 can be authentic."""
    key = signatures.secret_key(partner.resolved_webhook_secret())
    if not key:
        return "the partner has no webhook secret configured"
    return signatures.signature_problem(key, raw, headers)


def signature_matches(partner: Partner, raw: bytes, headers: dict[str, str]) -> bool:
    """Does the HMAC verify, whatever the delivery's age (a late delivery; support's re-verify)?"""
    lowered = {name.lower(): value for name, value in headers.items()}
    return not verify_signature(partner, raw, lowered)


def _late_by(delivery: Delivery, now: datetime) -> timedelta | None:
    """How far an authentic delivery's signed time is from ours, when beyond the tolerance."""
    timestamp = delivery.timestamp
    if timestamp is None or abs(timestamp - now) <= TOLERANCE:
        return None
    return timestamp - now


# --- receipt ------------------------------------------------------------------------------------
def inbound_event_receive(
    *, partner: Partner, raw: bytes, headers: dict[str, str], source: str = ""
) -> Receipt:
    """Sort and store one delivery; the caller answers with `Receipt.status` at once."""
    delivery = Delivery(partner, raw, {k.lower(): v for k, v in headers.items()}, source[:64])
    if len(raw) > settings.WEBHOOK_MAX_BYTES:
        return _too_large(delivery)
    problem = verify_signature(partner, raw, delivery.headers)
    if problem:
        return _refuse(delivery, status=401, code="invalid_signature", why=problem)
    late_by = _late_by(delivery, timezone.now())
    if late_by is not None:
        return _refuse_late(delivery, late_by)
    try:
        body = read_body(raw)
    except UNREADABLE as exc:
        return _refuse_invalid(delivery, body=None, why=_reason(exc))
    problem = _event_id_problem(delivery.headers.get("webhook-id", ""))
    if problem:
        return _refuse_invalid(delivery, body=body, why=problem)
    try:
        parse_webhook(body)
    except UnsupportedEvent as exc:
        return _store_accepted(delivery, unsupported=str(exc))
    except UNREADABLE as exc:
        return _refuse_invalid(delivery, body=body, why=_reason(exc))
    return _store_accepted(delivery)


def _event_id_problem(event_id: str) -> str:
    """Why an authentic delivery's `webhook-id` cannot be stored as its id ('' when it can)."""
    if len(event_id) > EVENT_ID_CHARS:
        return f"webhook-id is longer than {EVENT_ID_CHARS} characters"
    if "\x00" in event_id:
        return "webhook-id holds a NUL character"
    return ""


def body_too_large(
    partner: Partner, first_bytes: bytes, headers: dict[str, str], *, size: int | None, source: str = ""
) -> Receipt:
    """413 for a body bigger than Django reads at all: its first bytes are the evidence."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return _too_large(Delivery(partner, first_bytes, lowered, source[:64], size=size))


def _too_large(delivery: Delivery) -> Receipt:
    # Unverified: a signature over a cut body means nothing.
    size = delivery.body_size
    why = f"{size if size is not None else 'unknown'} bytes, more than {settings.WEBHOOK_MAX_BYTES}"
    return _refuse(delivery, status=413, code="payload_too_large", why=why)


def _refuse(delivery: Delivery, *, status: int, code: str, why: str) -> Receipt:
    """Unverified: kept as evidence within its limits, linked to nothing, never applied."""
    event = _keep_refused(
        delivery, state=InboundState.REJECTED, result=InboundResult.REJECTED, authentic=False, why=why
    )
    if event is not None:  # a line per stored one: a flood past the limits must not flood the log
        logger.warning(
            "webhook refused",
            extra={
                "partner": delivery.partner.code,
                "code": code,
                "why": why[:200],
                "source": delivery.source,
            },
        )
    return Receipt(status, code, why, event)


def _refuse_late(delivery: Delivery, late_by: timedelta) -> Receipt:
    """Authentic but out of tolerance: not applied (a replayed capture looks the same), but the
    booking it names is synced from the partner now."""
    booking_id = _named_booking_id(delivery.partner, _decoded(delivery.raw))
    seconds = round(late_by.total_seconds())
    why = (
        f"signed {abs(seconds)} s {'ahead of' if seconds > 0 else 'behind'} our clock, beyond the "
        f"{round(TOLERANCE.total_seconds())} s tolerance: not applied"
        + ("; the booking it names is synced from the partner instead" if booking_id else "")
    )
    event = _keep_refused(
        delivery,
        state=InboundState.REJECTED,
        result=InboundResult.LATE,
        authentic=True,
        why=why,
        booking_id=booking_id,
    )
    if booking_id:
        _pull_on_commit(delivery.partner, booking_id)
    logger.warning(
        "authentic webhook out of tolerance", extra={"partner": delivery.partner.code, "late_by_s": seconds}
    )
    return Receipt(401, "timestamp_out_of_tolerance", why, event)


def _refuse_invalid(delivery: Delivery, *, body: Any, why: str) -> Receipt:
    """Authentic, but its content cannot be used: quarantined at once, and the booking it names
    is synced from the partner instead."""
    booking_id = _named_booking_id(delivery.partner, body)
    event = _keep_refused(
        delivery, state=InboundState.INVALID, result="", authentic=True, why=why, booking_id=booking_id
    )
    if booking_id:
        _pull_on_commit(delivery.partner, booking_id)
    logger.warning("webhook content invalid", extra={"partner": delivery.partner.code, "why": why[:200]})
    return Receipt(400, "malformed_body", why, event)


def _keep_refused(
    delivery: Delivery,
    *,
    state: str,
    result: str,
    authentic: bool,
    why: str,
    booking_id: UUID | None = None,
) -> InboundEvent | None:
    """The evidence of a refused delivery, if its limits allow (`webhook_limits`): its kept
    headers, source, size, hash and first WEBHOOK_EVIDENCE_BYTES."""
    if not webhook_limits.evidence_allowed(delivery.partner, source=delivery.source, authentic=authentic):
        return None
    return InboundEvent.objects.create(
        partner=delivery.partner,
        event_id=delivery.event_id,
        raw_body=delivery.raw[: settings.WEBHOOK_EVIDENCE_BYTES],
        body_size=delivery.body_size,
        body_sha256=delivery.sha256,
        headers=delivery.kept_headers,
        source_address=delivery.source,
        partner_timestamp=delivery.timestamp,
        signature_valid=authentic,
        state=state,
        result=result,
        error=why[:ERROR_CHARS],
        processed_at=timezone.now(),
        booking_id=booking_id,
    )


def _store_accepted(delivery: Delivery, *, unsupported: str = "") -> Receipt:
    received_at = timezone.now()
    _sample_skew(delivery.partner, delivery.headers, received_at)
    fields: dict[str, Any] = {
        "partner": delivery.partner,
        "event_id": delivery.event_id,
        "raw_body": delivery.raw,
        "body_size": delivery.body_size,
        "body_sha256": delivery.sha256,
        "headers": delivery.kept_headers,
        "source_address": delivery.source,
        "partner_timestamp": delivery.timestamp,
        "signature_valid": True,
        "received_at": received_at,
    }
    if unsupported:
        # Authentic and well-formed, just not ours to apply: acknowledged, or it comes for hours.
        fields.update(
            state=InboundState.PROCESSED,
            result=InboundResult.UNSUPPORTED,
            error=unsupported[:ERROR_CHARS],
            processed_at=received_at,
        )
    try:
        with transaction.atomic():
            event = InboundEvent.objects.create(**fields)
            if not unsupported:
                messages.send_inbound_event_on_commit(event.pk)
    except IntegrityError:
        return _record_duplicate(fields)
    if unsupported:
        logger.info(
            "webhook of an unsupported type", extra={"partner": delivery.partner.code, "why": unsupported}
        )
        return Receipt(200, "ignored", "Event type not handled; acknowledged.", event)
    return Receipt(202, "accepted", "Stored; it will be processed shortly.", event)


def _sample_skew(partner: Partner, headers: dict[str, str], received_at: datetime) -> None:
    """Partner clock minus ours: from its `Date` header, else the signed `webhook-timestamp`
    (both whole seconds, truncated by the sender). The `Date` is not signed: one that cannot be
    read, or that no clock would write (further off than `skew.PLAUSIBLE_SKEW`, e.g. 1970), is
    passed over for the signed time, which is within TOLERANCE of ours or the delivery was refused."""
    sample = None
    date = parse_http_date(headers.get("date"))
    if date is not None:
        sample = sample_from_delivery(date, received_at=received_at)
    if sample is None and (signed := _timestamp(headers)) is not None:
        sample = sample_from_delivery(signed, received_at=received_at)
    if sample is not None:
        record_skew_sample(partner, sample)


def _record_duplicate(fields: dict) -> Receipt:
    """A delivery of an event id we hold: acknowledged, never applied. A redelivery repeats its
    content; one under the same id with other content (a partner's bug: the id is the event's) is
    not applied either, since the id is all that orders deliveries, but said so on the timeline,
    and the booking it or the original names is synced from the partner instead.

    Anyone holding a captured delivery can send it again while its signature is fresh (five
    minutes), as often as they like: each copy is counted (the deliveries' metric, by the view),
    but stored only within its budget (`webhook_limits.duplicate_allowed`), and the booking's
    timeline says it once per original and content, not once per copy."""
    partner = fields["partner"]
    allowed = webhook_limits.duplicate_allowed(partner)  # before the row lock: Redis may be slow
    with transaction.atomic():
        original = (
            InboundEvent.objects.select_for_update(no_key=True)
            .exclude(state__in=[InboundState.REJECTED, InboundState.INVALID])
            .get(
                partner=partner,
                event_id=fields["event_id"],
                signature_valid=True,
                duplicate_of__isnull=True,
            )
        )
        other_content = fields["body_sha256"] != original.body_sha256
        booking = original.booking
        # No booking on the original yet: it waits to be applied (a copy sent right behind it),
        # or names none. Read from the copy's body, so the copy is on the timeline all the same.
        if booking is None:
            named = _named_booking_id(partner, _decoded(fields["raw_body"]))
            booking = Booking.objects.filter(pk=named).first() if named else None
        why = f"the id of delivery {original.pk}, with other content: not applied" if other_content else ""
        event = None
        # Without Redis, only what no replay can make: another content under the id (signed anew).
        if allowed or (allowed is None and other_content):
            kept = {k: v for k, v in fields.items() if k not in ("state", "result", "error", "processed_at")}
            event = InboundEvent.objects.create(
                **kept,
                duplicate_of=original,
                state=InboundState.PROCESSED,
                result=InboundResult.DUPLICATE,
                error=why,
                processed_at=timezone.now(),
                booking=booking,
                reservation=original.reservation,
            )
        kind = "webhook.duplicate.other_content" if other_content else "webhook.duplicate"
        # The original's lock orders its copies: one of them writes this, the others see it.
        first_of_its_content = booking is not None and not _duplicate_told(
            booking, kind, original, fields["body_sha256"]
        )
        if first_of_its_content:
            record_event(
                booking,
                kind,
                actor=Actor.WEBHOOK,
                actor_label=f"{partner.code}:{original.event_id}",
                summary=(
                    f"Webhook {original.event_id} delivered again with other content: not applied; "
                    "the booking is synced from the partner instead"
                    if other_content
                    else f"Webhook {original.event_id} delivered again: ignored"
                ),
                partner_time=fields["partner_timestamp"],
                data={
                    "inbound_event_id": event.pk if event is not None else None,
                    "duplicate_of": original.pk,
                    "body_sha256": fields["body_sha256"],
                },
            )
        if other_content:
            if first_of_its_content or booking is None:
                logger.warning(
                    "webhook id reused with other content",
                    extra={
                        "partner": partner.code,
                        "inbound_event_id": event.pk if event is not None else None,
                        "duplicate_of": original.pk,
                    },
                )
            if booking is not None:
                _pull_on_commit(partner, booking.pk)
    return Receipt(200, "duplicate", "Already received.", event)


def _duplicate_told(booking: Booking, kind: str, original: InboundEvent, body_sha256: str) -> bool:
    """Whether the booking's timeline already says that `original` came again with this content."""
    return booking.events.filter(
        kind=kind, data__duplicate_of=original.pk, data__body_sha256=body_sha256
    ).exists()


# --- what an authentic delivery we do not apply names -------------------------------------------
def _identifier(value: Any) -> str:
    """An id as the bounds read one ('' when they would refuse it): never a NUL, which PostgreSQL
    refuses to compare, nor a lone surrogate, which psycopg cannot encode (a 500 where a 400 or
    401 is owed)."""
    try:
        return bounds.identifier(value, field="id")
    except MalformedPayload:
        return ""


def _named_booking_id(partner: Partner, body: Any) -> UUID | None:
    """The booking of ours an authentic delivery is about (by the partner's id, else by our
    reference), read leniently from its body: only to link the delivery and pull the truth,
    never to apply anything."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return None
    partner_ref, reference = _identifier(data.get("id")), _identifier(data.get("client_reference"))
    booking_id = None
    if partner_ref:
        booking_id = (
            PartnerReservation.objects.filter(partner=partner, partner_ref=partner_ref, booking__isnull=False)
            .values_list("booking_id", flat=True)
            .first()
        )
    if booking_id is None and reference:
        booking_id = (
            Booking.objects.filter(partner=partner, reference=reference).values_list("id", flat=True).first()
        )
    return booking_id


def _pull_on_commit(partner: Partner, booking_id: UUID) -> None:
    """Sync the booking from the partner after commit, at most once per PULL_INTERVAL. Without
    Redis the sweeper's regular sync still comes."""

    def pull() -> None:
        try:
            if webhook_limits.pull_due(booking_id):
                messages.send_step(messages.SYNC_BOOKING, booking_id, queue_name=partner.queue_name)
        except redis.RedisError:
            logger.warning(
                "sync after a webhook not queued (Redis unavailable)", extra={"booking_id": booking_id}
            )

    transaction.on_commit(pull)


def read_body(raw: bytes) -> Any:
    """The JSON body: UTF-8 text only, as the protocol says (`json.loads` alone would also take
    UTF-16 and UTF-32). Raises one of UNREADABLE."""
    return json.loads(raw.decode("utf-8"))


def _decoded(raw: bytes) -> Any:
    """The JSON body, or None when it is unreadable."""
    try:
        return read_body(raw)
    except UNREADABLE:
        return None


def _reason(exc: BaseException) -> str:
    """Why a body is unreadable, in our words (one line; never a library's message)."""
    if isinstance(exc, RecursionError):
        return "body nested too deeply to read"
    if isinstance(exc, MalformedPayload):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return f"body is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"body is not JSON (unreadable at line {exc.lineno}, column {exc.colno})"
    return "body is not JSON"


# --- processing ---------------------------------------------------------------------------------
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
    `received` is applied, under its row lock, and the one door ignores what it already holds.

    Each run is counted first, in a transaction of its own; past WEBHOOK_PROCESS_MAX_TRIES runs
    the delivery is set aside as failed. Content that does not fit our records (a value the
    database refuses) is set aside as invalid at once: no retry can change it. Any other error
    is kept on the row and raised, for the actor's bounded retries.
    """
    if not _begin_try(event_id):
        return InboundEvent.objects.filter(pk=event_id).first()
    try:
        return _apply(event_id)
    except (DataError, OverflowError) as exc:
        return _set_aside_if_received(
            event_id, InboundState.INVALID, f"a value does not fit our records: {exc}"
        )
    except Exception as exc:
        _record_failed_try(event_id, exc)
        raise


def _begin_try(event_id: int) -> bool:
    with transaction.atomic():
        event = _locked_events().filter(pk=event_id).first()
        if event is None or event.state != InboundState.RECEIVED:
            return False
        if event.tries >= settings.WEBHOOK_PROCESS_MAX_TRIES:
            _set_aside(event, InboundState.FAILED, f"gave up after {event.tries} tries: {event.error}")
            return False
        event.tries += 1
        event.save(update_fields=["tries"])
    return True


def _apply(event_id: int) -> InboundEvent | None:
    with transaction.atomic():
        event = _locked_events().filter(pk=event_id).first()
        if event is None or event.state != InboundState.RECEIVED:
            return event
        try:
            webhook: WebhookEvent = parse_webhook(read_body(bytes(event.raw_body)))
        except UNREADABLE as exc:
            _set_aside(event, InboundState.INVALID, _reason(exc))
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
        event.error = ""
        event.processed_at = timezone.now()
        event.save(update_fields=["state", "result", "booking", "reservation", "error", "processed_at"])
        return event


def _record_failed_try(event_id: int, exc: Exception) -> None:
    """Keep the error for support; on the last try, set the delivery aside now rather than on
    the next run."""
    error = f"{type(exc).__name__}: {exc}"
    with transaction.atomic():
        event = _locked_events().filter(pk=event_id).first()
        if event is None or event.state != InboundState.RECEIVED:
            return
        if event.tries >= settings.WEBHOOK_PROCESS_MAX_TRIES:
            _set_aside(event, InboundState.FAILED, f"gave up after {event.tries} tries: {error}")
        else:
            event.error = error[:ERROR_CHARS]
            event.save(update_fields=["error"])


def _set_aside_if_received(event_id: int, state: str, why: str) -> InboundEvent | None:
    with transaction.atomic():
        event = _locked_events().filter(pk=event_id).first()
        if event is not None and event.state == InboundState.RECEIVED:
            _set_aside(event, state, why)
        return event


def _set_aside(event: InboundEvent, state: str, why: str) -> None:
    """Never processed again (the sweeper re-queues only `received`): linked to the booking it
    names, which is synced from the partner instead, and counted in partner health."""
    event.state = state
    event.error = why[:ERROR_CHARS]
    event.processed_at = timezone.now()
    event.booking_id = _named_booking_id(event.partner, _decoded(bytes(event.raw_body)))
    event.save(update_fields=["state", "error", "processed_at", "booking"])
    if event.booking_id:
        _pull_on_commit(event.partner, event.booking_id)
    logger.error(
        "stored webhook set aside",
        extra={"inbound_event_id": event.pk, "partner": event.partner.code, "state": state, "why": why[:200]},
    )


# --- support and housekeeping -------------------------------------------------------------------
def inbound_event_named_booking_id(event: InboundEvent) -> UUID | None:
    """The booking of ours a stored delivery names (by the partner's id, else our reference): the
    one its processing finds, read before it is processed (e.g. its state before a replay)."""
    return _named_booking_id(event.partner, _decoded(bytes(event.raw_body)))


def replay_refusal(event: InboundEvent) -> Conflict | None:
    """Why a replay of the stored delivery is refused (the refusal `inbound_event_replay` raises),
    or None: the one question its previews (a dry run, the console's page) ask too."""
    if event.duplicate_of_id is not None:
        return Conflict(
            f"Delivery {event.pk} repeats delivery {event.duplicate_of_id}; replay that one.",
            code="replay_duplicate",
        )
    if event.body_pruned_at is not None:
        return Conflict(
            f"Its body was cleared on {event.body_pruned_at:%Y-%m-%d}, more than "
            f"{settings.WEBHOOK_BODY_RETENTION_DAYS} days after it was received (its id, hash, size and "
            "headers are kept): it cannot be verified or replayed. Sync the booking instead.",
            code="body_pruned",
        )
    if not event.evidence_complete:
        return Conflict(
            f"Only the first {len(event.raw_body)} of its {event.body_size} bytes were kept; "
            "it cannot be verified or replayed.",
            code="evidence_incomplete",
        )
    if not signature_matches(event.partner, bytes(event.raw_body), event.headers):
        return Conflict(
            "The stored delivery's signature does not verify; it will not be replayed.",
            code="signature_mismatch",
        )
    try:
        parse_webhook(read_body(bytes(event.raw_body)))
    except UnsupportedEvent as exc:  # authentic and readable: answered `ignored` when it came
        return Conflict(f"Its type is not one we handle ({exc}): nothing to apply.", code="unsupported_event")
    except UNREADABLE as exc:
        return Conflict(f"The stored body cannot be applied: {_reason(exc)}", code="malformed_body")
    return None


def inbound_event_replay(event_id: int, *, actor_label: str) -> InboundEvent:
    """Support: re-verify a stored delivery (its HMAC; its age no longer matters) and process it
    again through the one door, which records it as a duplicate or stale if nothing is new."""
    with transaction.atomic():
        event = _locked_events().get(pk=event_id)
        if (refused := replay_refusal(event)) is not None:
            raise refused
        event.state = InboundState.RECEIVED
        event.signature_valid = True
        event.error = ""
        event.tries = 0
        try:
            with transaction.atomic():
                event.save(update_fields=["state", "signature_valid", "error", "tries"])
        except IntegrityError:
            raise Conflict(
                f"Another delivery of event {event.event_id} was accepted; replay that one.",
                code="replay_duplicate",
            ) from None
    logger.info("webhook replayed", extra={"inbound_event_id": event_id, "by": actor_label})
    processed = inbound_event_process(event_id)
    assert processed is not None
    return processed


def inbound_refused_prune(
    *, before: datetime, partner: Partner | None = None, batch_size: int, dry_run: bool = False
) -> int:
    """Delete the evidence of unverified deliveries received before `before` (one batch, oldest
    first); how many rows went (would go, on a dry run). With the storage limit, what a forged
    flood leaves is bounded in time as well as in rate. Authentic ones stay: they are on their
    bookings' timelines."""
    rows = InboundEvent.objects.filter(
        state=InboundState.REJECTED, signature_valid=False, received_at__lt=before
    )
    if partner is not None:
        rows = rows.filter(partner=partner)
    ids = list(rows.order_by("received_at").values_list("id", flat=True)[:batch_size])
    if dry_run or not ids:
        return len(ids)
    deleted, _ = InboundEvent.objects.filter(pk__in=ids).delete()
    return deleted


def inbound_bodies_prune(
    *, before: datetime, partner: Partner | None = None, batch_size: int, dry_run: bool = False
) -> int:
    """Clear the bodies of authentic deliveries processed and received before `before` (one batch,
    oldest first); how many were cleared (would be, on a dry run). The rows stay, with the event
    id, hash, size and headers: a redelivery is still recognised by (partner, event id) and
    answered as ever (`_record_duplicate` compares the hash). What the partner said of its
    reservation stays in the observation it brought. Left alone: deliveries not processed yet or
    set aside (failed, invalid: support's replay reads those), and those of a booking still open
    or with support. A pruned delivery is not replayed (`replay_refusal` says why)."""
    rows = InboundEvent.objects.filter(
        signature_valid=True,
        state=InboundState.PROCESSED,
        body_pruned_at__isnull=True,
        received_at__lt=before,
    ).exclude(booking__status__in=[*OPEN_STATES, BookingState.NEEDS_ATTENTION])
    if partner is not None:
        rows = rows.filter(partner=partner)
    ids = list(rows.order_by("received_at").values_list("id", flat=True)[:batch_size])
    if dry_run or not ids:
        return len(ids)
    return InboundEvent.objects.filter(pk__in=ids, body_pruned_at__isnull=True).update(
        raw_body=b"", body_pruned_at=timezone.now()
    )
