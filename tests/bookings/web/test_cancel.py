"""Cancelling in the customer web client: a page that says what will happen, then the same
service as the API, and the `cancelling` state shown as it is."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone

from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from bookings.states import BookingState, CustomerMessage, CustomerStatus
from tests.factories import BookingFactory, PartnerReservationFactory
from tests.helpers import queued_messages

S = BookingState


@pytest.fixture
def confirmed(customer, offer) -> Booking:
    return BookingFactory(customer=customer, offer=offer, status=S.CONFIRMED)


def test_the_cancel_page_says_what_will_happen_and_changes_nothing(web, confirmed):
    response = web.get(f"/bookings/{confirmed.reference}/cancel/")

    page = response.content.decode()
    assert response.status_code == 200
    assert "Are you sure you want to cancel this booking?" in page
    assert "Until they confirm the cancellation, your booking shows as <strong>Cancelling</strong>" in page
    assert "You cannot undo a cancellation." in page
    assert f'href="/bookings/{confirmed.reference}/">No, keep my booking' in page
    confirmed.refresh_from_db()
    assert confirmed.status == S.CONFIRMED
    assert not confirmed.events.exists()


def test_the_cancel_page_says_what_happens_to_the_money_and_why_before_the_customer_confirms(
    web, customer, offer
):
    # given a confirmed booking charged 360.00 EUR, whose free cancellation ended 60 days before
    # its start (it starts in 30): a quarter of the price is kept
    type(offer).objects.filter(pk=offer.pk).update(
        free_cancellation_hours=60 * 24, cancellation_fee_percent=25
    )
    offer.refresh_from_db()  # the booking keeps the offer's terms as they are when it is made
    charged = money_of(PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00")))
    paid = BookingFactory(
        customer=customer, offer=offer, status=S.CONFIRMED, customer_money=charged.as_json()
    )
    cut_off = paid.start_date - timedelta(days=60)

    page = web.get(f"/bookings/{paid.reference}/cancel/").content.decode()

    # then it says what is kept, what is refunded, and the cut-off that decided it
    assert (
        '<p class="cancel-money" data-cancel-money="refund_less_fee">Once the cancellation is done, we '
        "keep the cancellation fee of 90.00 EUR and refund the other 270.00 EUR of the 360.00 EUR you "
        "paid to your card.</p>"
    ) in page
    assert (
        f"Free cancellation ended on {cut_off.day} {cut_off:%b %Y}, 00:00 UTC (1440 hours before the "
        "start): the fee is now 25% of the price, 90.00 EUR."
    ) in page

    # and confirming (the page's form sends back the fee it showed) fixes that fee
    assert shown_fee(page) == "90.00"
    assert confirm(web, paid.reference, page).status_code == 302
    paid.refresh_from_db()
    assert paid.cancellation_fee == Decimal("90.00")


def shown_fee(page: str) -> str:
    """The fee the cancel page's form sends back: the one its money line shows."""
    found = re.search(r'<input type="hidden" name="expected_fee" value="([^"]*)">', page)
    assert found, "the cancel form sends no fee"
    return found.group(1)


def confirm(web, reference: str, page: str):
    """ "Yes, cancel this booking" pressed on `page`: its form posted as the browser posts it."""
    return web.post(f"/bookings/{reference}/cancel/", {"expected_fee": shown_fee(page)})


FEE_NOW_90 = (
    "has changed since it was shown to you. Cancelling is no longer free: it now costs a "
    "cancellation fee of 90.00 EUR. Nothing has been cancelled: check what cancelling does now, and "
    "confirm again if you still want to cancel."
)


