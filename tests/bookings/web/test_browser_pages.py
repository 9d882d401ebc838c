"""Customer pages whose state the factories set, in headless Debian Chromium against the live
server: no partner nor payment process, since none of these pages asks them anything.

Offers priced by the day and by the night, each under its name; the quote of an offer withdrawn (or
whose partner paused) since the price was given, and the Book clicked on a page opened before that;
a quote whose hold expired; Book clicked on a page left open of a quote booked and expired since;
the cancel page of a booking the partner took away after confirming it, of one never sent to the
partner, and of one that cannot be cancelled any more; a cancel confirmed on a page that said free
after the partner confirmed; a page that is not there, a form posted from a page left open across a
new log-in, a server error, and the site briefly unable to reach its database; a password reset link
that no longer works. Each page state is checked with axe and screenshotted at phone width
(`tests.browser.shot`).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import OperationalError
from django.utils import timezone

from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Quote
from bookings.states import BookingState, CustomerMessage, CustomerStatus
from tests.browser import log_in, name_for_customers, open_quote, shot, status_text
from tests.factories import BookingFactory, OfferFactory, PartnerFactory, QuoteFactory, UserFactory
from tests.helpers import unique_code

S = BookingState
M = CustomerMessage
pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(120)]

PRICE = Decimal("360.00")


@pytest.fixture
def ada(transactional_db):
    return UserFactory(username="ada", email="ada@example.com")


@pytest.fixture
def offer(transactional_db):
    offer = OfferFactory(partner=PartnerFactory(code=unique_code("web")), capacity=4)
    name_for_customers(offer.partner)
    offer.refresh_from_db()
    return offer


# --- what a price is for ----------------------------------------------------------------------------
def test_a_tour_is_priced_by_the_day_and_a_room_by_the_night_each_under_its_name(
    page, live_server, ada, offer
):
    """Tester: a tour was priced "a night", and the demo offers showed product ids, not names."""
    tour = OfferFactory(
        partner=offer.partner,
        product_id="tour-7-city",
        name="Tour 7, city tour",
        price_unit="day",
        unit_price=Decimal("45.00"),
        capacity=6,
    )

    # the offers: each by its name, priced per its unit
    page.goto(f"{live_server.url}/")
    cards = {
        card.locator("h2").inner_text(): card.locator("dl").inner_text()
        for card in page.locator(".card").all()
    }
    assert "Price\n45.00 EUR a day" in cards["Tour 7, city tour"]
    assert "Price\n120.00 EUR a night" in cards["Double room, sea view"]
    assert "tour-7-city" not in page.inner_text("main")
    shot(page, "offers-units")

    # the tour's dates page, then its quote, count days
    log_in(page, live_server, ada)
    page.goto(f"{live_server.url}/offers/{tour.pk}/")
    main = page.inner_text("main")
    assert "45.00 EUR a day." in main and "a night" not in main
    assert "First day" in main and "Number of days" in main and "End date" not in main
    page.click("main button[type=submit]")  # nothing typed: each field says so, and the summary
    page.wait_for_selector("[data-error-summary]")
    assert "Number of days: This field is required." in page.inner_text("[data-error-summary]")
    shot(page, "dates-tour-errors")
    start = timezone.now().date() + timedelta(days=40)
    page.fill("#id_start_date", start.isoformat())
    page.fill("#id_days", "1")
    page.fill("#id_guests", "3")
    page.click("main button[type=submit]")
    page.wait_for_selector("#book")
    # a one-day tour is one day: its day, not that day to the next
    assert f"Dates\n{start.day} {start:%B} {start.year} (1 day)" in page.inner_text(".summary")
    assert "Total price\n45.00 EUR" in page.inner_text(".summary")
    shot(page, "quote-tour")


# --- the quote of an offer that cannot be booked now ----------------------------------------------
def withdraw(offer, how: str) -> None:
    """As the console does it: a save, which the catalogue's cache hears of."""
    if how == "withdrawn":
        offer.is_active = False
        offer.save(update_fields=["is_active"])
    else:
        offer.partner.enabled = False
        offer.partner.save(update_fields=["enabled"])


WHY = {
    "withdrawn": "This offer is no longer available.",
    "partner_paused": "This offer's partner is not taking bookings right now.",
}


