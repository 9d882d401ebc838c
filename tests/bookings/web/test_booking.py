"""Booking from a quote in the customer web client, and the booking's pages: one booking per quote
however often Book is sent, the progress page and its status fragment, my bookings."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Actor, Booking, Offer, Quote
from bookings.selectors import confirmation_times_cache_key
from bookings.states import BookingState, CustomerMessage
from bookings.timeline import record_event
from bookings.web.views import booking_key
from tests.factories import PASSWORD, BookingFactory, OfferFactory, QuoteFactory
from tests.helpers import queued_messages

from .conftest import htmx

S = BookingState
M = CustomerMessage


@pytest.fixture(autouse=True)
def _no_cached_confirmation_times(offer):
    from django.core.cache import cache

    cache.delete(confirmation_times_cache_key(offer.partner_id))


def book(web, quote, key: str | None = None):
    """Book, as the page posts it: with the key its script made, or none without the script."""
    return web.post(f"/quotes/{quote.pk}/book/", {} if key is None else {"idempotency_key": key})


# --- booking --------------------------------------------------------------------------------------
def test_book_makes_the_booking_and_shows_its_progress(
    web, customer, quote, broker, django_capture_on_commit_callbacks
):
    # when the customer books the quote
    with django_capture_on_commit_callbacks(execute=True):
        response = book(web, quote)

    # then the booking holds the quoted stay and price, and its submission is queued
    booking = Booking.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/bookings/{booking.reference}/"
    assert (booking.customer, booking.quote, booking.total_price) == (customer, quote, quote.total_price)
    assert (booking.start_date, booking.end_date, booking.guests) == (quote.start_date, quote.end_date, 2)
    assert booking.idempotency_key == booking_key(quote)  # no script made a key: the quote's
    assert [m.args[0] for m in queued_messages(broker, booking.partner.queue_name)] == [str(booking.pk)]


def test_book_uses_the_key_the_page_made_for_the_attempt(web, quote):
    key = "0f8e4c2a-5b1d-4e7a-9c3f-2d6b8a1e4f70"

    book(web, quote, key)

    assert Booking.objects.get().idempotency_key == key


def test_a_key_the_api_would_refuse_is_refused_in_its_words(web, quote):
    response = book(web, quote, "no\ttabs")

    assert response.status_code == 400
    assert "Use 1 to 255 printable ASCII characters." in response.content.decode()
    assert not Booking.objects.exists()


def test_booking_a_quote_again_under_another_key_answers_with_its_booking(web, quote):
    # given a quote booked from one tab
    first = book(web, quote, "key-of-tab-1")

    # when another tab (its own key) or a page without the script (the quote's key) books it
    second = book(web, quote, "key-of-tab-2")
    third = book(web, quote)

    # then each lands on the one booking
    booking = Booking.objects.get()
    assert first["Location"] == second["Location"] == third["Location"] == f"/bookings/{booking.reference}/"
    assert booking.idempotency_key == "key-of-tab-1"


def test_booking_a_quote_again_makes_no_second_booking(
    web, quote, broker, django_capture_on_commit_callbacks
):
    # given a booking made from the quote
    with django_capture_on_commit_callbacks(execute=True):
        first = book(web, quote)

    # when Book is sent again (a double click, a reload, a retry after a dropped connection)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = book(web, quote)

    # then it answers with the same booking, and nothing more is queued
    booking = Booking.objects.get()
    assert first["Location"] == second["Location"] == f"/bookings/{booking.reference}/"
    assert callbacks == []
    assert len(queued_messages(broker, booking.partner.queue_name)) == 1


def test_the_quote_page_of_a_booked_quote_links_to_the_booking(web, quote):
    book(web, quote)
    booking = Booking.objects.get()

    page = web.get(f"/quotes/{quote.pk}/").content.decode()

    assert f'href="/bookings/{booking.reference}/"' in page
    assert "/book/" not in page  # no Book button


def main_text(response) -> str:
    """The page's main part as read: tags dropped, white space folded."""
    main = response.content.decode().split("<main", 1)[1].split(">", 1)[1].split("</main>", 1)[0]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", main))).strip()


