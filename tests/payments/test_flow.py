"""The money follows the booking, end to end: a real payment provider (signed webhooks into our
live server), a real sandbox partner, a real Dramatiq worker on Redis. After each the money is
at rest as the booking's final state owes, by the provider's own ground truth
(`assert_money_at_rest`): one authorization at most, none left held, captured - refunded = owed,
no refund twice, never captured before the partner confirmed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import dramatiq
import pytest
from django.utils import timezone

from bookings.services import booking_request_cancel
from bookings.states import BookingState
from payments.models import EventState, PaymentEvent, PaymentStatus
from payments.services import runs
from reconciliation.services.sweeper import booking_due_run
from tests.helpers import wait_until
from tests.partners.conftest import status_of, wait_for_status
from tests.payments.conftest import assert_money_at_rest, kinds, payment_of, wait_for_money

S = BookingState
P = PaymentStatus
pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
PRICE = Decimal("360.00")  # 3 nights at 120.00 EUR


def test_a_paying_booking_is_held_before_the_partner_is_asked_and_charged_once_it_confirms(paying):
    booking = paying.book("pm_card_visa")

    assert (booking.status, booking.customer_status, booking.customer_message) == (
        S.AWAITING_PAYMENT,
        "pending",
        "checking_payment",
    )
    assert booking.customer_money["code"] == "authorizing"
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")

    assert_money_at_rest(paying, booking, owed=PRICE, code="charged")
    timeline = kinds(booking)
    # the hold came first; the partner was asked only after it
    assert (
        timeline.index("payment.authorized")
        < timeline.index("booking.requested")
        < timeline.index("booking.submitting")
    )
    payment = payment_of(booking)
    assert (payment.status, payment.card_brand, payment.card_last4) == (P.CAPTURED, "visa", "4242")
    # one operation each (a slow answer may be asked again under the same key: the provider's
    # ground truth above shows one charge either way)
    assert list(payment.operations.values_list("kind", "state")) == [
        ("authorize", "succeeded"),
        ("capture", "succeeded"),
    ]
    assert booking.customer_money == {
        "code": "charged",
        "currency": "EUR",
        "amount": "360.00",
        "charged": "360.00",
        "refunded": "0.00",
    }


class _Processed(dramatiq.Middleware):
    """Every message a worker on the broker has processed: (actor, args)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, tuple]] = []

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        self.messages.append((message.actor_name, tuple(message.args)))


@pytest.fixture
def processed(broker) -> Iterator[_Processed]:
    recorder = _Processed()
    broker.add_middleware(recorder)
    yield recorder
    broker.middleware[:] = [m for m in broker.middleware if m is not recorder]


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "as-messages"])
def test_a_paying_booking_is_held_sent_and_charged_in_the_one_message_that_held_it(
    inline, processed, paying, settings
):
    """Each next step (the submission once the money is held, the capture once the partner
    confirms) runs in the worker thread whose commit made it due, not as a message of its own;
    with `BOOKINGS_NEXT_STEPS_INLINE` off, each is a message, and the money ends the same."""
    settings.BOOKINGS_NEXT_STEPS_INLINE = inline
    booking = paying.book("pm_card_visa")

    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")

    assert_money_at_rest(paying, booking, owed=PRICE, code="charged")
    expected = ["payment_run"] if inline else ["payment_run", "submit_booking", "payment_run"]

    def mine() -> list[str]:  # the worker counts a message once its actor has returned
        return [actor for actor, args in processed.messages if str(booking.pk) in args]

    wait_until(lambda: mine() == expected, timeout_s=5, what=f"messages {expected} (now {mine()})")
    time.sleep(0.5)  # and no other comes after them
    assert mine() == expected
    # and the provider's webhooks, each the echo of one of our calls, were known without a
    # message of their own: at receipt, or by the record of the call they echo
    events = PaymentEvent.objects.filter(payment__booking=booking).exclude(state=EventState.IGNORED)
    assert sorted(events.values_list("type", "state")) == [
        ("payment_intent.amount_capturable_updated", EventState.KNOWN),
        ("payment_intent.succeeded", EventState.KNOWN),
    ]
    assert [actor for actor, _ in processed.messages if actor == "process_payment_event"] == []


@pytest.mark.parametrize(
    ("method", "code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
def test_a_declined_card_fails_the_booking_and_the_partner_never_hears_of_it(paying, method, code):
    booking = paying.book(method)

    wait_for_status(booking, S.FAILED)
    wait_for_money(booking, "declined")

    booking.refresh_from_db()
    assert (booking.customer_status, booking.customer_message) == ("failed", "payment_declined")
    assert paying.h.truth(booking) == []  # nothing at the partner
    assert booking.submission_count == 0
    assert payment_of(booking).decline_code == code
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="declined")
    failed = booking.events.get(kind="booking.failed")
    assert failed.data["reason"] == "payment_declined"


def test_a_booking_the_partner_rejects_has_its_hold_released(paying):
    paying.h.faults(reject_rate=1)
    booking = paying.book()

    wait_for_status(booking, S.REJECTED)
    wait_for_money(booking, "released")

    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="released")
    [intent] = paying.intents(booking)
    assert (intent["status"], intent["cancellation_reason"]) == ("canceled", "abandoned")
    assert payment_of(booking).status == P.VOIDED