@pytest.mark.parametrize("how", ["withdrawn", "partner_paused"])
def test_the_quote_of_an_offer_withdrawn_since_says_why_and_offers_no_book(
    page, live_server, ada, offer, how
):
    # given a price held for the customer, then the offer withdrawn (or its partner paused)
    open_quote(page, live_server, ada, offer)
    withdraw(offer, how)

    # when the customer opens the quote's page again, within the hold
    page.reload()
    quote = Quote.objects.get()
    assert not quote.is_expired()

    # then it says why it cannot be booked, and offers neither a hold nor Book nor a card
    assert page.inner_text("h1") == "Check your booking"
    unavailable = page.inner_text("#unavailable")
    assert WHY[how] in unavailable and "This price cannot be booked." in unavailable
    main = page.inner_text("main")
    assert "We hold this price for you" not in main and "What happens when you book" not in main
    assert page.locator("#book").count() == 0
    assert page.locator("form[action$='/book/']").count() == 0
    assert page.locator("[name=payment_method]").count() == 0
    # and no link leads to the offer's dates page, a 404 now that the offer is not bookable
    assert page.locator(f"a[href='/offers/{offer.pk}/']").count() == 0
    assert page.locator("text=Change dates or guests").count() == 0
    shot(page, f"quote-unavailable-{how}")

    # its way out goes to the offers still bookable
    page.click("#unavailable >> text=See the offers")
    page.wait_for_url(f"{live_server.url}/")
    assert "Double room, sea view" not in page.inner_text("main")


def test_book_on_a_quote_page_opened_before_the_offer_was_withdrawn_says_why_and_books_nothing(
    page, live_server, ada, offer
):
    # given the quote's page open with its Book button, then the offer withdrawn
    open_quote(page, live_server, ada, offer)
    assert page.locator("#book").count() == 1
    withdraw(offer, "withdrawn")

    # when the customer clicks Book
    page.click("#book")
    page.wait_for_selector("[data-error-summary]")

    # then nothing is booked: the error says why, the page no longer offers Book
    assert page.title().startswith("Error: ")
    assert WHY["withdrawn"] in page.inner_text("[data-error-summary]")
    assert "This price cannot be booked." in page.inner_text("#unavailable")
    assert "We hold this price for you" not in page.inner_text("main")
    assert page.locator("#book").count() == 0
    assert not ada.bookings.exists()
    shot(page, "quote-book-refused")


def test_an_expired_quote_says_so_and_leads_to_a_new_price(page, live_server, ada, offer):
    # given a quote whose hold ended
    quote = QuoteFactory(customer=ada, offer=offer, expires_at=timezone.now() - timedelta(minutes=1))
    log_in(page, live_server, ada)

    # when the customer opens it
    page.goto(f"{live_server.url}/quotes/{quote.pk}/")

    # then it says the price expired, with no Book, and leads to a new price for the offer
    main = page.inner_text("main")
    assert "has expired" in main and "We hold this price for you" not in main
    assert page.locator("#book").count() == 0
    shot(page, "quote-expired")
    page.click("main >> text=Get a new price")
    page.wait_for_url(f"{live_server.url}/offers/{offer.pk}/")