def test_a_cancel_confirmed_on_a_page_that_said_free_is_refused_once_the_partner_confirmed_meanwhile(
    web, customer, offer, django_capture_on_commit_callbacks
):
    # given a last-minute booking (it starts in 2 days; free cancellation ended 60 days before
    # its start) the partner has not confirmed yet: its money is held, and cancelling is free
    type(offer).objects.filter(pk=offer.pk).update(
        free_cancellation_hours=60 * 24, cancellation_fee_percent=25
    )
    offer.refresh_from_db()
    held = money_of(PaymentFacts("held", "EUR", Decimal("360.00")))
    booking = BookingFactory(
        customer=customer,
        offer=offer,
        status=S.PENDING_PARTNER,
        start_date=timezone.now().date() + timedelta(days=2),
        customer_money=held.as_json(),
    )
    page = web.get(f"/bookings/{booking.reference}/cancel/").content.decode()
    assert 'data-cancel-money="release">Once the cancellation is done, we release the 360.00 EUR' in page
    assert shown_fee(page) == "0.00"

    # when the partner confirms while the page is open, and the customer presses "Yes, cancel"
    type(booking).objects.filter(pk=booking.pk).update(status=S.CONFIRMED, confirmed_shown_at=timezone.now())
    with django_capture_on_commit_callbacks() as callbacks:
        refused = confirm(web, booking.reference, page)

    # then nothing is cancelled and no fee fixed: the page says why, and what cancelling does now
    assert refused.status_code == 409
    again = refused.content.decode()
    assert f"<li>The cost of cancelling booking {booking.reference} {FEE_NOW_90}</li>" in again
    assert (
        'data-cancel-money="release_or_refund">Once the cancellation is done, we keep the cancellation '
        "fee of 90.00 EUR"
    ) in again
    assert "Yes, cancel this booking" in again
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CONFIRMED, None)
    assert not booking.events.exists()
    assert callbacks == []

    # and the page shown again sends the fee it now shows: confirming there cancels, at that fee
    assert shown_fee(again) == "90.00"
    assert confirm(web, booking.reference, again).status_code == 302
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CANCEL_REQUESTED, Decimal("90.00"))


def test_a_cancel_confirmed_on_a_page_left_open_across_the_cut_off_is_refused(
    web, customer, offer, time_machine
):
    # given a confirmed booking charged 360.00 EUR, free to cancel until 48 hours before its start
    type(offer).objects.filter(pk=offer.pk).update(free_cancellation_hours=48, cancellation_fee_percent=25)
    offer.refresh_from_db()
    charged = money_of(PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00")))
    start = timezone.now().date() + timedelta(days=3)
    booking = BookingFactory(
        customer=customer, offer=offer, status=S.CONFIRMED, start_date=start, customer_money=charged.as_json()
    )
    cut_off = datetime.combine(start, time.min, tzinfo=UTC) - timedelta(hours=48)

    # when the customer opens the cancel page a minute before the cut-off: refunded in full
    time_machine.move_to(cut_off - timedelta(minutes=1), tick=False)
    page = web.get(f"/bookings/{booking.reference}/cancel/").content.decode()
    assert 'data-cancel-money="full_refund"' in page and shown_fee(page) == "0.00"

    # and presses "Yes, cancel" a minute after it
    time_machine.move_to(cut_off + timedelta(minutes=1), tick=False)
    refused = confirm(web, booking.reference, page)

    # then the free cancel they confirmed does not become a paid one: refused, the new cost shown
    assert refused.status_code == 409
    again = refused.content.decode()
    assert FEE_NOW_90 in again
    assert (
        'data-cancel-money="refund_less_fee">Once the cancellation is done, we keep the cancellation '
        "fee of 90.00 EUR" in again
    )
    assert shown_fee(again) == "90.00"
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CONFIRMED, None)
    assert not booking.events.exists()


def test_a_cancel_page_s_form_with_a_fee_that_is_not_an_amount_cancels_nothing(web, customer, offer):
    booking = BookingFactory(customer=customer, offer=offer, status=S.CONFIRMED)

    response = web.post(f"/bookings/{booking.reference}/cancel/", {"expected_fee": "free"})

    assert response.status_code == 400
    assert "There is a problem" in response.content.decode()
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert not booking.events.exists()


