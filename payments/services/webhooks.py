"""The provider's webhooks (invariant 9 for the money): verified with the provider's own
signature scheme (Stripe-Signature over the raw body, with our endpoint's secret), stored raw,
deduplicated by the event's id, acknowledged at once and applied by a worker through the one
door for the provider's truth (`observations.truth_apply`), which never lets an older or repeated
word move a payment back.

A delivery whose payment we cannot name is stored as ignored (acknowledged: asking again would
tell us nothing more). One that tells nothing new of its payment (the echo of our own operation,
whose answer already went through the one door; an older word) is stored as known, on receipt or
by the worker before it takes any lock: stored and deduplicated all the same, never applied, and
shown on the booking's timeline as a delivery of its own. One that arrives while our call on its
payment is still out is held for that call's record, which settles it (`deliveries`). One whose
content we refuse (another currency, an amount out of range) is set aside as failed on the
timeline, never applied; the next read of the intent settles the payment instead. A
`refund.failed`, `refund.updated` or `charge.refund.updated` is one refund's own news: only its
failure is new, once whichever of them says it (`observations.refund_truth_apply`); a refund made
is its operation's answer, known.
"""

from __future__ import annotations

import json
import logging
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from bookings import ports
from bookings.models import Actor, Booking
from bookings.services import lock_booking
from bookings.states import OPEN_STATES, BookingState
from bookings.timeline import record_event
from config.text import storable
from payments import connector, messages
from payments.connector import MalformedEvent, RefundTruth, StaleEvent, UnverifiedEvent
from payments.models import SETTLED_EVENT_STATES, EventState, Payment, PaymentEvent
from payments.money import RefusedAmount
from payments.services.deliveries import event_object, event_truth, tells_nothing_new
from payments.services.observations import (
    booking_follow,
    lock_payment,
    open_operation_of,
    refund_truth_apply,
    truth_apply,
)
from payments.services.runs import plan_for, schedule

logger = logging.getLogger(__name__)

# The events we apply; any other type is acknowledged and kept as ignored.
HANDLED = frozenset(
    {
        "payment_intent.amount_capturable_updated",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "charge.refunded",
        # A refund's own news, its object the refund: only its failure is applied, once, whichever
        # says it first. Stripe sends `charge.refund.updated` only for some payment methods;
        # `refund.updated` and `refund.failed` for every refund.
        "charge.refund.updated",
        "refund.updated",
        "refund.failed",
    }
)


@dataclass(frozen=True)
class Receipt:
    status: int
    code: str
    message: str
    event: PaymentEvent | None = None


def _name(value: Any) -> str:
    """An id as the provider writes them, or "" for anything that cannot name a row of ours
    (not text, empty, longer than our columns, a NUL or lone surrogate the database cannot
    compare)."""
    if not isinstance(value, str) or not 0 < len(value) <= connector.EVENT_ID_CHARS or not storable(value):
        return ""
    return value


def _payment_locked(obj: dict[str, Any]) -> Payment | None:
    """The payment an intent or charge is about, with its row lock: by the intent's id, or (for
    an intent we have not heard back from yet) by the payment id its metadata carries. Call in a
    transaction; found and locked in one statement."""
    is_intent = obj.get("object") == "payment_intent"
    intent_id = _name(obj.get("id") if is_intent else obj.get("payment_intent"))
    metadata = obj.get("metadata") if is_intent else None
    ours = _name(metadata.get("payment")) if isinstance(metadata, dict) else ""
    match = Q()
    if intent_id:
        match |= Q(provider_intent_id=intent_id)
    if ours:
        with suppress(ValueError):  # not a payment id of ours
            match |= Q(pk=uuid.UUID(ours))
    return Payment.objects.select_for_update(no_key=True).filter(match).first() if match else None


def payment_event_receive(*, raw: bytes, signature: str) -> Receipt:
    """Verify, store and queue one delivery; what to answer the provider."""
    if len(raw) > settings.WEBHOOK_MAX_BYTES:
        return Receipt(413, "payload_too_large", "The body is larger than a payment event may be.")
    try:
        event = connector.verify_event(raw, signature)
    except StaleEvent as error:
        logger.warning("payment webhook refused: %s", error)
        tolerance = connector.WEBHOOK_TOLERANCE_S
        message = f"The Stripe-Signature verifies, but was {error}: more than the {tolerance} s allowed."
        return Receipt(400, "timestamp_out_of_tolerance", message)
    except UnverifiedEvent as error:
        logger.warning("payment webhook refused: %s", error)
        return Receipt(400, "invalid_signature", "The Stripe-Signature does not verify.")
    except MalformedEvent as error:
        logger.warning("payment webhook refused: %s", error)
        return Receipt(400, "malformed_body", f"The signature verifies, but the body is no event: {error}.")
    kind = event["type"]
    obj = event_object(event)
    try:
        with transaction.atomic():
            # The payment's row lock waits for a run recording its answer, so that the delivery
            # is judged against that answer (the lock `lock_payment` takes; the booking's is not
            # needed to read the payment, nor taken, so no order is crossed).
            payment = _payment_locked(obj) if kind in HANDLED else None
            held = False
            if payment is None:
                state = EventState.IGNORED
            elif tells_nothing_new(obj, payment):
                state = EventState.KNOWN
            else:
                state = EventState.RECEIVED
                # Our call to the provider is in flight: its record settles this (deliveries).
                # A statement of its own: one that waited for the lock sees other tables as they
                # were before the record it waited for committed.
                held = payment.operations.open().exists()
            stored = PaymentEvent.objects.create(
                event_id=event["id"],
                type=kind,
                body=raw,
                payment=payment,
                state=state,
                processed_at=None if state == EventState.RECEIVED else timezone.now(),
            )
            if state == EventState.RECEIVED and not held:
                messages.send_event_on_commit(stored.pk)
    except IntegrityError:
        return Receipt(200, "duplicate", "This event was received before.")
    if payment is None:
        return Receipt(200, "ignored", "Nothing of ours, or a type we do not apply.", stored)
    if state == EventState.KNOWN:
        return Receipt(202, "known", "Stored; nothing new for the payment.", stored)
    return Receipt(202, "accepted", "Stored; applied shortly.", stored)