def test_book_on_a_page_left_open_of_a_quote_booked_and_expired_since_says_only_that_it_is_booked(
    page, live_server, ada, offer
):
    # given the quote's page open with Book, then the quote booked from another tab, its hold
    # ended since
    open_quote(page, live_server, ada, offer)
    quote = Quote.objects.get()
    booking = BookingFactory(
        customer=ada,
        offer=offer,
        quote=quote,
        start_date=quote.start_date,
        end_date=quote.end_date,
        guests=quote.guests,
        total_price=quote.total_price,
    )
    Quote.objects.filter(pk=quote.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    # when the customer picks a card on the open page and clicks Book
    page.select_option("[name=payment_method]", "pm_card_visa")
    page.click("#book")
    page.wait_for_selector("[data-error-summary]")

    # then it says the quote is booked and leads to the booking; nothing of the expiry
    assert "This quote is booked already" in page.inner_text("[data-error-summary]")
    main = page.inner_text("main")
    assert f"You have booked this already: booking {booking.reference}." in main
    assert "expired" not in main and "Get a new price" not in main
    assert page.locator("#book").count() == 0
    shot(page, "quote-booked-and-expired")
    page.click(f"main >> text=See how booking {booking.reference} is going")
    page.wait_for_url(f"{live_server.url}/bookings/{booking.reference}/")


# --- the cancel page --------------------------------------------------------------------------------
def disrupted(customer, offer, message: CustomerMessage, money: PaymentFacts):
    """Confirmed, then taken away by the partner (`message`) and handed to support, as the
    customer is shown it (as tests/bookings/test_cancelling.py builds it)."""
    reason = {
        M.DISRUPTED_PARTNER_CANCELLED: "partner_cancelled_confirmed",
        M.DISRUPTED_PARTNER_LOST: "partner_lost_reservation",
    }[message]
    return BookingFactory(
        customer=customer,
        offer=offer,
        status=S.NEEDS_ATTENTION,
        attention_reason=reason,
        submission_count=1,
        confirmed_shown_at=timezone.now() - timedelta(hours=1),
        customer_status=CustomerStatus.DISRUPTED,
        customer_message=message,
        customer_money=money_of(money).as_json(),
    )


TAKEN_AWAY = {
    # cancelled by the partner, and refunded in full already
    "cancelled-refunded": (
        M.DISRUPTED_PARTNER_CANCELLED,
        PaymentFacts("charged", "EUR", PRICE, PRICE, PRICE),
        "We have already refunded the 360.00 EUR we charged to your card, in full: there is nothing "
        "more to refund.",
    ),
    # lost by the partner, charged: the refund goes back whatever the customer does
    "lost-charged": (
        M.DISRUPTED_PARTNER_LOST,
        PaymentFacts("charged", "EUR", PRICE, PRICE),
        "We are refunding the 360.00 EUR you paid to your card, in full, as the partner no longer "
        "holds your booking: whether or not you cancel.",
    ),
}


def test_the_page_of_a_booking_the_partner_took_away_says_support_is_on_it_not_that_it_changed(
    page, live_server, ada, offer
):
    charged = PaymentFacts("charged", "EUR", PRICE, PRICE)
    booking = disrupted(ada, offer, M.DISRUPTED_PARTNER_CANCELLED, charged)
    log_in(page, live_server, ada)
    page.goto(f"{live_server.url}/bookings/{booking.reference}/")
    main = page.inner_text("main")
    support = "Our support team is sorting it out with Seaside Hotels and will email you what happens next."
    assert support in main
    assert "has changed since" not in main  # the partner cancelled it: not a change
    shot(page, "booking-disrupted-cancelled")


@pytest.mark.parametrize("bookable", [True, False], ids=["offer-bookable", "offer-withdrawn"])
def test_a_booking_that_did_not_go_ahead_offers_its_dates_again_only_while_the_offer_can_be_booked(
    page, live_server, ada, offer, bookable
):
    booking = BookingFactory(
        customer=ada,
        offer=offer,
        status=S.REJECTED,
        customer_status=CustomerStatus.FAILED,
        customer_message=M.DECLINED,
    )
    if not bookable:
        withdraw(offer, "withdrawn")
    log_in(page, live_server, ada)
    page.goto(f"{live_server.url}/bookings/{booking.reference}/")
    dates = page.locator("main a", has_text="choose other dates")
    if bookable:
        dates.click()
        page.wait_for_url(f"{live_server.url}/offers/{offer.pk}/")
        assert page.locator("h1").count() == 1 and "Page not found" not in page.inner_text("h1")
    else:
        # its dates page is a 404 now: only the offers are offered
        assert dates.count() == 0
        assert "this offer cannot be booked any more" in page.inner_text("main")
        page.click("main a:has-text('choose another offer')")
        page.wait_for_url(f"{live_server.url}/")
        shot(page, "booking-failed-offer-withdrawn-then-offers")


@pytest.mark.parametrize("case", list(TAKEN_AWAY))
def test_the_cancel_page_of_a_booking_the_partner_took_away_says_there_is_nothing_to_cancel_with_them(
    page, live_server, ada, offer, case
):
    message, money, money_words = TAKEN_AWAY[case]
    booking = disrupted(ada, offer, message, money)
    log_in(page, live_server, ada)
    page.goto(f"{live_server.url}/bookings/{booking.reference}/")
    assert message.label in status_text(page)

    # when the customer opens the cancel page from the booking's page
    page.click("text=Cancel this booking")
    page.wait_for_url(f"{live_server.url}/bookings/{booking.reference}/cancel/")

    # then it says what cancelling does now: nothing to ask the partner, the money as it stands
    assert page.inner_text("h1") == "Are you sure you want to cancel this booking?"
    main = page.inner_text("main")
    assert "Seaside Hotels no longer holds your booking, so there is nothing left to cancel with them" in main
    assert "It shows as Cancelled once we have closed it." in main
    assert page.inner_text("[data-cancel-money]") == money_words
    why = "Cancelling is free: the partner no longer holds the booking they confirmed."
    assert page.inner_text(".cancel-money__why") == why
    # and none of the words of a booking the partner still holds, or never confirmed
    for untrue in ("We ask Seaside Hotels", "it still exists with them", "Cancelling,", "has not confirmed"):
        assert untrue not in main, untrue
    assert "has not been sent to" not in main
    assert page.locator("main button", has_text="Yes, cancel this booking").count() == 1
    assert page.locator("main a", has_text="No, keep my booking").count() == 1
    shot(page, f"cancel-disrupted-{case}")


def test_the_cancel_page_of_a_booking_not_sent_yet_says_the_partner_never_hears_of_it(
    page, live_server, ada, offer
):
    # given a booking waiting for its payment: not sent to the partner yet
    booking = BookingFactory(customer=ada, offer=offer, status=S.REQUESTED)
    log_in(page, live_server, ada)

    page.goto(f"{live_server.url}/bookings/{booking.reference}/cancel/")

    assert page.inner_text("h1") == "Are you sure you want to cancel this booking?"
    main = page.inner_text("main")
    assert "has not been sent to Seaside Hotels yet, so there is nothing to cancel with them" in main
    assert "We ask Seaside Hotels" not in main and "still exists with them" not in main
    assert "no longer holds your booking" not in main
    assert page.locator("main button", has_text="Yes, cancel this booking").count() == 1
    shot(page, "cancel-not-sent")


def test_a_cancel_confirmed_on_a_page_that_said_free_is_shown_the_new_fee_before_anything_is_cancelled(
    page, live_server, ada, offer, broker
):
    # given a last-minute booking (it starts in 2 days; free cancellation ended 60 days before
    # its start) the partner has not confirmed yet: its money is held, and cancelling is free
    type(offer).objects.filter(pk=offer.pk).update(
        free_cancellation_hours=60 * 24, cancellation_fee_percent=25
    )
    offer.refresh_from_db()  # the booking keeps the offer's terms as they are when it is made
    booking = BookingFactory(
        customer=ada,
        offer=offer,
        status=S.PENDING_PARTNER,
        submission_count=1,
        start_date=timezone.now().date() + timedelta(days=2),
        customer_money=money_of(PaymentFacts("held", "EUR", PRICE)).as_json(),
    )
    log_in(page, live_server, ada)
    page.goto(f"{live_server.url}/bookings/{booking.reference}/cancel/")
    assert page.inner_text("[data-cancel-money]").endswith("you will not be charged.")

    # when the partner confirms it while the page is open, and the customer presses "Yes, cancel"
    type(booking).objects.filter(pk=booking.pk).update(status=S.CONFIRMED, confirmed_shown_at=timezone.now())
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("text=Yes, cancel this booking")

    # then the page comes back, focused on why: the cost changed, nothing is cancelled, and what
    # cancelling does now, with the button to confirm it at that cost
    assert answer.value.status == 409
    page.wait_for_selector("[data-error-summary]")
    assert page.evaluate("document.activeElement.matches('[data-error-summary]')")
    assert page.url == f"{live_server.url}/bookings/{booking.reference}/cancel/"
    refusal = page.inner_text("[data-error-summary]")
    assert "Cancelling is no longer free: it now costs a cancellation fee of 90.00 EUR." in refusal
    assert "Nothing has been cancelled" in refusal
    money = page.inner_text("[data-cancel-money]")
    assert "we keep the cancellation fee of 90.00 EUR" in money
    assert "you will not be charged" not in money
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CONFIRMED, None)
    shot(page, "cancel-fee-changed")

    # and confirming on that page cancels, at the fee it shows
    page.click("text=Yes, cancel this booking")
    page.wait_for_url(f"{live_server.url}/bookings/{booking.reference}/")
    assert "CANCELLING" in status_text(page)
    booking.refresh_from_db()
    assert (booking.status, booking.cancellation_fee) == (S.CANCEL_REQUESTED, Decimal("90.00"))