def declined(customer, quote) -> Booking:
    """The quote's booking, ended by a declined card before the partner heard of it."""
    return BookingFactory(
        customer=customer,
        offer=quote.offer,
        quote=quote,
        start_date=quote.start_date,
        end_date=quote.end_date,
        guests=quote.guests,
        status=S.FAILED,
        customer_status="failed",
        customer_message=M.PAYMENT_DECLINED,
        customer_money=money_of(PaymentFacts("declined", "EUR", quote.total_price)).as_json(),
    )


def price_again_form(response) -> tuple[str, dict[str, str]]:
    """The quote page's "Get a new price" form: where it posts, and what."""
    page = response.content.decode()
    forms = re.finditer(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
    form = next((form for form in forms if 'id="price-again"' in form.group(2)), None)
    assert form is not None, page
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form.group(2)))
    return form.group(1), fields


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (S.FAILED, M.PAYMENT_DECLINED),  # the card was declined: the partner never heard of it
        (S.REJECTED, M.DECLINED),  # the partner declined it
        (S.REJECTED, M.DISRUPTED_ENDED),  # confirmed once, then let go by the partner
    ],
)
def test_the_quote_page_of_a_booking_that_did_not_go_ahead_says_so_and_offers_a_new_price(
    web, customer, quote, status, message
):
    """Reviewer: a quote whose booking was declined said "You have booked this already", with no
    way to try again; booking it with another card was refused as "booked already"."""
    customer_status = "disrupted" if message == M.DISRUPTED_ENDED else "failed"
    booking = BookingFactory(
        customer=customer,
        offer=quote.offer,
        quote=quote,
        status=status,
        customer_status=customer_status,
        customer_message=message,
    )

    response = web.get(f"/quotes/{quote.pk}/")

    text = main_text(response)
    assert "booked this already" not in text
    assert f"Your booking {booking.reference} of this price did not go ahead: {message.label}" in text
    assert f'href="/bookings/{booking.reference}/"' in response.content.decode()
    assert 'id="book"' not in response.content.decode()  # the quote is booked once
    action, fields = price_again_form(response)
    assert action == f"/offers/{quote.offer_id}/"
    assert {name: value for name, value in fields.items() if name != "csrfmiddlewaretoken"} == {
        "start_date": quote.start_date.isoformat(),
        "end_date": quote.end_date.isoformat(),
        "guests": str(quote.guests),
    }


def test_the_quote_page_of_a_booking_being_released_says_it_did_not_go_ahead(web, customer, quote):
    """Reviewer: a booking that could not be confirmed, its place at the partner being released
    (`pending`, `releasing`), was "You have booked this already" on its quote's page."""
    booking = BookingFactory(
        customer=customer,
        offer=quote.offer,
        quote=quote,
        status=S.REJECTED,
        customer_status="pending",
        customer_message=M.RELEASING,
    )

    response = web.get(f"/quotes/{quote.pk}/")

    text = main_text(response)
    assert "booked this already" not in text
    assert f"Your booking {booking.reference} of this price did not go ahead: {M.RELEASING.label}" in text
    assert f'href="/bookings/{booking.reference}/"' in response.content.decode()
    assert 'id="book"' not in response.content.decode()  # the quote is booked once


def test_a_tour_whose_booking_did_not_go_ahead_is_priced_again_by_its_days(web, customer, quote):
    """The day offer's form asks for days, not an end date: the new price's form sends its days,
    and the new quote is the same stay."""
    quote.offer.price_unit = "day"
    quote.offer.save(update_fields=["price_unit"])
    declined(customer, quote)

    action, fields = price_again_form(web.get(f"/quotes/{quote.pk}/"))

    assert {name: value for name, value in fields.items() if name != "csrfmiddlewaretoken"} == {
        "start_date": quote.start_date.isoformat(),
        "days": str((quote.end_date - quote.start_date).days),
        "guests": str(quote.guests),
    }
    again = web.post(action, fields)
    assert again.status_code == 302, again.content.decode()
    new = Quote.objects.exclude(pk=quote.pk).get()
    assert (new.start_date, new.end_date, new.guests) == (quote.start_date, quote.end_date, quote.guests)


def test_a_booking_a_card_ended_links_to_the_same_stay_with_another_card(web, customer, quote):
    """Explorer: the page of a booking ended by a declined card offered only other dates or
    another offer; the stay was not refused, the card was. Its quote's page prices it again."""
    failed = declined(customer, quote)

    page = web.get(f"/bookings/{failed.reference}/").content.decode()

    assert f'<a href="/quotes/{quote.pk}/">book the same stay with another card</a>' in page


