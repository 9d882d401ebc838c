"""The one declared port from the booking core to the partner side.

The core never imports the partner app: it asks this port, after commit, to queue work for a
booking. `settings.BOOKINGS_PARTNER_PORT` names the implementation (the partner app's).
"""

from __future__ import annotations

from functools import cache
from typing import Protocol
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string


class PartnerPort(Protocol):
    """`partner_code` routes the work (one queue per partner) without another database read."""

    def queue_submission(self, booking_id: UUID, partner_code: str) -> None: ...

    def queue_cancellation(self, booking_id: UUID, partner_code: str) -> None: ...


@cache
def _port() -> PartnerPort:
    return import_string(settings.BOOKINGS_PARTNER_PORT)()


def submit_on_commit(booking_id: UUID, partner_code: str) -> None:
    """Queue the partner submission once the booking row is committed (never before)."""
    transaction.on_commit(lambda: _port().queue_submission(booking_id, partner_code))


def cancel_on_commit(booking_id: UUID, partner_code: str) -> None:
    transaction.on_commit(lambda: _port().queue_cancellation(booking_id, partner_code))