@pytest.mark.parametrize(
    ("fee_percent", "words"),
    [
        (
            0,
            "Once the cancellation is done, we make sure the 360.00 EUR comes back to your card in "
            "full. We do not know yet whether it was charged, and finding out may complete the "
            "charge: if it is charged, we refund it in full; if not, we release the hold.",
        ),
        (
            25,
            "Once the cancellation is done, we keep the cancellation fee of 90.00 EUR and make sure "
            "the other 270.00 EUR comes back to your card. We do not know yet whether the 360.00 EUR "
            "was charged, and finding out may complete the charge: if it is charged, we refund the "
            "270.00 EUR; if not, we charge only the fee and release the rest of the hold.",
        ),
        (
            100,
            "Once the cancellation is done, the 360.00 EUR is all the cancellation fee: nothing comes back",
        ),
    ],
    ids=["free", "fee", "all-fee"],
)
def test_the_cancel_page_of_a_booking_whose_charge_is_in_doubt_says_the_money_comes_back_not_how(
    web, customer, offer, api_client, fee_percent, words
):
    # given a confirmed booking whose capture timed out: it may or may not have been charged
    type(offer).objects.filter(pk=offer.pk).update(
        free_cancellation_hours=60 * 24, cancellation_fee_percent=fee_percent
    )
    offer.refresh_from_db()  # the booking keeps the offer's terms as they are when it is made
    in_doubt = money_of(PaymentFacts("charge_unknown", "EUR", Decimal("360.00")))
    booking = BookingFactory(
        customer=customer, offer=offer, status=S.CONFIRMED, customer_money=in_doubt.as_json()
    )

    page = web.get(f"/bookings/{booking.reference}/cancel/").content.decode()
    told = api_client.get(f"/api/v1/bookings/{booking.reference}").json()["if_cancelled"]

    # then neither says a release nor a refund for sure: the page and the API in the same words
    assert f'data-cancel-money="release_or_refund">{words}' in page
    assert told["outcome"] == "release_or_refund" and told["message"].startswith(words)
    assert (told["refund"], told["released"]) == ("0.00", "0.00")


def test_the_cancel_page_of_a_booking_the_partner_cancelled_after_confirming_says_what_is_true(
    web, customer, offer, api_client
):
    # given a booking confirmed and charged, then cancelled by the partner on its own and
    # refunded in full: the customer sees it disrupted
    refunded = money_of(
        PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00"), Decimal("360.00"))
    )
    booking = BookingFactory(
        customer=customer,
        offer=offer,
        status=S.NEEDS_ATTENTION,
        attention_reason="partner_cancelled_confirmed",
        submission_count=1,
        confirmed_shown_at=timezone.now() - timedelta(hours=1),
        customer_status=CustomerStatus.DISRUPTED,
        customer_message=CustomerMessage.DISRUPTED_PARTNER_CANCELLED,
        customer_money=refunded.as_json(),
    )

    page = web.get(f"/bookings/{booking.reference}/cancel/").content.decode()
    told = api_client.get(f"/api/v1/bookings/{booking.reference}").json()["if_cancelled"]

    # then it does not say the partner still holds it, nor that they never confirmed it
    assert "it still exists with them" not in page and "We ask" not in page
    assert f"{offer.partner.name} no longer holds your booking, so there is nothing left to cancel" in page
    why = "Cancelling is free: the partner no longer holds the booking they confirmed."
    money = "We have already refunded the 360.00 EUR we charged to your card, in full"
    assert why in page and "has not confirmed" not in page
    assert f'data-cancel-money="nothing_to_refund">{money}' in page
    assert told["why"] == why and told["message"].startswith(money)


def test_the_cancel_page_of_a_booking_without_a_payment_says_nothing_is_refunded(web, confirmed):
    page = web.get(f"/bookings/{confirmed.reference}/cancel/").content.decode()

    assert 'data-cancel-money="no_payment">This booking takes no payment: cancelling costs nothing' in page


def test_confirming_asks_the_partner_to_cancel_and_shows_cancelling(
    web, customer, confirmed, broker, django_capture_on_commit_callbacks
):
    # when the customer confirms the cancellation
    with django_capture_on_commit_callbacks(execute=True):
        response = web.post(f"/bookings/{confirmed.reference}/cancel/")

    # then the booking is cancelling, by the customer's hand, and the partner cancel is queued
    assert response.status_code == 302
    assert response["Location"] == f"/bookings/{confirmed.reference}/"
    confirmed.refresh_from_db()
    assert confirmed.status == S.CANCEL_REQUESTED
    event = confirmed.events.get()
    assert (event.kind, event.actor, event.actor_label) == (
        "booking.cancel_requested",
        "customer",
        customer.username,
    )
    assert [m.actor_name for m in queued_messages(broker, confirmed.partner.queue_name)] == ["cancel_booking"]

    # and the booking's page says so, plainly, and offers no second cancel
    page = web.get(response["Location"]).content.decode()
    assert "tag--cancelling" in page and "We are cancelling your booking with the partner." in page
    assert "Until they do, your booking still exists with them." in page
    assert "/cancel/" not in page