@pytest.mark.parametrize("status", [S.CANCELLED, S.REJECTED])
def test_the_cancel_page_of_a_booking_that_cannot_be_cancelled_says_so_and_offers_no_cancel(
    page, live_server, ada, offer, status
):
    booking = BookingFactory(customer=ada, offer=offer, status=status)
    log_in(page, live_server, ada)

    page.goto(f"{live_server.url}/bookings/{booking.reference}/cancel/")

    assert page.inner_text("h1") == "This booking cannot be cancelled now"
    main = page.inner_text("main")
    assert booking.customer_message_text in main
    assert "Are you sure" not in main and "What happens if you cancel" not in main
    assert page.locator("main button").count() == 0
    page.click(f"main >> text=Back to booking {booking.reference}")
    page.wait_for_url(f"{live_server.url}/bookings/{booking.reference}/")
    assert page.locator("text=Cancel this booking").count() == 0
    page.go_back()
    shot(page, f"cancel-refused-{status}")


# --- error pages ----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/bookings/BK-NOSUCH1/", "/no-such-page/"])
def test_a_page_that_is_not_there_says_so_in_the_sites_own_page(page, live_server, ada, path):
    # a booking that is not there (or another customer's: the same 404), or a mistyped address
    log_in(page, live_server, ada)

    response = page.goto(f"{live_server.url}{path}")

    assert response.status == 404
    assert page.inner_text("h1") == "Page not found"
    assert page.title().startswith("Page not found ")
    # the site's own page, with ways on: the customer's bookings and the offers
    assert page.locator("header >> text=My bookings").count() == 1
    assert page.locator("main a[href='/bookings/']").count() == 1
    assert page.locator("main a[href='/']").count() == 1
    shot(page, "not-found")


