"""Telling whoever follows a booking live (the events process, open pages) that what its customer
is shown changed: published to Redis after commit, on the booking's channel and its customer's.

A publish is a hint, never the record: followers re-read the booking from the database on every
heartbeat and reconnect, so a publish lost to a Redis outage cannot leave a page wrong. That is
why a Redis error here is logged and swallowed instead of failing the committed change.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

import redis
from django.conf import settings
from django.db import transaction

from bookings.models import Booking
from bookings.states import CustomerMessage
from config.redis_client import redis_client, send_hint

logger = logging.getLogger(__name__)


def booking_channel(booking_id: UUID | str) -> str:
    return f"{settings.LIVE_CHANNEL_PREFIX}:booking:{booking_id}"


def customer_channel(customer_id: int | str) -> str:
    return f"{settings.LIVE_CHANNEL_PREFIX}:customer:{customer_id}"


def payload(booking: Booking) -> dict[str, Any]:
    """What a follower needs to show the change, and its number to drop stale or repeated ones."""
    return {
        "reference": booking.reference,
        "status": booking.customer_status,
        "message": CustomerMessage(booking.customer_message).label,
        "message_code": booking.customer_message,
        "status_version": booking.status_version,
    }


def publish_after_commit(booking: Booking) -> None:
    """Publish the booking's view as it is now (not as it may be at commit) once committed."""
    channels = (booking_channel(booking.pk), customer_channel(booking.customer_id))
    message = json.dumps(payload(booking))
    transaction.on_commit(lambda: _publish(channels, message, booking.reference))


def _publish(channels: tuple[str, ...], message: str, reference: str) -> None:
    try:
        pipe = redis_client().pipeline(transaction=False)
        for channel in channels:
            pipe.publish(channel, message)
        send_hint(pipe.execute)
    except redis.RedisError:
        logger.warning(
            "customer view not published; followers re-read it on their next heartbeat",
            exc_info=True,
            extra={"booking": reference},
        )