@pytest.mark.parametrize("key", [None, "0f8e4c2a-5b1d-4e7a-9c3f-2d6b8a1e4f70"], ids=["no-script", "same-tab"])
def test_book_again_with_another_card_under_the_first_attempt_s_key_is_refused_as_the_quote_s_booking(
    web, customer, quote, key
):
    """Explorer: the page without its script (the quote's key), or a tab whose script kept its
    key, booking the quote again with another card was told "This Idempotency-Key was already
    used with a different request body.": the page's key names its attempt to book the quote."""
    # given the quote booked from its page, then ended by a declined card
    first = web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_chargeDeclined"} | _key(key))
    assert first.status_code == 302
    Booking.objects.update(status=S.FAILED, customer_status="failed", customer_message=M.PAYMENT_DECLINED)
    failed = Booking.objects.get()

    # when they book it again, with another card, under the same key
    again = web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_visa"} | _key(key))

    # then they are told the quote's booking did not go ahead, and how to book the stay again
    assert again.status_code == 422
    text = main_text(again)
    assert (
        f"This quote's booking {failed.reference} did not go ahead, and a quote is booked only once: "
        "get a new quote for the same stay, and book that." in text
    )
    assert "Idempotency-Key" not in text
    assert Booking.objects.count() == 1


def test_book_again_with_another_card_of_a_booking_going_ahead_is_refused_as_booked(web, quote):
    first = web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_chargeDeclined"})
    assert first.status_code == 302

    again = web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_visa"})

    assert again.status_code == 422
    assert "This quote is booked already, with another payment method." in main_text(again)


def _key(key: str | None) -> dict[str, str]:
    return {} if key is None else {"idempotency_key": key}


def test_a_declined_card_is_tried_again_with_another_on_a_new_price_for_the_same_stay(
    web, customer, quote, django_capture_on_commit_callbacks
):
    # given a quote whose booking ended on a declined card
    failed = declined(customer, quote)

    # when the customer books the quote again with another card, as a page left open would
    refused = web.post(
        f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_visa", "idempotency_key": "k2"}
    )

    # then it is refused, saying the booking did not go ahead and how to book the stay again
    assert refused.status_code == 422
    assert (
        f"This quote's booking {failed.reference} did not go ahead, and a quote is booked only once: "
        "get a new quote for the same stay, and book that." in main_text(refused)
    )
    assert Booking.objects.count() == 1

    # when they click "Get a new price for this stay" on the quote's page
    action, fields = price_again_form(web.get(f"/quotes/{quote.pk}/"))
    priced = web.post(action, fields)

    # then a new quote of the same stay, priced now, is the page they land on, ready to book
    new = Quote.objects.exclude(pk=quote.pk).get()
    assert priced.status_code == 302 and priced["Location"] == f"/quotes/{new.pk}/"
    assert (new.offer_id, new.start_date, new.end_date, new.guests) == (
        quote.offer_id,
        quote.start_date,
        quote.end_date,
        quote.guests,
    )
    assert not new.is_expired()
    page = web.get(priced["Location"]).content.decode()
    assert 'id="book"' in page and "did not go ahead" not in page

    # and booking it with another card makes the booking
    with django_capture_on_commit_callbacks(execute=False):
        booked = web.post(
            f"/quotes/{new.pk}/book/", {"payment_method": "pm_card_visa", "idempotency_key": "k3"}
        )
    booking = Booking.objects.get(quote=new)
    assert booked.status_code == 302 and booked["Location"] == f"/bookings/{booking.reference}/"
    assert booking.status == S.AWAITING_PAYMENT
    assert Booking.objects.get(pk=failed.pk).quote_id == quote.pk  # the first keeps its quote


def test_a_booking_that_did_not_go_ahead_whose_dates_have_passed_links_to_choose_new_dates(
    web, customer, quote
):
    """Reviewer: its "Get a new price for this stay" always landed on a 400 ("The start date must
    be in the future"): a stay starting today or before cannot be priced again."""
    Quote.objects.filter(pk=quote.pk).update(start_date=timezone.now().date())
    booking = declined(customer, Quote.objects.get(pk=quote.pk))

    response = web.get(f"/quotes/{quote.pk}/")

    page = response.content.decode()
    assert response.status_code == 200
    assert f"Your booking {booking.reference} of this price did not go ahead" in main_text(response)
    assert "The dates of this stay have passed: choose new dates to book." in main_text(response)
    assert f'<a href="/offers/{quote.offer_id}/" id="choose-dates">' in page
    assert 'id="price-again"' not in page


