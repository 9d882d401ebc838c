"""Dramatiq actors of the payments app: thin, by id, each calling one service.

Expected provider failures are not exceptions: the services record them and say when to run
again. Dramatiq's retries cover only the unexpected (a database hiccup), bounded; the payment's
`next_check_at`, set before every call, makes the sweeper run it again if they run out.
"""

from __future__ import annotations

from uuid import UUID

import dramatiq
from django.conf import settings

from bookings import ports
from config.logging import log_context
from payments import messages
from payments.services.runs import payment_run_and_follow_up
from payments.services.webhooks import payment_event_process

ACTOR_OPTIONS = {
    "queue_name": messages.PAYMENTS_QUEUE,
    "max_retries": settings.PAYMENTS_ACTOR_MAX_RETRIES,
    "min_backoff": 1_000,
    "max_backoff": 60_000,
    # Longer than a run's few calls, each within its timeouts: only the last resort.
    "time_limit": settings.PAYMENTS_ACTOR_TIME_LIMIT_MS,
}


@dramatiq.actor(actor_name=messages.PAYMENT_RUN, **ACTOR_OPTIONS)
def run_payment(booking_id: str) -> None:
    with log_context(booking_id=booking_id, actor=messages.PAYMENT_RUN), ports.next_steps_inline():
        payment_run_and_follow_up(UUID(booking_id))


@dramatiq.actor(actor_name=messages.PROCESS_PAYMENT_EVENT, **ACTOR_OPTIONS)
def process_payment_event(event_id: int) -> None:
    with (
        log_context(payment_event_id=event_id, actor=messages.PROCESS_PAYMENT_EVENT),
        ports.next_steps_inline(),
    ):
        payment_event_process(int(event_id))
