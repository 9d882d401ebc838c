"""A booking that had ended (cancelled, rejected, failed, expired) goes to support when the cancel
of a reservation the partner still holds of it fails every try (`compensation_failed`): the
customer is shown its end (`Booking.ended_with_support`), and its money follows that end as it
would without support (`payments.decisions.owed`): a cancelled booking's charge is refunded less
its fee, an unconfirmed end's hold is released, at once. Before, the money waited for support to
settle the stray: the customer was told "cancelled" or "did not go ahead" while their money was
held.

Through the production path: the real payment provider and partner sandboxes, the booking, the
partner's webhook, the compensation giving up and flagging, the payment run the flag queues taken
by a real worker.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.utils import timezone

from bookings.cancelling import money_words
from bookings.customer_money import money_shown
from bookings.customer_view import Awaited, awaited
from bookings.models import Actor, Booking
from bookings.services import booking_request_cancel
from bookings.states import BookingState
from partners.models import InboundEvent, PartnerReservation
from partners.services.compensation import booking_cancel_run, reservation_compensate
from partners.services.submission import submission_run
from partners.services.webhooks import inbound_event_process
from payments.messages import PAYMENT_RUN, PAYMENTS_QUEUE
from payments.models import Payment
from payments.services.runs import payment_run
from reconciliation.services.sweeper import booking_due_run
from tests.helpers import wait_until
from tests.payments.conftest import Paying, assert_money_at_rest, money_code, wait_for_money

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
# Free until 60 days before the start, then a quarter: a stay 40 days ahead costs 90.00 EUR to cancel.
POLICY = {"free_cancellation_hours": 60 * 24, "cancellation_fee_percent": Decimal("25")}
FEE = Decimal("90.00")


def status_of(booking: Booking) -> str:
    return Booking.objects.values_list("status", flat=True).get(pk=booking.pk)


def payment_runs_queued(p: Paying) -> list[str]:
    """The bookings whose payment run waits on the payments queue."""
    import json

    broker = p.h.broker
    messages = broker.client.hvals(f"{broker.namespace}:{PAYMENTS_QUEUE}.msgs")
    return [m["args"][0] for m in (json.loads(raw) for raw in messages) if m["actor_name"] == PAYMENT_RUN]


def drop_queued_payment_runs(p: Paying) -> None:
    """As if the runs queued so far had not been taken up yet (their messages still on the way):
    whatever runs next runs after what the test does next."""
    broker = p.h.broker
    broker.client.delete(*(f"{broker.namespace}:{PAYMENTS_QUEUE}{s}" for s in ("", ".msgs")))


def confirmed_and_charged(p: Paying) -> Booking:
    """A booking the customer paid for, confirmed by the partner and charged 360.00 EUR, each
    step run here as its worker would."""
    offer = p.h.partner.offers.get()
    type(offer).objects.filter(pk=offer.pk).update(**POLICY)
    booking = p.book()
    payment_run(booking.pk)  # the hold, then the booking goes to the partner
    submission_run(booking.pk)
    assert status_of(booking) == S.CONFIRMED
    payment_run(booking.pk)  # the capture
    assert Payment.objects.get(booking=booking).status == "captured"
    return booking


def cancelled(p: Paying, booking: Booking) -> Booking:
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    booking_cancel_run(booking.pk)
    [reservation] = PartnerReservation.objects.filter(booking=booking)
    reservation_compensate(reservation.pk)  # the partner cancels it, verified
    assert status_of(booking) == S.CANCELLED
    booking.refresh_from_db()
    assert booking.cancellation_fee == FEE
    return booking


def stray_flagged(p: Paying, booking: Booking, settings) -> PartnerReservation:
    """The partner makes a second reservation of the booking (as a retry's duplicate would), its
    webhook reaches us, and its cancel fails every try: support has the booking."""
    start = booking.start_date
    made = requests.post(
        f"{p.h.sandbox.base_url}/v1/reservations",
        json={
            "client_reference": booking.reference,
            "product_id": "hotel-42-dbl",
            "start_date": start.isoformat(),
            "end_date": (start + timedelta(days=3)).isoformat(),
            "guests": 2,
            "total_price": "360.00",
            "currency": "EUR",
        },
        headers=p.h.sandbox.auth,
        timeout=5,
    )
    made.raise_for_status()
    ref = made.json()["id"]

    def webhook() -> InboundEvent | None:
        events = InboundEvent.objects.filter(partner=p.h.partner)
        return next((e for e in events if ref in bytes(e.raw_body).decode()), None)

    inbound_event_process(wait_until(webhook, what="the stray's webhook").pk)
    stray = PartnerReservation.objects.get(
        booking=booking, compensation_requested_at__isnull=False, compensated_at__isnull=True
    )
    settings.PARTNER_COMPENSATION_MAX_TRIES = 1
    p.h.faults(rate_limit_rate=1)
    reservation_compensate(stray.pk)
    booking.refresh_from_db()
    assert (booking.status, booking.attention_from, booking.attention_reason) == (
        S.NEEDS_ATTENTION,
        S.CANCELLED,
        "compensation_failed",
    )
    return stray


REFUNDING = (
    "We charged 360.00 EUR to your card. We keep the cancellation fee of 90.00 EUR and are refunding "
    "the other 270.00 EUR to your card."
)
REFUNDED = (
    "We charged 360.00 EUR and refunded 270.00 EUR of it to your card: you paid 90.00 EUR. The "
    "90.00 EUR you paid is the cancellation fee we keep."
)


def told(booking: Booking) -> str:
    booking = Booking.objects.get(pk=booking.pk)
    return money_words(booking, money_shown(booking))


def test_a_cancelled_booking_whose_stray_goes_to_support_is_refunded_less_its_fee(paying_idle, settings):
    p = paying_idle
    booking = cancelled(p, confirmed_and_charged(p))
    # the refund's run is not taken up before the stray's cancel fails (its message still on the way)
    drop_queued_payment_runs(p)

    stray_flagged(p, booking, settings)

    # then the customer is still shown their cancelled booking, and told its refund is on its way
    booking.refresh_from_db()
    assert (booking.customer_status, booking.customer_message) == ("cancelled", "cancelled")
    assert told(booking).startswith(REFUNDING)
    assert awaited(booking) == Awaited.PAYMENT
    # and the move to support queues the booking's payment run, which refunds at once, less the fee
    assert payment_runs_queued(p) == [str(booking.pk)]
    p.start_worker()
    wait_for_money(booking, "partly_refunded", timeout_s=30)
    assert_money_at_rest(p, booking, owed=FEE, code="partly_refunded")
    assert status_of(booking) == S.NEEDS_ATTENTION  # support still has the stray
    assert told(booking).startswith(REFUNDED)
    assert awaited(Booking.objects.get(pk=booking.pk)) is None


def test_a_refund_made_before_the_stray_goes_to_support_is_not_made_again(paying_idle, settings):
    p = paying_idle
    booking = cancelled(p, confirmed_and_charged(p))
    payment_run(booking.pk)  # the cancel's run: the refund less the fee
    assert money_code(booking) == "partly_refunded"

    stray_flagged(p, booking, settings)
    p.start_worker()  # the flag's run, and the cancel's queued before it

    wait_until(lambda: not payment_runs_queued(p), what="the queued payment runs to be taken")
    wait_for_money(booking, "partly_refunded", timeout_s=30)
    assert_money_at_rest(p, booking, owed=FEE, code="partly_refunded")  # one refund, by its key
    [intent] = p.intents(booking)
    assert len(p.provider.refunds(intent["id"])) == 1
    assert told(booking).startswith(REFUNDED)


def test_an_expired_booking_whose_reservation_goes_to_support_has_its_hold_released(paying_idle, settings):
    p = paying_idle
    # given a booking paid for (held) that the partner keeps pending past our deadline
    p.h.faults(async_confirm_delay_s=60)
    booking = p.book()
    payment_run(booking.pk)
    submission_run(booking.pk)
    assert status_of(booking) == S.PENDING_PARTNER
    Booking.objects.filter(pk=booking.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    booking_due_run(booking.pk)  # the sweeper's step: expired, its reservation's cancel asked
    assert status_of(booking) == S.EXPIRED
    drop_queued_payment_runs(p)  # the expiry's run not taken up yet

    # when the partner refuses the reservation's cancel through every try: support has it
    settings.PARTNER_COMPENSATION_MAX_TRIES = 1
    p.h.faults(rate_limit_rate=1)
    [reservation] = PartnerReservation.objects.filter(booking=booking)
    reservation_compensate(reservation.pk)
    booking.refresh_from_db()
    assert (booking.status, booking.attention_from) == (S.NEEDS_ATTENTION, S.EXPIRED)

    # then the hold is released at once, not when it is about to lapse, and the customer told so
    assert payment_runs_queued(p) == [str(booking.pk)]
    assert (booking.customer_status, booking.customer_message) == ("pending", "releasing")
    assert told(booking).endswith("we are releasing the hold: you will not be charged.")
    p.start_worker()
    wait_for_money(booking, "released", timeout_s=30)
    assert_money_at_rest(p, booking, owed=Decimal("0.00"), code="released")
    assert status_of(booking) == S.NEEDS_ATTENTION
    assert told(booking) == "We released the 360.00 EUR we were holding on your card: you were not charged."


def test_the_payments_of_ended_bookings_already_with_support_are_due_again_after_the_migration(db):
    """Left at rest by the rule before (undecided), they would wait for support; due, the sweeper
    runs them. Only those: support's other cases still wait for support."""
    import importlib

    from django.apps import apps

    from tests.reconciliation.paying import paying_booking

    def with_support(attention_from: str, payment_status: str = "captured") -> Payment:
        return paying_booking(
            status=S.NEEDS_ATTENTION,
            payment_status=payment_status,
            booking_fields={"attention_from": attention_from, "attention_reason": "compensation_failed"},
            next_check_at=None,
        )

    ended = [with_support(S.CANCELLED), with_support(S.EXPIRED, "authorized")]
    waiting = [with_support(S.PENDING_PARTNER), with_support(S.CANCELLED, "voided")]
    migration = importlib.import_module("payments.migrations.0012_ended_with_support_due_again")

    migration.ended_with_support_due_again(apps, None)

    assert all(Payment.objects.get(pk=p.pk).next_check_at is not None for p in ended)
    assert all(Payment.objects.get(pk=p.pk).next_check_at is None for p in waiting)