def test_a_booking_that_did_not_go_ahead_of_a_withdrawn_offer_offers_no_new_price(web, customer, quote):
    booking = declined(customer, quote)
    quote.offer.is_active = False
    quote.offer.save(update_fields=["is_active"])

    response = web.get(f"/quotes/{quote.pk}/")

    text = main_text(response)
    assert f"Your booking {booking.reference} of this price did not go ahead" in text
    assert "This offer is no longer available." in text
    assert 'id="price-again"' not in response.content.decode()


def test_the_quote_page_of_a_cancelled_booking_says_it_is_cancelled(web, customer, quote):
    booking = BookingFactory(customer=customer, offer=quote.offer, quote=quote, status=S.CANCELLED)

    text = main_text(web.get(f"/quotes/{quote.pk}/"))

    assert f"You booked this price: booking {booking.reference}. {M.CANCELLED.label}" in text
    assert "booked this already" not in text and "did not go ahead" not in text


def test_the_quote_page_gives_the_script_its_attempt_and_key_field(web, quote):
    page = web.get(f"/quotes/{quote.pk}/").content.decode()

    assert f'data-attempt="quote-{quote.pk}"' in page
    assert '<input type="hidden" name="idempotency_key" data-attempt-key="" id="id_idempotency_key">' in page


def test_an_expired_quote_is_refused_with_the_api_words(web, customer, offer):
    quote = QuoteFactory(customer=customer, offer=offer, expires_at=timezone.now() - timedelta(seconds=1))

    response = book(web, quote)

    assert response.status_code == 400
    assert Booking.objects.count() == 0
    page = response.content.decode()
    assert "<li>This quote has expired.</li>" in page
    assert "Get a new price" in page


