"""The one declared port from the booking core to the partner side.

The core never imports the partner app: it asks this port, after commit, to queue work for a
booking, and asks it the one partner fact the customer's view depends on (whether anything may
still be held at the partner). `settings.BOOKINGS_PARTNER_PORT` names the implementation (the
partner app's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Protocol
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils.module_loading import import_string

from config.redis_client import send_hint

logger = logging.getLogger(__name__)


class PartnerPort(Protocol):
    """`partner_code` routes the work (one queue per partner) without another database read."""

    def queue_submission(self, booking_id: UUID, partner_code: str) -> None: ...

    def queue_cancellation(self, booking_id: UUID, partner_code: str) -> None: ...

    def may_hold(self, booking_id: UUID) -> bool:
        """Whether something can still be live at the partner for the booking: a create whose
        outcome is unknown, or a reservation live or being cancelled and not verified so."""
        ...


@cache
def _port() -> PartnerPort:
    return import_string(settings.BOOKINGS_PARTNER_PORT)()


def partner_may_hold(booking_id: UUID) -> bool:
    """Read in the caller's transaction: call it on a locked booking."""
    return _port().may_hold(booking_id)


def submit_on_commit(booking_id: UUID, partner_code: str) -> None:
    """Queue the partner submission once the booking row is committed (never before)."""
    _after_commit(lambda: _port().queue_submission(booking_id, partner_code), "submission", booking_id)


def cancel_on_commit(booking_id: UUID, partner_code: str) -> None:
    _after_commit(lambda: _port().queue_cancellation(booking_id, partner_code), "cancellation", booking_id)


def _after_commit(queue: Callable[[], None], work: str, booking_id: UUID) -> None:
    """Run `queue` after commit without letting it fail the request.

    Committed, the booking is safe: its row is due for the sweeper, which queues the work when
    the broker answers again. Raising here would tell the customer that a stored request failed,
    and waiting on a broker that does not answer would hold the answer (`send_hint`).
    """

    def queue_or_leave_to_sweeper() -> None:
        try:
            send_hint(queue)
        except Exception:  # the broker's errors are the partner side's; any of them leaves it due
            logger.warning(
                "booking %s not queued; the sweeper will queue it",
                work,
                exc_info=True,
                extra={"booking_id": str(booking_id)},
            )

    transaction.on_commit(queue_or_leave_to_sweeper)
