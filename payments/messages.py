"""Sending work to the payment actors (payments/tasks.py), by name, on the `payments` queue.

The services decide what must happen next and the actors call the services, so nothing but the
actors' module imports the actors: the booking core's port, the sweeper and the webhook receiver
send here. Payment work has a queue of its own, so it waits behind no partner's backlog.
"""

from __future__ import annotations

import logging
from uuid import UUID

import dramatiq
from django.db import transaction

from config import claims
from config.redis_client import send_hint

logger = logging.getLogger(__name__)

PAYMENT_RUN = "payment_run"
PROCESS_PAYMENT_EVENT = "process_payment_event"
PAYMENTS_QUEUE = "payments"


def _send(actor_name: str, *args: object, delay_s: float | None = None, options: dict | None = None) -> None:
    message = dramatiq.Message(
        queue_name=PAYMENTS_QUEUE, actor_name=actor_name, args=args, kwargs={}, options=dict(options or {})
    )
    dramatiq.get_broker().enqueue(message, delay=int(delay_s * 1000) if delay_s else None)


def run_claim(booking_id: UUID | str) -> str:
    """The claim a booking's payment run holds while its message waits (`config.claims`)."""
    return f"payment:{booking_id}"


def event_claim(event_id: int) -> str:
    return f"payment-event:{event_id}"


def send_run(booking_id: UUID | str, *, delay_s: float | None = None, options: dict | None = None) -> None:
    """Queue a run of the booking's payment (`payments.services.runs.payment_run`). It holds
    the run's claim until a worker takes it up, so the sweeper adds no copy while it waits; the
    sweeper's own copy passes the claim it took (`options`)."""
    if options is not None:
        _send(PAYMENT_RUN, str(booking_id), delay_s=delay_s, options=options)
        return
    claims.send_holding(
        run_claim(booking_id),
        lambda held: _send(PAYMENT_RUN, str(booking_id), delay_s=delay_s, options=held),
    )


def send_event(event_id: int, *, options: dict | None = None) -> None:
    """Queue a stored webhook delivery to be applied, holding its claim as `send_run` does."""
    if options is not None:
        _send(PROCESS_PAYMENT_EVENT, event_id, options=options)
        return
    claims.send_holding(
        event_claim(event_id), lambda held: _send(PROCESS_PAYMENT_EVENT, event_id, options=held)
    )


def send_event_on_commit(event_id: int) -> None:
    """Stored, the delivery is safe to acknowledge: if the broker does not take the message, the
    sweeper queues it once it is stale (RECONCILE_INBOUND_STALE_S)."""

    def send_or_leave_to_sweeper() -> None:
        try:
            send_hint(lambda: send_event(event_id))
        except Exception:  # the broker's errors, whichever: the row says it is due
            logger.warning(
                "payment webhook stored but not queued; the sweeper will queue it",
                exc_info=True,
                extra={"payment_event_id": event_id},
            )

    transaction.on_commit(send_or_leave_to_sweeper)