def test_a_booked_quote_that_has_expired_since_says_it_is_booked_not_expired(web, quote):
    """Tester: Book from a stale tab (another card) of a quote booked meanwhile and expired since
    said "This quote has expired." above "You have booked this already": the expiry is moot."""
    # given a quote booked from one tab, whose hold has ended since
    book(web, quote, "key-of-tab-1")
    booking = Booking.objects.get()
    Quote.objects.filter(pk=quote.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    # when another tab, still showing Book, books it with a card
    response = web.post(
        f"/quotes/{quote.pk}/book/", {"idempotency_key": "key-of-tab-2", "payment_method": "pm_card_visa"}
    )

    # then it says the quote is booked, and leads to the booking: nothing of the expiry
    page = response.content.decode()
    assert response.status_code == 422
    assert "<li>This quote is booked already, with another payment method.</li>" in page
    assert f'href="/bookings/{booking.reference}/"' in page
    assert "expired" not in page and "Get a new price" not in page
    assert Booking.objects.count() == 1


def test_a_price_below_the_least_a_card_payment_may_be_is_refused_beside_the_card(web, customer, offer):
    """Review: Stripe refuses a charge below its minimum, and the booking ended as a card decline
    although the card was fine. Refused before anything is stored, the card field saying why."""
    Offer.objects.filter(pk=offer.pk).update(unit_price=Decimal("0.10"))
    quote = QuoteFactory(customer=customer, offer=offer, total_price=Decimal("0.30"))

    response = web.post(f"/quotes/{quote.pk}/book/", {"payment_method": "pm_card_visa"})

    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert "0.30 EUR cannot be paid by card: a card payment in EUR is at least 0.50 EUR." in page
    assert not Booking.objects.exists()


def test_a_quote_for_a_withdrawn_offer_says_why_it_cannot_be_booked(web, quote):
    quote.offer.is_active = False
    quote.offer.save(update_fields=["is_active"])

    response = book(web, quote)

    assert response.status_code == 400
    assert Booking.objects.count() == 0
    assert "<li>This offer is no longer available.</li>" in response.content.decode()


def test_the_quote_page_of_a_withdrawn_offer_offers_no_book_button(web, quote):
    """Exploratory use: the page still said "We hold this price for you until…" and offered Book,
    which then failed."""
    quote.offer.is_active = False
    quote.offer.save(update_fields=["is_active"])

    page = web.get(f"/quotes/{quote.pk}/").content.decode()

    assert "This offer is no longer available." in page and "This price cannot be booked." in page
    assert "We hold this price" not in page and "/book/" not in page


def test_booking_needs_a_post_and_a_login(client, web, quote):
    assert web.get(f"/quotes/{quote.pk}/book/")["Location"] == f"/quotes/{quote.pk}/"
    assert client.post(f"/quotes/{quote.pk}/book/")["Location"].startswith("/account/login/")
    assert Booking.objects.count() == 0


def test_book_after_the_session_ended_lands_back_on_the_quote_after_logging_in(client, customer, quote):
    # given a quote page whose session ended before the customer clicked Book
    answer = client.post(f"/quotes/{quote.pk}/book/", {"idempotency_key": "tab-1"})
    login_url = answer["Location"]
    assert login_url == f"/account/login/?next=/quotes/{quote.pk}/book/"

    # when they log in, the browser follows `next` with a GET: back to the quote, not a 405
    landed = client.post(
        login_url,
        {"username": customer.username, "password": PASSWORD, "next": f"/quotes/{quote.pk}/book/"},
        follow=True,
    )
    assert landed.redirect_chain[-1] == (f"/quotes/{quote.pk}/", 302)
    assert landed.status_code == 200 and 'id="book"' in landed.content.decode()
    assert Booking.objects.count() == 0  # the lost POST booked nothing

    # and booking from there still works
    assert book(client, quote, "tab-1")["Location"] == f"/bookings/{Booking.objects.get().reference}/"


# --- the progress page ----------------------------------------------------------------------------
def progressed(customer, offer, *moves: str, **fields) -> Booking:
    """A booking whose timeline holds the given moves (our words in the summaries are not the
    customer's: they carry partner references and support notes on purpose)."""
    booking = BookingFactory(customer=customer, offer=offer, status=moves[-1], **fields)
    previous = ""
    for state in moves:
        record_event(
            booking,
            f"booking.{state}",
            actor=Actor.WORKER,
            from_state=previous,
            to_state=state,
            summary=f"partner ref R-SECRET-1, support note: call the hotel ({state})",
            data={"partner_ref": "R-SECRET-1"},
        )
        previous = state
    record_event(booking, "partner.attempt.ambiguous", actor=Actor.WORKER, summary="timeout R-SECRET-1")
    return booking


def test_the_progress_page_says_the_status_in_words_and_the_steps_so_far(web, customer, offer):
    booking = progressed(customer, offer, S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.PENDING_PARTNER)

    response = web.get(f"/bookings/{booking.reference}/")

    page = response.content.decode()
    assert response.status_code == 200
    assert '<div id="booking-status" class="status-panel" aria-live="polite">' in page
    assert "tag--pending" in page and "The partner is confirming your booking." in page
    labels = [step.label for step in response.context["progress"].steps]
    assert labels == [
        "Booking received",
        "Sent to the partner",
        "Checking with the partner",
        "The partner is confirming",
    ]
    assert "R-SECRET-1" not in page and "support note" not in page and "pending_partner" not in page
    assert "We do not know yet whether" in page
    assert "Not enough data yet" in page
    assert f'href="/bookings/{booking.reference}/cancel/"' in page
    assert (
        f'hx-get="/bookings/{booking.reference}/status/?seen={response.context["progress"].version}"' in page
    )


def test_a_confirmed_booking_shows_no_poll_and_what_happens_next(web, customer, offer):
    booking = progressed(customer, offer, S.REQUESTED, S.SUBMITTING, S.CONFIRMED)

    page = web.get(f"/bookings/{booking.reference}/").content.decode()

    assert "tag--confirmed" in page and "Your booking is confirmed." in page
    assert "Confirmed by the partner" in page
    assert "hx-get" not in page
    assert f"Give the reference <strong>{booking.reference}</strong>" in page


def test_the_partners_usual_confirmation_time_comes_from_our_figures(web, customer, offer):
    # given ten of the partner's bookings confirmed 20 s to 200 s after they were requested
    for seconds in range(20, 201, 20):
        confirmed = BookingFactory(offer=offer, status=S.CONFIRMED)
        requested_at = timezone.now() - timedelta(seconds=seconds)
        Booking.objects.filter(pk=confirmed.pk).update(created_at=requested_at)
        record_event(confirmed, "booking.confirmed", actor=Actor.WEBHOOK, to_state=S.CONFIRMED)
    booking = progressed(customer, offer, S.REQUESTED, S.SUBMITTING)

    page = web.get(f"/bookings/{booking.reference}/").content.decode()

    # the median of 20..200 s is 110 s; the 90th percentile (nearest rank) 180 s
    assert "Half of their bookings are confirmed within 2 minutes, and 9 in 10 within 3 minutes." in page
    assert "From the 10 bookings they confirmed in the last 7 days." in page


def test_another_customers_booking_is_not_found(web, other_customer, offer):
    theirs = progressed(other_customer, offer, S.REQUESTED)

    assert web.get(f"/bookings/{theirs.reference}/").status_code == 404
    assert htmx(web, f"/bookings/{theirs.reference}/status/").status_code == 404
    assert web.get(f"/bookings/{theirs.reference}/cancel/").status_code == 404
    assert web.get("/bookings/BK-NOSUCH/").status_code == 404


def test_a_nul_in_a_reference_is_the_not_found_page(web, customer, offer):
    # `%00` reached the database (a DataError, the 500 page); it names no booking.
    mine = progressed(customer, offer, S.REQUESTED)

    assert web.get(f"/bookings/{mine.reference}%00/").status_code == 404
    assert htmx(web, f"/bookings/{mine.reference}%00/status/").status_code == 404
    assert web.get(f"/bookings/{mine.reference}%00/cancel/").status_code == 404
    assert web.post(f"/bookings/{mine.reference}%00/cancel/").status_code == 404
    mine.refresh_from_db()
    assert mine.status == S.REQUESTED


def test_a_reference_in_any_case_finds_my_booking_and_never_another_customers(
    web, other_customer, customer, offer
):
    # A reference is made of capitals and digits only (bookings.models.REFERENCE_ALPHABET): typed in
    # lower case, or read out over the phone, it names the same booking, and only to its customer.
    mine = progressed(customer, offer, S.REQUESTED)
    theirs = progressed(other_customer, offer, S.REQUESTED)
    typed = mine.reference.lower().replace("bk-", "Bk-")

    page = web.get(f"/bookings/{typed}/")

    assert page.status_code == 200 and page.context["booking"] == mine
    assert htmx(web, f"/bookings/{typed}/status/").status_code == 200
    assert web.get(f"/bookings/{typed}/cancel/").context["booking"] == mine
    for path in ("", "status/", "cancel/"):
        assert htmx(web, f"/bookings/{theirs.reference.lower()}/{path}").status_code == 404


# --- the status fragment (the page's poll) --------------------------------------------------------
def test_the_poll_gets_the_live_parts_when_they_changed(web, customer, offer, settings):
    booking = progressed(customer, offer, S.REQUESTED, S.SUBMITTING)

    response = htmx(web, f"/bookings/{booking.reference}/status/", seen="what-the-page-showed")

    page = response.content.decode()
    assert response.status_code == 200
    assert response["Retry-After"] == str(settings.BOOKING_POLL_AFTER_S)
    assert '<div id="booking-status" hx-swap-oob="innerHTML">' in page
    assert '<div id="booking-progress" hx-swap-oob="innerHTML">' in page
    assert "Sent to the partner" in page
    version = response.context["progress"].version
    assert f'hx-get="/bookings/{booking.reference}/status/?seen={version}"' in page
    assert f'hx-trigger="load delay:{settings.BOOKING_POLL_AFTER_S}s, poll-retry"' in page


def test_the_poll_gets_only_the_next_poller_while_nothing_changed(web, customer, offer):
    booking = progressed(customer, offer, S.REQUESTED, S.SUBMITTING)
    version = web.get(f"/bookings/{booking.reference}/").context["progress"].version

    response = htmx(web, f"/bookings/{booking.reference}/status/", seen=version)

    page = response.content.decode()
    assert "hx-swap-oob" not in page  # the live region announces nothing
    assert f"?seen={version}" in page


def test_the_poll_gets_a_change_of_the_money_alone(web, customer, offer):
    # cancelled, the refund on its way: the page polls for it (no stream), and the refund is a
    # change of the money alone (the status, message and steps stay)
    moves = (S.REQUESTED, S.SUBMITTING, S.CONFIRMED, S.CANCEL_REQUESTED, S.CANCELLED)
    charged = money_of(PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00")))
    booking = progressed(
        customer, offer, *moves, cancellation_fee=Decimal("90.00"), customer_money=charged.as_json()
    )
    version = web.get(f"/bookings/{booking.reference}/").context["progress"].version
    refunded = PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00"), Decimal("270.00"))
    Booking.objects.filter(pk=booking.pk).update(customer_money=money_of(refunded).as_json())

    response = htmx(web, f"/bookings/{booking.reference}/status/", seen=version)

    page = response.content.decode()
    assert '<div id="booking-status" hx-swap-oob="innerHTML">' in page  # swapped in, announced
    assert "refunded 270.00 EUR of it to your card: you paid 90.00 EUR." in page
    assert "hx-get" not in page  # and nothing more is awaited


def test_the_poll_stops_once_the_customer_waits_for_nothing(web, customer, offer):
    booking = progressed(customer, offer, S.REQUESTED, S.SUBMITTING, S.CONFIRMED)

    response = htmx(web, f"/bookings/{booking.reference}/status/", seen="old")

    page = response.content.decode()
    assert "Your booking is confirmed." in page
    assert "hx-get" not in page
    assert "Retry-After" not in response


def test_a_cancelling_booking_is_still_polled(web, customer, offer):
    booking = progressed(customer, offer, S.REQUESTED, S.CONFIRMED, S.CANCEL_REQUESTED)

    response = htmx(web, f"/bookings/{booking.reference}/status/", seen="old")

    page = response.content.decode()
    assert "tag--cancelling" in page and "Cancellation requested" in page
    assert "hx-get" in page and response["Retry-After"]


def money_told(state: str) -> dict:
    return money_of(PaymentFacts(state, "EUR", Decimal("240.00"))).as_json()


@pytest.mark.parametrize(
    ("moves", "next_words"),
    [
        # confirmed, the capture of the hold still to come (or retrying)
        ((S.REQUESTED, S.SUBMITTING, S.CONFIRMED), "holds your booking"),
        # cancelled, the hold's release still to come (or retrying)
        (
            (S.REQUESTED, S.SUBMITTING, S.CONFIRMED, S.CANCEL_REQUESTED, S.CANCELLED),
            "Your booking is cancelled. There is nothing else to do.",
        ),
        # the payment not confirmed yet: the partner has not even been asked
        ((S.AWAITING_PAYMENT,), "waiting for the payment provider to confirm your payment"),
    ],
)
def test_a_wait_for_the_payment_provider_never_names_the_partner(web, customer, offer, moves, next_words):
    held = money_told("authorizing" if moves[-1] == S.AWAITING_PAYMENT else "held")
    booking = progressed(customer, offer, *moves, customer_money=held, submission_count=len(moves) > 1)

    response = htmx(web, f"/bookings/{booking.reference}/status/", seen="old")

    page = response.content.decode()
    assert next_words in page
    assert "Waiting for the payment provider" in page and "hx-get" in page
    assert f"Waiting for {offer.partner.name}" not in page
    assert "usually takes" not in page


def test_a_booking_with_support_says_support_has_it_not_how_long_the_partner_takes(
    web, api_client, customer, offer
):
    # given a booking handed to our support team: the outcome of its create could not be looked up
    booking = progressed(
        customer,
        offer,
        S.REQUESTED,
        S.SUBMITTING,
        S.UNKNOWN,
        S.NEEDS_ATTENTION,
        attention_reason="outcome_unknown_no_lookup",
        submission_count=1,
    )

    # the page, and its poll's live parts
    for response in (
        web.get(f"/bookings/{booking.reference}/"),
        htmx(web, f"/bookings/{booking.reference}/status/", seen="old"),
    ):
        page = response.content.decode()
        # then it says support has it and what the customer can expect, as the status says
        assert M.WITH_SUPPORT.label in page
        assert "Waiting for our support team" in page
        assert (
            f"We could not settle your booking with {offer.partner.name} automatically, so our support "
            "team is sorting it out with them. We will email you when it is settled."
        ) in page
        assert "our support team settles your booking instead" in page
        # and nothing of the partner's usual time, or a deadline for the partner that no longer applies
        assert "usually takes" not in page and "Not enough data yet" not in page
        assert "If they do not, the booking does not go ahead" not in page
        assert "We do not know yet whether" not in page
        assert "hx-get" in page  # still followed: support's outcome is news

    # and the API says the same words
    told = api_client.get(f"/api/v1/bookings/{booking.reference}").json()
    assert (told["status"], told["message_code"], told["message"]) == (
        "pending",
        "with_support",
        M.WITH_SUPPORT.label,
    )


@pytest.mark.parametrize(
    "moves",
    [
        (S.REQUESTED, S.SUBMITTING, S.PENDING_PARTNER),
        (S.REQUESTED, S.SUBMITTING, S.PENDING_PARTNER, S.CONFIRMED),
        (S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.NEEDS_ATTENTION),
        (S.REQUESTED, S.SUBMITTING, S.PENDING_PARTNER, S.CONFIRMED, S.CANCEL_REQUESTED),
    ],
    ids=["partner-confirming", "confirmed", "with-support", "cancelling"],
)
def test_the_page_and_the_api_tell_the_partners_deadline_alike(web, api_client, customer, offer, moves):
    booking = progressed(customer, offer, *moves, submission_count=1)

    page = web.get(f"/bookings/{booking.reference}/").content.decode()
    told = api_client.get(f"/api/v1/bookings/{booking.reference}").json()["deadline"]

    # the page tells the deadline exactly when the API does, and then the same moment
    assert ("to confirm. If they do not, the booking does not go ahead." in page) is (told is not None)
    if told is not None:
        assert f'They have until <time datetime="{booking.deadline.isoformat()}">' in page


def test_the_fragment_without_htmx_sends_to_the_page(web, customer, offer):
    booking = progressed(customer, offer, S.REQUESTED)

    response = web.get(f"/bookings/{booking.reference}/status/")

    assert response.status_code == 302
    assert response["Location"] == f"/bookings/{booking.reference}/"


def test_a_poll_after_the_session_ended_reloads_the_page(client, customer, offer):
    booking = progressed(customer, offer, S.REQUESTED)

    response = htmx(client, f"/bookings/{booking.reference}/status/")

    assert response.status_code == 200
    assert response["HX-Refresh"] == "true"
    assert response.content == b""


# --- my bookings ----------------------------------------------------------------------------------
def test_my_bookings_lists_mine_newest_first_with_their_status(web, customer, other_customer, offer):
    older = BookingFactory(customer=customer, offer=offer, status=S.CONFIRMED)
    newer = BookingFactory(customer=customer, offer=offer, status=S.EXPIRED)
    BookingFactory(customer=other_customer, offer=offer)

    response = web.get("/bookings/")

    assert [b.pk for b in response.context["page"].object_list] == [newer.pk, older.pk]
    page = response.content.decode()
    assert page.index(newer.reference) < page.index(older.reference)
    assert "tag--failed" in page and "tag--confirmed" in page


def test_my_bookings_are_paginated(web, customer, offer):
    bookings = [BookingFactory(customer=customer, offer=offer) for _ in range(12)]

    first = web.get("/bookings/")
    second = web.get("/bookings/?page=2")

    assert len(first.context["page"].object_list) == 10
    assert [b.pk for b in second.context["page"].object_list] == [b.pk for b in bookings[1::-1]]
    assert "Page 2 of 2" in second.content.decode()
    assert web.get("/bookings/?page=zzz").context["page"].number == 1


def test_my_bookings_need_a_login(client):
    assert client.get("/bookings/")["Location"] == "/account/login/?next=/bookings/"


def test_a_poll_costs_four_queries(web, customer, offer, django_assert_num_queries):
    # every open progress page polls every few seconds: session, user, booking, its moves
    booking = progressed(customer, offer, S.REQUESTED, S.SUBMITTING)
    htmx(web, f"/bookings/{booking.reference}/status/")  # the partner's figures are now cached

    with django_assert_num_queries(4):
        response = htmx(web, f"/bookings/{booking.reference}/status/", seen="old")

    assert response.status_code == 200


def test_a_yen_quotes_page_tells_whole_yen_on_its_book_button_too(web, customer):
    """Reviewer: the summary said "15000 JPY" and the Book button under it "Book for 15000.00 JPY"."""
    offer = OfferFactory(currency="JPY", unit_price=Decimal("5000.00"))
    quote = QuoteFactory(customer=customer, offer=offer, total_price=Decimal("15000.00"), currency="JPY")

    page = web.get(f"/quotes/{quote.pk}/").content.decode()

    assert "Book for 15000 JPY" in page
    assert "15000.00" not in page
