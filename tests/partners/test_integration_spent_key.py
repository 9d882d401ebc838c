"""A booking whose one key already made a reservation the partner ended, against a real sandbox
partner and a real worker: no automatic path submits it again, where the partner would only hand
that dead reservation back (`Booking.partner_key` is derived from the row: there is no fresh key
to send) and the booking would sit in `submitting` until the sweeper failed it.

Support's retry of such a booking is refused (`checks.Situation.spent_key`,
test_integration_support_retry.py). Automation reaches the create by two doors only:
`submission._claim`, which takes a booking in `requested` alone, and the replay of
`sync._find_reservations` for a partner with keys but no lookup, whose answer `sync._conclude`
applies and reconciles in the same run. A booking gets back to `requested` only through a
complete search that found nothing (`sync._conclude`), which a partner that still knows the
key's reservation, dead or alive, never gives: its lookup by reference answers it. These tests
pin both: the paths a crash, the sweeper or a worker's give-up take leave the booking where the
partner's cancel put it, and a reservation ended while our create's outcome was unknown ends the
booking at the sync that reads it (by the lookup, or by the one replay that reads the key's
answer), never submitted again.
"""

from __future__ import annotations

import pytest

from bookings.models import Notification
from bookings.states import BookingState
from partners import messages
from partners.models import Capability, Operation, Outcome, PartnerAttempt
from partners.services.handover import hand_to_reconciliation
from reconciliation.services.sweeper import booking_due_run, sweep
from tests.helpers import wait_until
from tests.partners.conftest import (
    REFERENCE_CAPS,
    assert_at_rest,
    book,
    partner_status,
    status_of,
    timeline,
    transitions,
    wait_for_status,
)

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def creates(booking) -> list[str]:
    return list(
        PartnerAttempt.objects.filter(booking=booking, operation=Operation.CREATE)
        .order_by("started_at", "id")
        .values_list("outcome", flat=True)
    )


def test_no_automatic_path_sends_the_create_again_after_the_partner_cancelled_its_reservation(
    harness, partner_worker, broker
):
    # given a confirmed booking whose reservation the partner cancelled a second later
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
    sent, mails = creates(booking), Notification.objects.filter(booking=booking).count()

    # when its submission message is delivered again (a worker died before acknowledging it),
    # a sync runs, a worker gives up on it, and the sweeper goes round
    messages.send_for_booking(messages.SUBMIT_BOOKING, booking.pk)
    messages.send_for_booking(messages.SYNC_BOOKING, booking.pk)
    hand_to_reconciliation(str(booking.pk), actor_name=messages.SUBMIT_BOOKING, error="worker killed")
    sweep(partner=h.partner)
    booking_due_run(booking.pk)
    broker.join(h.partner.queue_name, timeout=20_000)

    # then the create was not sent again: the booking stays with support, the customer told once
    assert creates(booking) == sent == [Outcome.OK]
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_cancelled_confirmed")
    since = timeline(booking)[timeline(booking).index("booking.needs_attention") :]
    assert "sync.completed" in since and "worker.retries_exhausted" in since  # each path ran
    assert "booking.submitting" not in since
    assert Notification.objects.filter(booking=booking).count() == mails
    assert [partner_status(h, r) for r in h.truth(booking)] == ["cancelled"]


@pytest.mark.parametrize(
    ("capabilities", "sent"),
    [
        (REFERENCE_CAPS, [Outcome.AMBIGUOUS]),  # the lookup finds it: nothing is sent again
        # without a lookup the replay is how the key's answer is read: the same key, once
        ([Capability.IDEMPOTENCY_KEYS, Capability.WEBHOOKS], [Outcome.AMBIGUOUS, Outcome.OK]),
    ],
    ids=["lookup", "replay"],
)
def test_a_reservation_ended_while_our_create_was_unanswered_ends_the_booking_at_the_sync(
    harness, partner_worker, settings, capabilities, sent
):
    # given a partner that confirms, then cancels at once, while its answer to our create hangs
    # past our read timeout (its webhooks late): the booking's create outcome is unknown
    settings.PARTNER_SYNC_DELAY_S = 2.0
    h = harness("reference", capabilities=capabilities)
    h.faults(
        timeout_after_commit_rate=1,
        partner_cancel_rate=1,
        partner_cancel_delay_s=[0, 0],
        webhook_delay_s=[30, 30],
    )
    partner_worker(h.partner)
    booking = book(h)
    wait_until(lambda: creates(booking) == [Outcome.AMBIGUOUS], what="the create to time out")
    h.faults(timeout_after_commit_rate=0)  # a replay is answered

    # when the sync reads what the partner holds
    wait_for_status(booking, S.FAILED)

    # then the booking ended on the partner's cancel, at once, never submitted again
    assert creates(booking) == sent
    assert_at_rest(h, booking, S.FAILED)
    assert transitions(booking)[-2:] == [("submitting", "unknown"), ("unknown", "failed")]
    assert booking.events.get(to_state=S.FAILED).data["reason"] == "partner_cancelled"
    assert [partner_status(h, r) for r in h.truth(booking)] == ["cancelled"]
    assert list(Notification.objects.filter(booking=booking).values_list("kind", flat=True)) == [
        "not_confirmed"
    ]