def test_cancelling_twice_changes_nothing_more(web, confirmed, django_capture_on_commit_callbacks):
    web.post(f"/bookings/{confirmed.reference}/cancel/")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = web.post(f"/bookings/{confirmed.reference}/cancel/")

    assert response.status_code == 302
    assert callbacks == []
    assert confirmed.events.count() == 1


def test_a_confirmed_booking_whose_cancel_did_not_complete_is_not_offered_the_cancel_again(
    web, api_client, customer, offer, monkeypatch, django_capture_on_commit_callbacks
):
    """The partner refused the customer's cancel of a confirmed booking through every try: support
    has it. Asked again by the customer, the partner was asked nothing (the reservation's cancel
    was requested already and its tries are spent), the booking sat `cancelling`, then went back
    to `disrupted_cancel_not_done` unannounced. It is the same cancel, as before a confirmation:
    not offered, and posted anyway it changes nothing; support's cancel drives it again."""
    from partners import messages as partner_messages
    from partners.services.compensation import booking_cancel_run

    monkeypatch.setattr(partner_messages, "send_for_partner_on_commit", lambda *a, **k: None)
    monkeypatch.setattr(partner_messages, "send_for_partner", lambda *a, **k: None)
    # given a confirmed booking the customer cancelled, whose cancel the partner would not make
    booking = BookingFactory(customer=customer, offer=offer, status=S.CONFIRMED, submission_count=1)
    reservation = PartnerReservationFactory(booking=booking)
    with django_capture_on_commit_callbacks(execute=False):
        web.post(f"/bookings/{booking.reference}/cancel/")
    booking_cancel_run(booking.pk)
    reservation.refresh_from_db()
    asked_at = reservation.compensation_requested_at
    assert asked_at is not None
    with transaction.atomic():
        apply_transition(
            lock_booking(booking.pk), "flag_for_attention", actor=Actor.WORKER, reason="compensation_failed"
        )
    booking.refresh_from_db()
    assert (booking.customer_status, booking.customer_message) == (
        CustomerStatus.DISRUPTED,
        CustomerMessage.DISRUPTED_CANCEL_NOT_DONE,
    )

    # then neither the page nor the API offers the cancel again
    assert booking.cancel_with_support and not booking.customer_may_cancel
    page = web.get(f"/bookings/{booking.reference}/").content.decode()
    assert f"/bookings/{booking.reference}/cancel/" not in page
    assert "our support team is taking your cancellation up with them" in page
    assert "nor to cancel again" in page
    answer = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (answer["links"]["cancel"], answer["if_cancelled"]) == (None, None)
    cancel_page = web.get(f"/bookings/{booking.reference}/cancel/").content.decode()
    assert "This booking cannot be cancelled now" in cancel_page
    assert "<form" not in cancel_page.split("<main")[1]

    # and a cancel posted anyway, by the page or the API, is the same cancel: nothing moves
    version = booking.status_version
    with django_capture_on_commit_callbacks(execute=False) as queued:
        assert web.post(f"/bookings/{booking.reference}/cancel/").status_code == 302
        again = api_client.post(f"/api/v1/bookings/{booking.reference}/cancel")
    assert (again.status_code, again.json()["status_version"]) == (202, version)
    assert queued == []
    booking.refresh_from_db()
    assert (booking.status, booking.customer_message, booking.status_version) == (
        S.NEEDS_ATTENTION,
        CustomerMessage.DISRUPTED_CANCEL_NOT_DONE,
        version,
    )
    reservation.refresh_from_db()
    assert reservation.compensation_requested_at == asked_at


