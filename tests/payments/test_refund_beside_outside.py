"""A refund of ours made beside one made at the provider outside our keys (its dashboard, known
to us by its `charge.refunded`): the refunded total counts both. It counted only our own
operations' sum, and only where that was larger than the total, so with 100.00 refunded in the
dashboard our 60.00 went uncounted; when the read of the intent after it failed, the run decided
again on that total and refunded 60.00 again under a new key, up to four times in one run. Now a
refund adds to the total it was opened beside, and a run whose read after a refund fails ends
there, to be run again, rather than deciding on totals not read. Played by hand against the real
provider: its charge.refunded deliveries are stored by the live server and applied here."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from payments import connector
from payments.models import EventState, OperationKind, OperationState, PaymentEvent, PaymentStatus
from payments.services import runs
from payments.services.webhooks import payment_event_process
from tests.helpers import wait_until
from tests.payments.conftest import Paying, payment_of

S = BookingState
P = PaymentStatus
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
OUTSIDE = Decimal("100.00")
FEE = Decimal("200.00")  # of 360.00 captured: 260.00 paid after the outside refund, 60.00 owed back


def refunds_told(booking: Booking) -> list[PaymentEvent]:
    return list(PaymentEvent.objects.filter(payment__booking=booking, type="charge.refunded").order_by("id"))


def apply_next_refund_delivery(booking: Booking, *, seen: int) -> None:
    """Wait for the provider's next `charge.refunded` of the booking's payment, and apply it
    (the worker's job, done here at a known moment: whether or not the receiver held it)."""
    events = wait_until(
        lambda: (found := refunds_told(booking)) and len(found) > seen and found,
        what="the provider's charge.refunded",
    )
    payment_event_process(events[seen].pk)
    assert PaymentEvent.objects.get(pk=events[seen].pk).state in (EventState.PROCESSED, EventState.KNOWN)


def captured_then_refunded_outside(paying: Paying) -> Booking:
    """A confirmed booking's 360.00 captured, 100.00 of it refunded in the provider's dashboard
    (and read), then cancelled with a fee of 200.00: 60.00 owed back."""
    booking = paying.book()
    runs.payment_run(booking.pk)
    assert payment_of(booking).status == P.AUTHORIZED
    Booking.objects.filter(pk=booking.pk).update(status=S.CONFIRMED, confirmed_shown_at=timezone.now())
    runs.payment_run(booking.pk)
    payment = payment_of(booking)
    assert (payment.status, payment.captured_amount) == (P.CAPTURED, Decimal("360.00"))
    outside = connector.refund(
        payment.provider_intent_id, amount=OUTSIDE, currency="EUR", key=f"dashboard-{uuid.uuid4()}"
    )
    assert outside.outcome == "ok", outside
    apply_next_refund_delivery(booking, seen=0)
    assert payment_of(booking).refunded_amount == OUTSIDE
    Booking.objects.filter(pk=booking.pk).update(status=S.CANCELLED, cancellation_fee=FEE)
    return booking


def our_refunds(paying: Paying, booking: Booking) -> list[int]:
    payment = payment_of(booking)
    return [
        r["amount"]
        for r in paying.provider.refunds(payment.provider_intent_id)
        if r["metadata"].get("operation", "").startswith(f"{payment.pk}:refund:")
    ]


def test_a_refund_beside_one_made_outside_is_counted_and_not_made_again_when_the_read_fails(
    paying_idle, monkeypatch
):
    # Given a payment 100.00 of which was refunded outside our keys, and 60.00 owed back
    booking = captured_then_refunded_outside(paying_idle)

    # When the run refunds the 60.00 and every read of the intent after it fails (a 5xx)
    real_retrieve = connector.retrieve

    def failing_retrieve(intent_id: str, *, currency: str):
        paying_idle.provider.set_faults(error_5xx_rate=1)
        try:
            return real_retrieve(intent_id, currency=currency)
        finally:
            paying_idle.provider.set_faults(error_5xx_rate=0)

    monkeypatch.setattr(connector, "retrieve", failing_retrieve)
    follow_up = runs.payment_run(booking.pk)

    # Then the 60.00 was refunded once, and counted beside the 100.00 refunded outside
    assert our_refunds(paying_idle, booking) == [6000]
    payment = payment_of(booking)
    assert payment.refunded_amount == OUTSIDE + Decimal("60.00")
    # and the run ended there, to be run again (the provider's totals not read)
    assert follow_up.run_after_s is not None

    # and run again, with the provider answering, nothing more is refunded: the money is at rest
    monkeypatch.setattr(connector, "retrieve", real_retrieve)
    assert runs.payment_run(booking.pk) == runs.FollowUp()
    assert our_refunds(paying_idle, booking) == [6000]
    payment = payment_of(booking)
    assert (payment.captured_amount - payment.refunded_amount, payment.next_check_at) == (FEE, None)


def test_a_refund_whose_total_came_while_its_answer_was_out_is_not_counted_twice(paying_idle):
    # Given a payment 100.00 of which was refunded outside our keys, and 60.00 owed back
    booking = captured_then_refunded_outside(paying_idle)

    # When our refund's answer is lost after the provider made it (the call times out), and the
    # provider's charge.refunded, whose total counts it, is applied while it is still open
    paying_idle.provider.set_faults(timeout_after_commit_rate=1)
    runs.payment_run(booking.pk)
    paying_idle.provider.set_faults(timeout_after_commit_rate=0)
    [refund] = payment_of(booking).operations.filter(kind=OperationKind.REFUND)
    assert refund.state == OperationState.OPEN
    apply_next_refund_delivery(booking, seen=1)
    assert payment_of(booking).refunded_amount == OUTSIDE + Decimal("60.00")

    # and the next run asks again under its key, and the provider answers it
    runs.payment_run(booking.pk)

    # Then the refund is counted once: 160.00 refunded in all, as the provider holds it
    refund.refresh_from_db()
    assert refund.state == OperationState.SUCCEEDED
    assert our_refunds(paying_idle, booking) == [6000]
    payment = payment_of(booking)
    assert payment.refunded_amount == OUTSIDE + Decimal("60.00")
    assert (payment.captured_amount - payment.refunded_amount, payment.next_check_at) == (FEE, None)
