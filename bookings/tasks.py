"""Dramatiq actors of the booking core: thin, by id, each calling one service.

Messages reach them by name (`bookings.notifications.queue`), so the core's services never
import this module; `rundramatiq` finds it and consumes its queue with the others.
"""

from __future__ import annotations

import dramatiq
from django.conf import settings

from bookings.notifications import NOTIFICATIONS_QUEUE, SEND_NOTIFICATION, notification_send
from config.logging import log_context


@dramatiq.actor(
    actor_name=SEND_NOTIFICATION,
    queue_name=NOTIFICATIONS_QUEUE,
    # The row counts and paces the tries of a mail that was not accepted (Retry with its pause);
    # Dramatiq's own backoff covers only the unexpected, such as a database hiccup, bounded.
    max_retries=settings.NOTIFICATION_MAX_ATTEMPTS,
    min_backoff=1_000,
    max_backoff=60_000,
    # A few SMTP round trips of at most EMAIL_TIMEOUT each; NOTIFICATION_CLAIM_TIMEOUT_S is longer.
    time_limit=60_000,
)
def send_notification(notification_id: int) -> None:
    with log_context(notification_id=notification_id, actor=SEND_NOTIFICATION):
        retry_after_s = notification_send(notification_id=int(notification_id))
        if retry_after_s is not None:
            raise dramatiq.Retry(delay=int(retry_after_s * 1000))
