"""An authorization the provider answers `processing` (its card's bank has not answered yet) is
not known: it was taken as declined (`not_authorized`), the booking refused, and the hold the bank
made a moment later was judged stale ("authorized after declined"): never voided, left on the card
until it lapsed while the customer was told nothing was taken. Now the operation stays open and
the payment `unknown`, read again until the bank has answered: a hold then accepts the booking,
or, when the booking ended meanwhile, is released. Played by hand against the real provider: the
sandbox's `pm_card_processing` answers `processing` and makes the hold later."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bookings.models import Booking
from bookings.states import BookingState
from payments.models import OperationKind, OperationState, PaymentOperation, PaymentStatus
from payments.services import runs
from tests.helpers import wait_until
from tests.payments.conftest import Paying, money_code, payment_of

S = BookingState
P = PaymentStatus
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def asked_while_processing(paying: Paying) -> Booking:
    """A booking paid with a card whose bank answers a second after the provider did."""
    paying.provider.set_faults(time_scale=30)  # the sandbox's 30 s of processing: one second
    booking = paying.book("pm_card_processing")
    follow_up = runs.payment_run(booking.pk)
    # The hold, made a second on, then lasts its 7 days: not a hold about to lapse (voided)
    paying.provider.set_faults(time_scale=1)

    # Not concluded: the authorization's operation stays open, the payment unknown, the booking
    # still awaiting its payment, the customer told we are asking the bank; read again later
    payment = payment_of(booking)
    assert (payment.status, payment.provider_status, payment.decline_code) == (P.UNKNOWN, "processing", "")
    [authorize] = PaymentOperation.objects.filter(payment=payment, kind=OperationKind.AUTHORIZE)
    assert (authorize.state, authorize.answer_lost) == (OperationState.OPEN, True)
    assert authorize.last_error == runs.AWAITING_BANK_WHY
    assert Booking.objects.get(pk=booking.pk).status == S.AWAITING_PAYMENT
    assert money_code(booking) == "authorizing"
    assert follow_up.run_after_s is not None and payment.next_check_at is not None
    return booking


def hold_made(paying: Paying, booking: Booking) -> None:
    wait_until(
        lambda: paying.intents(booking)[0]["status"] == "requires_capture",
        what="the bank's hold",
        timeout_s=15,
    )


def test_an_authorization_answered_processing_is_read_again_and_its_hold_accepts_the_booking(paying_idle):
    booking = asked_while_processing(paying_idle)

    # When the bank holds the money, and the payment is run again
    hold_made(paying_idle, booking)
    runs.payment_run(booking.pk)

    # Then the read found the hold: authorized, the booking sent to the partner, one intent
    payment = payment_of(booking)
    assert (payment.status, payment.provider_status) == (P.AUTHORIZED, "requires_capture")
    [authorize] = PaymentOperation.objects.filter(payment=payment, kind=OperationKind.AUTHORIZE)
    assert authorize.state == OperationState.SUCCEEDED
    assert Booking.objects.get(pk=booking.pk).status == S.REQUESTED
    assert len(paying_idle.intents(booking)) == 1


def test_a_hold_made_after_the_booking_ended_while_processing_is_released(paying_idle):
    booking = asked_while_processing(paying_idle)

    # When the booking ends before the bank answers (nothing owed), then the bank holds the money
    Booking.objects.filter(pk=booking.pk).update(status=S.CANCELLED)
    hold_made(paying_idle, booking)
    runs.payment_run(booking.pk)

    # Then the read found the hold and the run released it: nothing left on the card
    [intent] = paying_idle.intents(booking)
    assert (intent["status"], intent["amount_received"]) == ("canceled", 0)
    payment = payment_of(booking)
    assert (payment.status, payment.captured_amount, payment.next_check_at) == (
        P.VOIDED,
        Decimal("0.00"),
        None,
    )
    assert money_code(booking) == "released"