def payment_event_process(event_id: int) -> None:
    """Apply one stored delivery through the one door; at most WEBHOOK_PROCESS_MAX_TRIES runs,
    then it is set aside as failed (support reads it; the sweeper's runs read the intent)."""
    counted = PaymentEvent.objects.filter(pk=event_id, state=EventState.RECEIVED).update(tries=F("tries") + 1)
    event = PaymentEvent.objects.filter(pk=event_id).select_related("payment").first()
    if not counted or event is None or event.payment is None:
        return
    if event.tries > settings.WEBHOOK_PROCESS_MAX_TRIES:
        PaymentEvent.objects.filter(pk=event_id, state=EventState.RECEIVED).update(
            state=EventState.FAILED, error="gave up after its tries", processed_at=timezone.now()
        )
        return
    obj = event_object(json.loads(bytes(event.body)))  # the stored raw body: it never changes
    if tells_nothing_new(obj, event.payment):
        # Nothing new since it was received (our own answer went through the one door meanwhile):
        # stored as such, without locking the booking and payment to find that out again.
        PaymentEvent.objects.filter(pk=event_id, state=EventState.RECEIVED).update(
            state=EventState.KNOWN, processed_at=timezone.now()
        )
        return
    run_after = False
    with transaction.atomic():
        booking = lock_booking(event.payment.booking_id)
        payment = lock_payment(booking)
        event = PaymentEvent.objects.select_for_update().get(pk=event_id)
        if event.state != EventState.RECEIVED or payment is None:
            return
        try:
            truth = event_truth(obj, payment)
        except (RefusedAmount, AttributeError, TypeError) as refused:
            _refuse(booking, event, str(refused))
            return
        said = {"source": f"webhook {event.type}", "actor": Actor.WEBHOOK, "actor_label": event.event_id}
        if isinstance(truth, RefundTruth):  # a refund's own news (its failure)
            refund_truth_apply(booking=booking, payment=payment, refund=truth, **said)
        else:
            truth_apply(booking=booking, payment=payment, truth=truth, **said)
        # Read under the payment's lock, once: what the customer is told (a capture in doubt) and
        # what to do next both depend on it.
        open_operation = open_operation_of(payment)
        booking_follow(
            booking, payment, open_operation=open_operation, actor=Actor.WEBHOOK, actor_label=event.event_id
        )
        event.state, event.processed_at = EventState.PROCESSED, timezone.now()
        event.save(update_fields=["state", "processed_at"])
        run_after = plan_for(booking, payment, open_operation=open_operation is not None).step != "nothing"
        if open_operation is None:
            # A step wanted now is due now (a hold's recheck may be hours away): if the run asked
            # for below is lost with its message, the sweeper runs it after the grace.
            schedule(payment, booking, retry_in_s=0 if run_after else None)
        if run_after:
            # The one after-commit path for a payment run: a broker that does not answer leaves
            # it due, never raises after the commit (nor skips the callbacks after it).
            ports.payment_run_on_commit(booking.pk)


def _refuse(booking: Booking, event: PaymentEvent, why: str) -> None:
    event.state, event.error, event.processed_at = EventState.FAILED, f"refused: {why}"[:2000], timezone.now()
    event.save(update_fields=["state", "error", "processed_at"])
    record_event(
        booking,
        "payment.webhook.refused",
        actor=Actor.WEBHOOK,
        actor_label=event.event_id,
        summary=f"{event.type} refused at our edge, not applied: {why}"[:300],
        data={"event": event.event_id, "type": event.type, "error": why[:300]},
    )
    logger.warning("payment webhook refused", extra={"event": event.event_id, "error": why[:300]})


def event_bodies_prune(*, before: datetime, partner=None, batch_size: int, dry_run: bool = False) -> int:
    """Clear the bodies of the provider's deliveries settled (processed, known, ignored) and
    received before `before` (one batch, oldest first); how many were cleared (would be, on a dry
    run). The rows stay with their event id, type and state: a redelivery is still refused by the
    event id's uniqueness and answered "duplicate" as ever. Left alone: deliveries still to
    process or set aside as failed (support reads those), and those of a booking still open or
    with support. The timeline then says the body was cleared instead of what it said."""
    rows = PaymentEvent.objects.filter(
        state__in=SETTLED_EVENT_STATES, body_pruned_at__isnull=True, received_at__lt=before
    ).exclude(payment__booking__status__in=[*OPEN_STATES, BookingState.NEEDS_ATTENTION])
    if partner is not None:
        rows = rows.filter(payment__booking__partner=partner)
    ids = list(rows.order_by("received_at").values_list("id", flat=True)[:batch_size])
    if dry_run or not ids:
        return len(ids)
    return PaymentEvent.objects.filter(pk__in=ids, body_pruned_at__isnull=True).update(
        body=b"", body_pruned_at=timezone.now()
    )