def _moved(booking: Booking, transition: str, **kwargs) -> Booking:
    with transaction.atomic():
        apply_transition(lock_booking(booking.pk), transition, actor=Actor.WORKER, **kwargs)
    return Booking.objects.get(pk=booking.pk)


@pytest.mark.parametrize(("ended", "answer"), [("cancelled", 202), ("rejected", 409)])
def test_a_booking_that_had_ended_when_support_got_it_offers_no_cancel(
    web, api_client, customer, offer, ended, answer, django_capture_on_commit_callbacks
):
    """Support got a booking that had ended, for a reservation the partner still held whose
    cancel failed every try: the customer's booking has ended all the same. Its page offered
    "Cancel this booking", and a cancel moved an ended booking back to `cancelling`."""
    # given a booking that ended (cancelled by its customer, or declined by the partner)
    booking = BookingFactory(customer=customer, offer=offer, status=S.PENDING_PARTNER, submission_count=1)
    PartnerReservationFactory(booking=booking, status="pending")
    with django_capture_on_commit_callbacks(execute=False):
        if ended == "cancelled":
            web.post(f"/bookings/{booking.reference}/cancel/")
            booking = _moved(booking, "mark_cancelled")
        else:
            booking = _moved(booking, "reject")
        # when the partner would not release what it still holds: support has it
        booking = _moved(booking, "flag_for_attention", reason="compensation_failed")
    assert (booking.status, booking.attention_from) == (S.NEEDS_ATTENTION, ended)

    # then neither the page nor the API offers a cancel
    assert booking.ended_with_support and not booking.customer_may_cancel
    assert (
        f"/bookings/{booking.reference}/cancel/"
        not in web.get(f"/bookings/{booking.reference}/").content.decode()
    )
    shown = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (shown["links"]["cancel"], shown["if_cancelled"]) == (None, None)

    # and a cancel posted anyway is answered as the ended booking's was, changing nothing
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = api_client.post(f"/api/v1/bookings/{booking.reference}/cancel")
    assert response.status_code == answer
    assert queued == []
    after = Booking.objects.get(pk=booking.pk)
    assert (after.status, after.status_version) == (S.NEEDS_ATTENTION, booking.status_version)

    # and once support settles it, the booking no longer says where it came from
    after = _moved(after, "mark_cancelled" if ended == "cancelled" else "fail")
    assert after.attention_from == ""


def test_a_failed_booking_cannot_be_cancelled(web, customer, offer):
    failed = BookingFactory(customer=customer, offer=offer, status=S.REJECTED)

    page = web.get(f"/bookings/{failed.reference}/cancel/").content.decode()
    assert "This booking cannot be cancelled now" in page and "<form" not in page.split("<main")[1]

    response = web.post(f"/bookings/{failed.reference}/cancel/")
    assert response.status_code == 409
    refused = (
        f"<li>Booking {failed.reference} can no longer be cancelled: the partner could not accept "
        "this booking. Nothing is booked.</li>"
    )
    assert refused in response.content.decode()
    failed.refresh_from_db()
    assert failed.status == S.REJECTED
    assert not failed.events.exists()


def test_another_customers_booking_cannot_be_cancelled(web, other_customer, offer):
    theirs = BookingFactory(customer=other_customer, offer=offer, status=S.CONFIRMED)

    assert web.post(f"/bookings/{theirs.reference}/cancel/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == S.CONFIRMED


def test_a_reference_typed_in_lower_case_cancels_my_booking_and_never_another_customers(
    web, confirmed, other_customer, offer
):
    theirs = BookingFactory(customer=other_customer, offer=offer, status=S.CONFIRMED)

    mine = web.post(f"/bookings/{confirmed.reference.lower()}/cancel/")
    refused = web.post(f"/bookings/{theirs.reference.lower()}/cancel/")

    assert (mine.status_code, mine["Location"]) == (302, f"/bookings/{confirmed.reference}/")
    assert refused.status_code == 404
    confirmed.refresh_from_db()
    theirs.refresh_from_db()
    assert (confirmed.status, theirs.status) == (S.CANCEL_REQUESTED, S.CONFIRMED)
