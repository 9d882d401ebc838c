"""The words of the payments app's records on a booking's timeline: each operation asked of the
provider and each webhook delivery it sent, as the reconciled timeline
(reconciliation/selectors/timeline.py) and the console show them. No secrets: a delivery's body is
reduced to what it says of the payment. The provider's own ids (the intent, its charges and
refunds) are kept in the words, and hidden by `hide_provider_ids` from whoever may not see them."""

from __future__ import annotations

import re
from typing import Any

from config.text import strict_json
from payments.models import EventState, PaymentEvent, PaymentOperation

# Who may see the provider's ids of what it holds and made for us (docs/console.md).
PROVIDER_TRUTH_PERMISSION = "payments.view_provider_truth"
# What stands in for a provider's id that the viewer may not see.
HIDDEN = "(hidden)"
# Where the payments app's words keep a provider id: a row's `intent` (observations) and
# `provider_object` (a try's, an operation's: the intent or the refund it made), a delivery's
# `payment_intent`, and a charge's.
_ID_KEYS = frozenset({"intent", "provider_object", "payment_intent", "latest_charge", "charge"})
# The provider's objects a delivery describes: their `id` is the provider's.
_ID_OBJECTS = frozenset({"payment_intent", "charge", "refund"})
# A provider id in free text (a summary, an error the provider wrote): an intent, a refund, a
# charge, a payment, a balance transaction. Its event ids (`evt_`) are not: they name deliveries.
_ID_TEXT = re.compile(r"\b(?:pi|re|ch|py|pyr|txn)_[A-Za-z0-9]{6,}\b")


def hide_provider_ids(value: Any) -> Any:
    """`value` (a row's data or summary) without the provider's ids: each kept under a key that
    holds one, an `id` of a provider object a delivery described, and any in free text, replaced
    by HIDDEN. Everything else (our keys, amounts, states, its delivery ids) is left as it is."""
    if isinstance(value, dict):
        kind = value.get("object")
        names_object = isinstance(kind, str) and kind in _ID_OBJECTS
        return {
            key: HIDDEN
            if item and (key in _ID_KEYS or (key == "id" and names_object))
            else hide_provider_ids(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [hide_provider_ids(item) for item in value]
    if isinstance(value, str):
        return _ID_TEXT.sub(HIDDEN, value)
    return value


def operation_summary(operation: PaymentOperation, currency: str) -> str:
    amount = f" {operation.amount} {currency}" if operation.amount is not None else ""
    tries = f"{operation.tries} tr{'y' if operation.tries == 1 else 'ies'}"
    outcome = f", last {operation.last_outcome}" if operation.last_outcome else ""
    return (
        f"{operation.get_kind_display()}{amount} (#{operation.seq}): "
        f"{operation.get_state_display().lower()} after {tries}{outcome}"
    )


def operation_data(operation: PaymentOperation) -> dict[str, Any]:
    return {
        "payment_operation_id": operation.pk,
        "kind": operation.kind,
        "seq": operation.seq,
        "idempotency_key": operation.idempotency_key,
        "amount": str(operation.amount) if operation.amount is not None else None,
        "state": operation.state,
        "tries": operation.tries,
        "last_outcome": operation.last_outcome,
        "last_http_status": operation.last_http_status,
        "last_error": operation.last_error,
        "provider_object": operation.provider_object_id,
        "answer_lost": operation.answer_lost,
        "failure_reason": operation.failure_reason,
        "failed_at": operation.failed_at.isoformat() if operation.failed_at else None,
        "opened_at": operation.opened_at.isoformat(),
        "last_tried_at": operation.last_tried_at.isoformat() if operation.last_tried_at else None,
        "closed_at": operation.closed_at.isoformat() if operation.closed_at else None,
    }


def event_mark(event: PaymentEvent) -> str:
    """The timeline's mark of a delivery that changed nothing (ignored, failed)."""
    return {EventState.IGNORED: "ignored", EventState.KNOWN: "known", EventState.FAILED: "failed"}.get(
        event.state, ""
    )


def event_summary(event: PaymentEvent) -> str:
    error = f": {event.error[:160]}" if event.error else ""
    return f"Provider webhook {event.type} ({event.event_id}) {event.get_state_display().lower()}{error}"


def _said(body: bytes) -> dict[str, Any]:
    """What a delivery's object says of the payment: its id, status and amounts (minor units)."""
    try:
        obj = strict_json(body)["data"]["object"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return {"unreadable": True}
    if not isinstance(obj, dict):
        return {"unreadable": True}
    keep = (
        "id",
        "object",
        "status",
        "failure_reason",
        "amount",
        "amount_received",
        "amount_captured",
        "amount_refunded",
    )
    said = {key: obj[key] for key in keep if key in obj}
    said["currency"] = obj.get("currency")
    if obj.get("payment_intent"):
        said["payment_intent"] = obj["payment_intent"]
    return said


def event_data(event: PaymentEvent) -> dict[str, Any]:
    return {
        "payment_event_id": event.pk,
        "event_id": event.event_id,
        "type": event.type,
        "state": event.state,
        "tries": event.tries,
        "error": event.error[:300],
        "received_at": event.received_at.isoformat(),
        "processed_at": event.processed_at.isoformat() if event.processed_at else None,
        "object": (
            {"body_cleared_at": event.body_pruned_at.isoformat()}
            if event.body_pruned_at is not None
            else _said(bytes(event.body or b""))
        ),
    }