def test_a_form_posted_from_a_page_left_open_across_a_new_log_in_is_the_sites_page_and_books_nothing(
    page, open_page, live_server, ada, offer, broker
):
    # given the quote's page open with its Book button, and the customer logging out and in
    # again in another tab of the same browser (a new log-in renews the form's security token)
    quote_page = open_quote(page, live_server, ada, offer)
    other_tab = page.context.new_page()
    other_tab.goto(f"{live_server.url}/bookings/")
    other_tab.click("header >> text=Log out")
    other_tab.wait_for_url(f"{live_server.url}/")
    log_in(other_tab, live_server, ada)

    # when the customer clicks Book on the page left open
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#book")

    # then the site's own page says what happened and what to do, and nothing was booked
    assert answer.value.status == 403
    assert page.inner_text("h1") == "This page has expired"
    main = page.inner_text("main")
    assert "nothing was done: nothing was booked, changed or cancelled" in main
    assert "Go back, reload the page, and try again." in main
    assert "DEBUG" not in page.content() and "CSRF" not in page.content()
    assert page.locator("header >> text=My bookings").count() == 1
    assert not ada.bookings.exists()
    shot(page, "form-expired")

    # and doing so books: the reloaded page's form is good again
    page.go_back()
    page.reload()
    assert page.url == quote_page
    page.click("#book")
    page.wait_for_url(f"{live_server.url}/bookings/BK-*/")
    assert ada.bookings.count() == 1


def test_a_server_error_is_the_sites_own_page_saying_to_try_again(
    page, live_server, monkeypatch, transactional_db
):
    # given a page that fails (the live server runs in this process)
    def broken():
        raise RuntimeError("a bug")

    monkeypatch.setattr("bookings.web.views.selectors.bookable_offers", broken)

    response = page.goto(f"{live_server.url}/")

    assert response.status == 500
    assert page.inner_text("h1") == "Sorry, something went wrong"
    assert page.title().startswith("Something went wrong ")
    assert "Please try again later." in page.inner_text("main")
    assert "a bug" not in page.content()
    shot(page, "server-error")


def test_the_database_out_of_reach_is_a_page_saying_to_try_again(
    page, live_server, monkeypatch, transactional_db
):
    # given the database refusing connections (the live server runs in this process)
    def unreachable():
        raise OperationalError("connection refused")

    monkeypatch.setattr("bookings.web.views.selectors.bookable_offers", unreachable)

    response = page.goto(f"{live_server.url}/")

    assert response.status == 503
    assert response.headers["retry-after"]
    assert page.inner_text("h1") == "We are briefly unavailable"
    assert "Please try again in a few seconds." in page.inner_text("main")
    shot(page, "unavailable")


def test_a_password_reset_link_that_no_longer_works_says_so_and_offers_a_new_one(page, live_server, ada):
    page.goto(f"{live_server.url}/account/reset/MQ/not-a-token/")

    assert page.inner_text("h1") == "This link does not work any more"
    assert page.locator("#id_new_password1").count() == 0
    shot(page, "password-link-expired")
    page.click("main >> text=Ask for a new link")
    page.wait_for_url(f"{live_server.url}/account/password-reset/")
