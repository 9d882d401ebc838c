"""Operations asked of the provider: committed before their first call, called outside any
transaction, each try recorded on the booking's timeline with how it ended."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from django.db import connection
from django.utils import timezone

from bookings.models import Actor, Booking
from bookings.timeline import record_event
from config.logging import log_context
from payments.connector import CallResult
from payments.models import OperationKind, OperationState, Payment, PaymentOperation

logger = logging.getLogger(__name__)


class PaymentCallInTransaction(RuntimeError):
    """A provider call attempted while a database transaction is open (invariant 2)."""


def operation_open(
    payment: Payment,
    *,
    kind: str,
    amount=None,
    known: Sequence[PaymentOperation] | None = None,
    claimed: bool = False,
) -> PaymentOperation:
    """The next operation of `kind` on the payment, with its key: `<payment id>:<kind>:<n>`.
    The database allows one open operation per payment: this is the fence. `known`: every
    operation of the payment, read under its lock by the caller (spares counting them again).
    `claimed`: the caller calls it once this commits (its call counted in doubt from now). The
    caller holds the payment's lock: a refund keeps the refunded total it is opened beside."""
    if known is None:
        seq = PaymentOperation.objects.filter(payment=payment, kind=kind).count() + 1
    else:
        seq = sum(1 for o in known if o.kind == kind) + 1
    return PaymentOperation.objects.create(
        payment=payment,
        kind=kind,
        seq=seq,
        idempotency_key=f"{payment.pk}:{kind}:{seq}",
        amount=amount,
        refunded_before=payment.refunded_amount if kind == OperationKind.REFUND else None,
        calls_in_doubt=1 if claimed else 0,
    )


def operation_call(operation: PaymentOperation, call: Callable[[], CallResult]) -> CallResult:
    if connection.in_atomic_block:
        raise PaymentCallInTransaction(f"{operation.idempotency_key} called inside a transaction")
    with log_context(payment_key=operation.idempotency_key):
        result = call()
        logger.info(
            "payment call",
            extra={
                "operation": operation.kind,
                "outcome": result.outcome,
                "http_status": result.http_status,
                "latency_ms": result.latency_ms,
                "replayed": result.replayed,
                "error": result.error_code,
            },
        )
    return result


def operation_record(
    operation: PaymentOperation,
    result: CallResult,
    *,
    booking: Booking,
    closes: OperationState | None,
    actor: Actor | str,
    actor_label: str = "",
    read: bool = False,
    why: str = "",
) -> None:
    """Record one try (in the caller's transaction): on the operation, and on the timeline.
    `read`: the try read the provider instead of asking again under the key (its answer lost):
    its row says so, and what the read closed the operation as, never "ok" for a hold the read
    proved was not made. `why`: what the read showed that closes it so (kept as its last error,
    which support's words and panel show)."""
    now = timezone.now()
    operation.tries += 1
    operation.last_outcome = result.outcome
    operation.last_http_status = result.http_status
    operation.last_error = (why or result.error or result.error_code)[:500]
    operation.last_tried_at = now
    operation.provider_object_id = result.object_id or operation.provider_object_id
    fields = [
        "tries",
        "calls_in_doubt",  # the caller's count of this call, if its answer took it back
        "last_outcome",
        "last_http_status",
        "last_error",
        "last_tried_at",
        "provider_object_id",
    ]
    if closes is not None:
        operation.state, operation.closed_at = closes, now
        fields += ["state", "closed_at"]
    operation.save(update_fields=fields)
    amount = f" {operation.amount} {booking.currency}" if operation.amount is not None else ""
    replayed = ", replayed" if result.replayed else ""
    how = "read instead of asked again" if read else result.outcome
    closed = f": {operation.get_state_display().lower()}" if read and closes is not None else ""
    closed += f" ({why})" if why else ""
    record_event(
        booking,
        f"payment.{operation.kind}.{'read' if read else result.outcome}",
        actor=actor,
        actor_label=actor_label,
        summary=(
            f"{operation.get_kind_display()}{amount}: {how}"
            f" ({result.http_status or 'no answer'}{replayed}, try {operation.tries})"
            + (f": {result.error_code}" if result.error_code else "")
            + closed
        ),
        data={
            "operation": operation.kind,
            "idempotency_key": operation.idempotency_key,
            "try": operation.tries,
            "outcome": result.outcome,
            "read": read,
            "http_status": result.http_status,
            "replayed": result.replayed,
            "error_code": result.error_code,
            "error": result.error[:300],
            "provider_object": result.object_id,
            "latency_ms": result.latency_ms,
            "closed": operation.state if closes is not None else None,
            "why": why,
        },
    )
