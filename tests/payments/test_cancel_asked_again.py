"""A fee fixed by a cancel that did not complete (the partner would not cancel: support has the
booking, `disrupted`) is the fee of the cancel asked again (support's, on the customer's behalf:
the customer's own, asked again, is the same cancel and changes nothing): the customer agreed to it
when they first asked, after the cut-off, and the payment side keeps it once cancelled
(`payments.decisions.owed`). The cancel page and the API's `if_cancelled` said "Cancelling is free
while there is a problem with your confirmed booking" and a full refund, and then 90.00 EUR
was kept (review F1). A booking that leaves the cancel's road (confirmed again) drops the fee, so
a later end the partner caused owes nothing, as it is told.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from bookings.models import Actor, Booking, Notification, NotificationKind
from bookings.services import apply_transition, booking_request_cancel, lock_booking
from bookings.states import BookingState
from partners.models import PartnerReservation
from payments.decisions import Step
from payments.models import Payment
from payments.services.runs import plan_for
from reconciliation.services import support
from tests.helpers import wait_until
from tests.mail import telling
from tests.partners.conftest import wait_for_status
from tests.payments.conftest import assert_money_at_rest, wait_for_money
from tests.reconciliation.paying import PRICE, paying_booking

S = BookingState
# Free until 60 days before the start, then a quarter: a stay 40 days ahead costs 90.00 EUR to cancel.
POLICY = {"free_cancellation_hours": 60 * 24, "cancellation_fee_percent": Decimal("25")}


def moved(booking: Booking, transition: str, **kwargs) -> Booking:
    with transaction.atomic():
        locked = lock_booking(booking.pk)
        apply_transition(locked, transition, actor=Actor.SUPPORT, actor_label="ops", **kwargs)
    return Booking.objects.get(pk=booking.pk)


def owed_plan(booking: Booking):
    return plan_for(booking, Payment.objects.get(booking=booking), open_operation=False)


def test_a_fee_left_by_a_cancel_goes_when_the_booking_is_confirmed_again(db):
    """The review's second path: a stale fee survived a return to `confirmed`; the partner then took
    the booking back (told "refunded in full whether or not you cancel") and support resolved it
    cancelled (which clears `attention_reason`): the payment side read the old fee and kept 90.00."""
    payment = paying_booking(status=S.CONFIRMED)
    start = timezone.now().date() + timedelta(days=40)  # past the 60-day cut-off: 90.00 EUR
    Booking.objects.filter(pk=payment.booking_id).update(
        **POLICY, start_date=start, end_date=start + timedelta(days=3), confirmed_shown_at=timezone.now()
    )
    booking = booking_request_cancel(booking_id=payment.booking_id, actor=Actor.CUSTOMER)
    assert booking.cancellation_fee == Decimal("90.00")
    booking = moved(booking, "flag_for_attention", reason="compensation_failed")

    booking = moved(booking, "confirm")  # support: the stay goes ahead after all
    assert booking.cancellation_fee is None  # stored, not only on the instance
    booking = moved(booking, "flag_for_attention", reason="partner_cancelled_confirmed")
    assert owed_plan(booking).amount == PRICE  # as told: all of it back, whether or not cancelled
    booking = moved(booking, "mark_cancelled")  # support: resolved cancelled

    plan = owed_plan(booking)
    assert (plan.step, plan.amount) == (Step.REFUND, PRICE)


# --- with the real provider, partner, worker and SMTP sink ---------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_cancel_support_asks_again_after_the_partner_would_not_cancel_keeps_the_fee_it_is_told(
    paying, settings, customer, api_client, request
):
    sink = request.getfixturevalue("mail_sink")
    # given a confirmed booking charged 360.00 EUR, whose free cancellation ended (a fee of 90.00)
    offer = paying.h.partner.offers.get()
    type(offer).objects.filter(pk=offer.pk).update(**POLICY)
    booking = paying.book(customer=customer)
    wait_for_status(booking, S.CONFIRMED)
    wait_for_money(booking, "charged")
    # and a partner that refuses every call (429) past our tries
    settings.PARTNER_COMPENSATION_MAX_TRIES = 2
    paying.h.faults(rate_limit_rate=1)

    # when the customer cancels, and the partner will not: support has it, the customer is told
    # of a problem at the partner
    assert api_client.post(f"/api/v1/bookings/{booking.reference}/cancel").status_code == 202
    wait_for_status(booking, S.NEEDS_ATTENTION, timeout_s=30)
    booking.refresh_from_db()
    assert (booking.attention_reason, booking.customer_status, booking.customer_message) == (
        "compensation_failed",
        "disrupted",
        "disrupted_cancel_not_done",
    )
    assert booking.cancellation_fee == Decimal("90.00")

    # then the customer is not offered the cancel again: it is the same cancel, with support
    answer = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (answer["links"]["cancel"], answer["if_cancelled"]) == (None, None)
    version = answer["status_version"]
    [reservation] = PartnerReservation.objects.filter(booking=booking)
    asked = reservation.attempts.count()
    assert api_client.post(f"/api/v1/bookings/{booking.reference}/cancel").status_code == 202
    booking.refresh_from_db()
    assert (booking.status, booking.status_version) == (S.NEEDS_ATTENTION, version)

    # and support's cancel on the customer's behalf is previewed as what the payment side will
    # do: the fee the first cancel fixed kept, the rest refunded (not "free while there is a
    # problem", not in full)
    cut_off = datetime.combine(booking.start_date, time.min, tzinfo=UTC) - timedelta(days=60)
    why = (
        f"You first asked to cancel after free cancellation ended on {cut_off.day} {cut_off:%b %Y}, "
        "00:00 UTC (1440 hours before the start): the fee of 25% of the price, 90.00 EUR, was fixed "
        "then and stands."
    )
    keeps = (
        "Once the cancellation is done, we keep the cancellation fee of 90.00 EUR and refund the "
        "other 270.00 EUR of the 360.00 EUR you paid to your card."
    )
    told = support.preview(support.CANCEL, booking, live=False).money_dict()
    assert (told["outcome"], told["fee"], told["refund"], told["text"], told["why"]) == (
        "refund_less_fee",
        "90.00",
        "270.00",
        keeps,
        why,
    )

    # when the partner answers again and support cancels on the customer's behalf, with fresh
    # tries of its own, the partner cancels it at last
    paying.h.faults(rate_limit_rate=0)
    before = set(Notification.objects.filter(booking=booking).values_list("pk", flat=True))
    support.support_action_run(
        support.CANCEL,
        booking_id=booking.pk,
        operator=support.Operator(label="ops"),
        token=support.new_token(),
        note="the partner answers again",
    )

    # then what was told is what was done: 90.00 kept, 270.00 refunded, and the mails say the same
    wait_for_status(booking, S.CANCELLED, timeout_s=30)
    assert reservation.attempts.count() > asked  # support's cancel asked the partner again
    wait_for_money(booking, "partly_refunded", timeout_s=30)
    assert_money_at_rest(paying, booking, owed=Decimal("90.00"), code="partly_refunded")
    [intent] = paying.intents(booking)
    assert [r["amount"] for r in paying.provider.refunds(intent["id"])] == [27_000]
    after = Notification.objects.filter(booking=booking).exclude(pk__in=before).order_by("status_version")
    assert list(after.values_list("kind", flat=True)) == [NotificationKind.CANCELLED, NotificationKind.MONEY]
    # the cancel's mail says the fee kept: with the refund, when that came within its settle (its
    # own mail included), else as being made, the refund's mail following
    refunded = "The 90.00 EUR you paid is the cancellation fee we keep."
    kept = "We keep the cancellation fee of 90.00 EUR and are refunding the other 270.00 EUR to your card."
    [mail] = wait_until(lambda: telling(sink, after.last()), what="the mail that tells the refund")
    assert refunded in " ".join(mail.get_body(("plain",)).get_content().split())
    [cancelled] = telling(sink, after.first())
    assert cancelled["Subject"] == f"Your booking {booking.reference} is cancelled"
    plain = " ".join(cancelled.get_body(("plain",)).get_content().split())
    assert (refunded if mail["Message-ID"] == cancelled["Message-ID"] else kept) in plain
