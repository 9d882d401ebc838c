"""Dramatiq middleware: when an actor's retries run out, the database, not a dead-letter queue
that expires, keeps the work due."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)

BOOKING_ACTORS = {"submit_booking", "sync_booking", "cancel_booking"}


class RetriesExhausted(Middleware):
    def after_process_message(self, broker: dramatiq.Broker, message, *, result=None, exception=None) -> None:
        if exception is None or not message.failed:
            return
        from partners.services.handover import hand_to_reconciliation

        logger.error(
            "actor retries exhausted",
            extra={
                "actor": message.actor_name,
                "message_id": message.message_id,
                "error": repr(exception),
            },
        )
        if message.actor_name in BOOKING_ACTORS and message.args:
            hand_to_reconciliation(str(message.args[0]), actor_name=message.actor_name, error=repr(exception))
