"""A backlog on the notifications queue is not multiplied by the sweeps that run while it drains.

On the real Redis broker: a notification owed, its queue not served (its workers starved, as in
a chaos run on a busy machine), and sweep after sweep past NOTIFICATION_REQUEUE_AFTER_S. Before
the sweeper's copy was claimed until a worker takes it up, each sweep past the grace queued one
more copy (34,439 for 3,246 notifications in a 2,000-booking chaos run, the mail's median delay
214 s); then one copy beside the message queued after commit (QA: 301 mail messages for 221
mails owed). Now that message holds the same claim: the queue holds it alone, and the claim ends
when it is taken up.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from bookings import notifications
from bookings.models import Notification, NotificationKind, NotificationState
from bookings.states import BookingState
from config.claims import CLAIM_OPTION
from config.redis_client import redis_client
from reconciliation.services.sweeper import sweep
from tests.bookings.test_notifications import cancelling_booking, owe_mail, wait_for_state
from tests.factories import BookingFactory, NotificationFactory, PartnerFactory
from tests.helpers import unique_code, wait_until
from tests.reconciliation.conftest import queued

pytestmark = pytest.mark.integration

SWEEPS = 4


def messages_for(broker, notification: Notification) -> list:
    """The notification's messages waiting on its queue."""
    return [m for m in queued(broker, notifications.NOTIFICATIONS_QUEUE) if m.args[0] == notification.pk]


def copies(broker, notification: Notification) -> int:
    return len(messages_for(broker, notification))


def test_a_stalled_notifications_queue_holds_one_message_per_mail_however_many_sweeps(
    broker, partner_worker, mail_sink, settings
):
    # Given a notification owed, its message queued after commit, and nobody serving the queue
    settings.NOTIFICATION_REQUEUE_AFTER_S = 0  # owed "for a while" at every sweep
    booking = cancelling_booking()
    notification = owe_mail(booking)
    [message] = messages_for(broker, notification)
    claim = f"{broker.namespace}:reconciliation:queued:notification:{notification.pk}"
    assert message.options[CLAIM_OPTION][0] == claim  # it holds the claim the sweeper would take

    # When the sweeper runs again and again while it waits
    reports = [sweep(partner=booking.partner) for _ in range(SWEEPS)]

    # Then it queued no copy
    assert [r.notifications_requeued for r in reports] == [0, 0, 0, 0]
    assert copies(broker, notification) == 1
    assert redis_client().exists(claim) == 1

    # and once a worker takes the message up: one mail, the claim ended, nothing queued again
    partner_worker()
    wait_for_state(notification, NotificationState.SENT)
    wait_until(lambda: not redis_client().exists(claim), what="the claim to end")
    wait_until(lambda: copies(broker, notification) == 0, what="the message to be taken up")
    assert sweep(partner=booking.partner).notifications_requeued == 0
    assert [m["Subject"] for m in mail_sink.messages()] == [f"Your booking {booking.reference} is cancelled"]


def test_a_mail_waiting_for_its_booking_s_earlier_one_is_not_sent_again_by_the_sweeper(db, broker, settings):
    """Review: a mail waiting its turn (its booking's earlier mail still under way) looked lost to
    the sweeper once older than NOTIFICATION_REQUEUE_AFTER_S, and each sweep added a copy that
    polled beside it; when the earlier mail was done the copies raced for the row. It is owed by
    the sweeper only once the earlier one ended without sending it (its worker stopped)."""
    settings.NOTIFICATION_REQUEUE_AFTER_S = 0  # owed "for a while" at every sweep
    booking = BookingFactory(
        status=BookingState.CONFIRMED, offer__partner=PartnerFactory(code=unique_code("order"))
    )
    earlier = NotificationFactory(booking=booking, status_version=1)
    later = NotificationFactory(booking=booking, status_version=2, kind=NotificationKind.MONEY)
    broker.flush(notifications.NOTIFICATIONS_QUEUE)  # both messages lost: only the sweeper has them

    report = sweep(partner=booking.partner)

    assert report.notifications_requeued == 1
    assert copies(broker, earlier) == 1 and copies(broker, later) == 0
    # however long the earlier mail waits
    Notification.objects.filter(pk__in=[earlier.pk, later.pk]).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    assert sweep(partner=booking.partner).notifications_requeued == 0
    assert copies(broker, later) == 0
    # and once the earlier one is sent (its worker stopped before sending the later in its turn)
    Notification.objects.filter(pk=earlier.pk).update(state=NotificationState.SENT)
    assert sweep(partner=booking.partner).notifications_requeued == 1
    assert copies(broker, later) == 1
