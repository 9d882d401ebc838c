"""Support's retry against a real sandbox partner: a retry is one more create with the booking's
own key (`Booking.partner_key`, derived from its row: there is no other), so it is refused where
the partner would only hand back the reservation that key already made and then cancelled.

Tester's report (F14): after the partner cancelled a confirmed reservation, "Retry the
submission" re-sent the create under the same key; the partner answered with the old cancelled
reservation (ignored as a duplicate), the booking sat in `submitting` until the sweeper failed
it, and the customer got two more mails. The preview also listed its one effect twice.
"""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from bookings.models import Notification
from bookings.states import BookingState
from partners.models import Operation, PartnerAttempt
from reconciliation.services import support
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.partners.conftest import book, status_of

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_a_retry_after_the_partner_cancelled_the_keys_reservation_is_refused(harness, partner_worker, groups):
    # given a partner that cancels every confirmed reservation on its own, a second later
    h = harness("reference")
    h.faults(partner_cancel_rate=1, partner_cancel_delay_s=[1, 1])
    partner_worker(h.partner)
    booking = book(h)
    wait_until(
        lambda: status_of(booking) == S.NEEDS_ATTENTION,
        what="the partner's cancel to reach support",
        timeout_s=30,
    )
    booking.refresh_from_db()
    assert booking.attention_reason == "partner_cancelled_confirmed"
    ops = UserFactory(username="ops-f14", is_staff=True)
    ops.groups.set([groups["ops"]])
    creates = PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE).count()
    mails = Notification.objects.filter(booking=booking).count()

    # when support previews the retry, then runs it as the command does
    shown = support.preview("retry", booking)
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("retry_booking", booking.reference, "--yes", "--as", ops.username, stdout=out)

    # then it is refused, saying why and what to do instead, and nothing reaches the partner
    assert not shown.allowed
    assert booking.partner_key in shown.refusal and "cancelled" in shown.refusal
    assert "Cancel" in shown.refusal and "resolve" in shown.refusal
    assert "Not possible now" in out.getvalue()
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_cancelled_confirmed")
    assert not booking.events.filter(kind__startswith="support.").exists()
    assert PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE).count() == creates
    assert len(h.truth(booking)) == 1
    assert Notification.objects.filter(booking=booking).count() == mails