def test_a_booking_that_expires_while_held_has_its_hold_released(paying):
    paying.h.faults(async_confirm_delay_s=30)  # the partner keeps it pending past our deadline
    booking = paying.book()
    wait_for_status(booking, S.PENDING_PARTNER)
    assert payment_of(booking).status == P.AUTHORIZED

    type(booking).objects.filter(pk=booking.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    booking_due_run(booking.pk)  # the sweeper's step for a due booking

    assert status_of(booking) == S.EXPIRED
    wait_for_money(booking, "released")
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="released")


def test_a_booking_cancelled_while_awaiting_its_payment_is_released_not_charged(paying):
    paying.h.faults(async_confirm_delay_s=30)
    booking = paying.book()
    wait_until(lambda: payment_of(booking).status == P.AUTHORIZED, what="the hold")

    booking_request_cancel(booking_id=booking.pk, actor="customer")

    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "released")
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="released")
    assert type(booking).objects.get(pk=booking.pk).cancellation_fee is None  # never confirmed: free


def test_a_booking_cancelled_before_its_card_was_asked_says_not_charged_at_once(
    paying_idle, api_client, customer
):
    """Tester's report (F16): cancelled while its payment run was queued and not run (a broker
    outage; ~1 s otherwise), the booking kept saying "We are asking your bank to hold 360.00 EUR"
    until a worker abandoned the payment, though no hold would ever be asked."""
    booking = paying_idle.book(customer=customer)  # its payment run is queued; no worker runs it
    assert (payment_of(booking).status, payment_of(booking).operations.count()) == (P.PENDING, 0)

    answer = api_client.post(f"/api/v1/bookings/{booking.reference}/cancel")

    # the cancel's own answer, and the booking read after it, say nothing will be asked
    assert answer.status_code in (200, 202), answer.content
    shown = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (shown["status"], shown["money"]["code"]) == ("cancelling", "not_charged")
    assert shown["money"]["message"] == "You were not charged."
    assert answer.json()["money"]["code"] == "not_charged"
    payment = payment_of(booking)
    assert (payment.status, payment.next_check_at, payment.operations.count()) == (P.ABANDONED, None, 0)
    assert kinds(booking)[-2:] == ["payment.abandoned", "booking.cancel_requested"]
    assert type(booking).objects.get(pk=booking.pk).status_version == 2  # one numbered change

    # a later run (the queued one) asks nothing and changes nothing; the cancel completes
    assert runs.payment_run(booking.pk) == runs.FollowUp()
    paying_idle.start_worker()
    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "not_charged")
    assert paying_idle.intents(booking) == []  # the provider was never asked
    assert payment_of(booking).operations.count() == 0
    assert kinds(booking).count("payment.abandoned") == 1
    assert_money_at_rest(paying_idle, booking, owed=Decimal("0.00"), code="not_charged")


def _confirmed_and_charged(paying, **policy):
    offer = paying.h.partner.offers.get()
    type(offer).objects.filter(pk=offer.pk).update(**policy)
    booking = paying.book()
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    return booking


def test_a_confirmed_booking_cancelled_after_the_cut_off_keeps_the_fee_and_refunds_the_rest(paying):
    # the stay starts in 40 days; free cancellation ends 60 days before it: a quarter is kept
    booking = _confirmed_and_charged(paying, free_cancellation_hours=60 * 24, cancellation_fee_percent=25)

    booking_request_cancel(booking_id=booking.pk, actor="customer")

    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "partly_refunded")
    booking.refresh_from_db()
    assert booking.cancellation_fee == Decimal("90.00")
    assert_money_at_rest(paying, booking, owed=Decimal("90.00"), code="partly_refunded")
    [intent] = paying.intents(booking)
    [refund] = paying.provider.refunds(intent["id"])
    assert refund["amount"] == 27_000
    assert booking.customer_money["charged"] == "360.00" and booking.customer_money["refunded"] == "270.00"


def test_a_confirmed_booking_cancelled_before_the_cut_off_is_refunded_in_full(paying):
    booking = _confirmed_and_charged(paying, free_cancellation_hours=24, cancellation_fee_percent=25)

    booking_request_cancel(booking_id=booking.pk, actor="customer")

    wait_for_status(booking, S.CANCELLED)
    wait_for_money(booking, "refunded")
    assert type(booking).objects.get(pk=booking.pk).cancellation_fee == Decimal("0.00")
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="refunded")


def test_a_confirmed_booking_the_partner_cancels_is_refunded_in_full_automatically(paying):
    paying.h.faults(partner_cancel_rate=1, partner_cancel_delay_s=[1, 1])
    booking = _confirmed_and_charged(paying, free_cancellation_hours=60 * 24, cancellation_fee_percent=50)

    wait_for_status(booking, S.NEEDS_ATTENTION)
    wait_for_money(booking, "refunded")

    booking.refresh_from_db()
    assert (booking.attention_reason, booking.customer_status) == ("partner_cancelled_confirmed", "disrupted")
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="refunded")
