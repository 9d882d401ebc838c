"""Notifications: a numbered change of what a customer is shown that they did not cause
themselves, owed to them by mail. `customer_view` writes the row (the outbox) in the change's own
transaction; sending it is the job of the hook below."""

from __future__ import annotations

from bookings.models import Notification


def queue_after_commit(notification: Notification) -> None:
    """Hand a notification written in the open transaction to its sender once that commits.

    The hook the sending side fills in (claim the row, send, mark it sent); until it exists the
    rows wait, unclaimed, for it and for the sweeper that re-queues unclaimed ones.
    """
