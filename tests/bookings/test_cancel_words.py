"""A cancel is told by what the partner was ever asked: a booking cancelled before it was sent
(a paying one still awaiting its payment) never says the partner is cancelling it or confirmed
the cancellation, in the API, on its page or in the mail; and a cancel that did not complete is
still told as asked, not done, with its hold (docs/design.md, "The honest-status contract")."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction
from django.test import Client

from bookings.customer_money import PaymentFacts, money_of
from bookings.customer_view import Facts, View, derive
from bookings.models import Actor, Booking, Notification, NotificationKind
from bookings.notifications import compose
from bookings.services import apply_transition, booking_request_cancel, lock_booking
from bookings.states import BookingState, CustomerMessage
from partners.models import PartnerAttempt
from partners.services.compensation import booking_cancel_run
from tests.factories import BookingFactory

S = BookingState
M = CustomerMessage
UNSENT_CANCELLING = (
    "We are cancelling your booking. It was never sent to the partner, so there is nothing to "
    "cancel with them."
)


@pytest.mark.parametrize(
    ("state", "sent", "unsent"),
    [
        (S.CANCEL_REQUESTED, View("cancelling", M.CANCELLING), View("cancelling", M.CANCELLING_UNSENT)),
        (S.CANCELLED, View("cancelled", M.CANCELLED), View("cancelled", M.CANCELLED_UNSENT)),
    ],
)
def test_a_cancel_says_the_partner_only_when_the_partner_was_asked(state, sent, unsent):
    assert derive(state, Facts(submitted=True)) == sent
    assert derive(state, Facts(submitted=False)) == unsent


def test_a_paying_booking_cancelled_before_the_partner_heard_of_it_says_so_everywhere(
    db, customer, api_client, django_capture_on_commit_callbacks
):
    # given a paying booking whose payment is still being authorized: never sent to the partner
    authorizing = money_of(PaymentFacts("authorizing", "EUR", Decimal("240.00"))).as_json()
    booking = BookingFactory(customer=customer, status=S.AWAITING_PAYMENT, customer_money=authorizing)
    assert booking.submission_count == 0

    # when the customer cancels it, the API answers that nothing is cancelled with the partner
    with django_capture_on_commit_callbacks():
        answer = api_client.post(f"/api/v1/bookings/{booking.reference}/cancel")
    assert answer.status_code == 202
    assert (answer.json()["status"], answer.json()["message_code"]) == ("cancelling", "cancelling_unsent")
    assert answer.json()["message"] == UNSENT_CANCELLING
    page = Client()
    page.force_login(customer)
    shown = page.get(f"/bookings/{booking.reference}/").content.decode()
    assert "still exists with them" not in shown and "never sent to" in shown
    # beside "We are asking your bank to hold 240.00 EUR", that whatever it answers, it is let go
    # (once the cancellation is done: until then the money waits for it)
    released = "Cancelling is free: whatever your bank answers, any hold of 240.00 EUR is released"
    assert f"{released} once the cancellation is done." in shown

    # and once the cancellation runs, with no call to the partner, the mail says the same
    with django_capture_on_commit_callbacks():
        booking_cancel_run(booking.pk)
    booking.refresh_from_db()
    assert (booking.status, booking.customer_message) == (S.CANCELLED, M.CANCELLED_UNSENT)
    assert not PartnerAttempt.objects.filter(booking=booking).exists()
    notification = Notification.objects.get(booking=booking)
    assert notification.kind == NotificationKind.CANCELLED
    mail = compose(notification)
    for body in (mail.body, mail.alternatives[0].content):
        assert "Your booking is cancelled. It was never sent to the partner." in body
        assert "your booking was never sent to the partner, so they hold nothing for it." in body
        assert "confirmed the cancellation" not in body
        assert f"{released}." in body  # the hold asked for, as the cancel page promised, is released


def test_a_cancel_page_before_the_partner_heard_of_it_does_not_say_it_asks_them(db, customer):
    booking = BookingFactory(customer=customer, status=S.REQUESTED)
    web = Client()
    web.force_login(customer)

    page = web.get(f"/bookings/{booking.reference}/cancel/").content.decode()

    assert "at once to cancel" not in page and "still exists with them" not in page
    assert "has not been sent to" in page


def test_a_booking_the_partner_holds_is_cancelled_with_the_partner(db, customer):
    booking = BookingFactory(customer=customer, status=S.CANCELLED, submission_count=1)
    notification = Notification.objects.create(
        booking=booking, status_version=2, kind=NotificationKind.CANCELLED, message=M.CANCELLED
    )

    mail = compose(notification)

    assert "Nothing on your side: the partner holds nothing for this booking any more." in mail.body


def test_a_cancel_with_support_keeps_its_money_words_and_is_the_same_cancel_asked_again(
    db, customer, api_client, django_capture_on_commit_callbacks
):
    # given a paying booking the partner holds pending, its money held, that the customer cancels
    held = money_of(PaymentFacts("held", "EUR", Decimal("360.00"))).as_json()
    booking = BookingFactory(
        customer=customer, status=S.PENDING_PARTNER, submission_count=1, customer_money=held
    )
    with django_capture_on_commit_callbacks():
        booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    release = (
        "Cancelling is free: once the cancellation is done, we release the 360.00 EUR we hold on your card."
    )
    cancelling = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert release in cancelling["money"]["message"]

    # when the partner would not cancel it and support is handed the booking
    with django_capture_on_commit_callbacks(), transaction.atomic():
        apply_transition(
            lock_booking(booking.pk), "flag_for_attention", actor=Actor.WORKER, reason="compensation_failed"
        )

    # then the money is told as it was: held, released once the cancellation is done, never charged
    answer = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (answer["status"], answer["message_code"]) == ("cancelling", M.CANCEL_WITH_SUPPORT)
    assert answer["money"]["message"] == cancelling["money"]["message"]
    notification = Notification.objects.get(booking=booking)
    assert (notification.kind, notification.money_words) == (
        NotificationKind.CANCEL_NOT_DONE,
        cancelling["money"]["message"],
    )
    mail = compose(notification)
    assert mail.subject == f"Your booking {booking.reference} is not cancelled yet"
    assert release in mail.body and release in mail.alternatives[0].content

    # and asked again, by the API, it is the same cancel: nothing moves, nothing is paid or mailed
    with django_capture_on_commit_callbacks() as queued:
        again = api_client.post(f"/api/v1/bookings/{booking.reference}/cancel")
    assert (again.status_code, again.json()["status_version"]) == (202, answer["status_version"])
    assert queued == []
    assert Booking.objects.values_list("status", flat=True).get(pk=booking.pk) == S.NEEDS_ATTENTION


def test_support_resolving_a_cancel_with_support_another_way_drops_the_cancel(db, customer):
    # given a cancel that went to support
    booking = BookingFactory(customer=customer, status=S.PENDING_PARTNER, submission_count=1)
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    with transaction.atomic():
        apply_transition(
            lock_booking(booking.pk), "flag_for_attention", actor=Actor.WORKER, reason="worker_gave_up"
        )
    booking.refresh_from_db()
    assert booking.cancel_with_support and not booking.customer_may_cancel

    # when support fails it instead (it will not go ahead), the cancel stands no more
    with transaction.atomic():
        apply_transition(lock_booking(booking.pk), "fail", actor=Actor.SUPPORT)
    booking.refresh_from_db()
    assert (booking.cancel_asked_at, booking.cancel_with_support) == (None, False)
    assert (booking.customer_status, booking.customer_message) == ("failed", M.NOT_COMPLETED)
