"""The words of the payments app's records on a booking's timeline: each operation asked of the
provider and each webhook delivery it sent, as the reconciled timeline
(reconciliation/selectors/timeline.py) and the console show them. No secrets: a delivery's body is
reduced to what it says of the payment."""

from __future__ import annotations

import json
from typing import Any

from payments.models import EventState, PaymentEvent, PaymentOperation


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
        obj = json.loads(body)["data"]["object"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return {"unreadable": True}
    if not isinstance(obj, dict):
        return {"unreadable": True}
    keep = ("id", "object", "status", "amount", "amount_received", "amount_captured", "amount_refunded")
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
        "object": _said(bytes(event.body or b"")),
    }
