"""What a stored delivery of the provider's says, and the deliveries held for a run in flight.

A webhook that arrives while one of our operations on its payment is open is, nearly always, the
echo of that operation: the provider sends it as it answers us, so it usually reaches the
receiver before our record of the answer commits. Queued, each cost a worker a message and three
statements to find that it told nothing new. Instead the receiver stores it unqueued, and the
run's record of its call, in the transaction that applies the answer, settles what it holds: a
delivery that now tells nothing new is stored as known, any other is queued to be applied. A run
that dies before its record leaves them to the sweeper's stale rule (RECONCILE_INBOUND_STALE_S),
as a lost message would.
"""

from __future__ import annotations

import json
from typing import Any

from django.utils import timezone

from payments import messages
from payments.connector import IntentTruth, RefundTruth, charge_truth, intent_truth, refund_truth
from payments.models import EventState, Payment, PaymentEvent
from payments.money import RefusedAmount
from payments.services.observations import brings_news, refund_failure_known


def event_object(event: dict[str, Any]) -> dict[str, Any]:
    data = event.get("data")
    found = data.get("object") if isinstance(data, dict) else None
    return found if isinstance(found, dict) else {}


def event_truth(obj: dict[str, Any], payment: Payment) -> IntentTruth | RefundTruth:
    """What a delivery's object says of its payment's intent, or of one of its refunds (a
    `refund.failed`, `refund.updated`, `charge.refund.updated`); `RefusedAmount` (or a type
    error) if we refuse it: another currency, or another amount than the payment's."""
    if obj.get("object") == "refund":
        return refund_truth(obj, payment.currency)
    if obj.get("object") == "charge":
        return charge_truth(obj, payment.currency, amount=payment.amount)
    return intent_truth(obj, payment.currency, amount=payment.amount)


def tells_nothing_new(obj: dict[str, Any], payment: Payment) -> bool:
    """The delivery tells nothing new of the payment as this instance holds it."""
    try:
        truth = event_truth(obj, payment)
    except (RefusedAmount, AttributeError, TypeError):
        return False  # refused by the worker, on the booking's timeline
    if isinstance(truth, RefundTruth):
        return refund_failure_known(payment, truth)
    return not brings_news(payment, truth)


def held_deliveries_settle(payment: Payment) -> None:
    """In the transaction that recorded a call's answer, on the locked payment as it now stands:
    each delivery of its not yet applied is stored as known if it tells nothing new, else queued
    after commit (one queued at receipt too is applied once: the worker takes only `received`)."""
    held = list(PaymentEvent.objects.filter(payment=payment, state=EventState.RECEIVED).only("id", "body"))
    known = [
        event.pk for event in held if tells_nothing_new(event_object(json.loads(bytes(event.body))), payment)
    ]
    if known:
        PaymentEvent.objects.filter(pk__in=known, state=EventState.RECEIVED).update(
            state=EventState.KNOWN, processed_at=timezone.now()
        )
    for event in held:
        if event.pk not in known:
            messages.send_event_on_commit(event.pk)
