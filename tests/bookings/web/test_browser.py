"""The customer site in a real browser: headless Debian Chromium driven by Playwright, against the
live server, a real Dramatiq worker, a real sandbox partner (tests/partners/conftest.py) and the
real SMTP sink.

Sign up and log in; offers, quote, book, and the progress page going from pending to confirmed
without a reload; Book clicked twice, a reload after the connection dropped during the booking,
and Book tried again after the connection was cut, each making one booking under one
Idempotency-Key (the one the page made, or the quote's without script); cancelling through its
confirmation page, `cancelling` then `cancelled`; the password reset by email. Each page state is
screenshotted at phone width (a few at desktop width too) as small PNGs: into
artifacts/screenshots/, or where CUSTOMER_SCREENSHOTS_DIR says (docs/img/ for docs/customer.md).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, time, timedelta
from urllib.parse import parse_qs

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from bookings import services
from bookings.models import Booking, Quote
from bookings.states import BookingState
from tests.browser import DESKTOP, PHONE, log_in, name_for_customers, open_quote, shot, status_text
from tests.factories import PASSWORD, OfferFactory, PartnerFactory, TokenFactory, UserFactory
from tests.helpers import unique_code, wait_until
from tests.partners.conftest import wait_for_status

S = BookingState
pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def ada(transactional_db):
    return UserFactory(username="ada", email="ada@example.com")


def book_key(request) -> str:
    """The Idempotency-Key a Book request carries (its form's hidden field; empty without script)."""
    return parse_qs(request.post_data or "", keep_blank_values=True)["idempotency_key"][0]


def assert_key_made_by_the_page(page, booking: Booking) -> None:
    """The booking's key is the random UUID the page's script made and keeps in the tab."""
    key = booking.idempotency_key
    assert uuid.UUID(key).version == 4 and str(uuid.UUID(key)) == key
    kept = page.evaluate("(name) => sessionStorage.getItem(name)", f"attempt-key:quote-{booking.quote_id}")
    assert kept == key


# --- accounts -------------------------------------------------------------------------------------
def test_sign_up_then_log_out_and_in_again(page, live_server, transactional_db):
    # a visitor opens the shop and goes to create an account
    page.goto(f"{live_server.url}/")
    page.click("header >> text=Create an account")
    page.click("main button[type=submit]")

    # an empty form: the error summary comes first and has the focus; each field says its error
    assert page.evaluate("document.activeElement.matches('[data-error-summary]')")
    assert page.title().startswith("Error: ")
    assert page.inner_text("#id_username_error").endswith("This field is required.")
    shot(page, "signup-errors")

    page.fill("#id_username", "grace")
    page.fill("#id_email", "grace@example.com")
    page.fill("#id_password1", "a-long-password-42")
    page.fill("#id_password2", "a-long-password-42")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    assert "Your account is ready. You are logged in as grace." in page.inner_text(".banner")

    # logging out, then in again with the new password
    page.click("header >> text=Log out")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("header >> text=Log in").count() == 1
    page.goto(f"{live_server.url}/account/login/")
    page.fill("#id_username", "grace")
    page.fill("#id_password", "not-the-password")
    page.click("main button[type=submit]")
    assert "Please enter a correct username and password" in page.inner_text(".error-summary")
    shot(page, "login-error")
    page.fill("#id_password", "a-long-password-42")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/bookings/")
    assert "You have no bookings yet." in page.inner_text("main")


def test_too_many_wrong_passwords_pause_logging_in_and_say_for_how_long(page, live_server, ada):
    for _ in range(5):
        page.goto(f"{live_server.url}/account/login/")
        page.fill("#id_username", "ada")
        page.fill("#id_password", "not-the-password")
        page.click("main button[type=submit]")

    assert page.inner_text("h1") == "Too many attempts to log in"
    assert "paused for 15 minutes, even with the right password" in page.inner_text("main")
    shot(page, "login-locked")
    page.click("text=choose a new one")
    page.wait_for_url(f"{live_server.url}/account/password-reset/")


def test_a_forgotten_password_is_reset_through_the_emailed_link(page, live_server, ada, mail_sink, settings):
    settings.SITE_URL = live_server.url  # the mail's link is on the site's address
    page.goto(f"{live_server.url}/account/login/")
    page.click("text=Forgotten your password?")
    shot(page, "password-reset")
    page.fill("#id_email", "ada@example.com")
    page.click("main button[type=submit]")
    assert "Check your email" in page.inner_text("h1")
    shot(page, "password-reset-sent")

    # the mail reached the SMTP server; its link opens the page to choose a new password
    (mail,) = mail_sink.messages()
    link = re.search(r"http://\S+/account/reset/\S+/", mail.get_body(("plain",)).get_content()).group(0)
    page.goto(link)
    page.fill("#id_new_password1", "the-new-password-42")
    page.fill("#id_new_password2", "the-new-password-42")
    shot(page, "password-new")
    page.click("main button[type=submit]")
    assert "Your password is changed" in page.inner_text("h1")

    page.click("main >> text=Log in")
    page.fill("#id_username", "ada")
    page.fill("#id_password", "the-new-password-42")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{live_server.url}/bookings/")


# --- booking --------------------------------------------------------------------------------------
def test_offers_quote_book_and_the_progress_page_goes_from_pending_to_confirmed(
    page, open_page, live_server, ada, harness, partner_worker
):
    # given a partner that confirms a few seconds after it acknowledges, and a worker
    h = harness("reference")
    h.faults(async_confirm_delay_s=4)
    name_for_customers(h.partner)
    partner_worker(h.partner)

    # the customer picks the offer; the site asks them to log in first, then returns
    page.goto(f"{live_server.url}/")
    shot(page, "offers")
    page.click("text=Choose dates")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.click("main button[type=submit]")
    assert page.inner_text("h1") == "When and for how many?"

    # dates in the past and too many guests: the rules' own words, beside each field
    page.fill("#id_start_date", "2020-01-01")
    page.fill("#id_end_date", "2020-01-01")
    page.fill("#id_guests", "9")
    page.click("main button[type=submit]")
    errors = page.inner_text(".error-summary")
    assert (
        "The start date must be in the future." in errors and "This offer takes at most 4 guests." in errors
    )
    assert page.inner_text("#id_guests_error").endswith("This offer takes at most 4 guests.")
    shot(page, "stay-errors")

    start = timezone.now().date() + timedelta(days=40)
    page.fill("#id_start_date", start.isoformat())
    page.fill("#id_end_date", (start + timedelta(days=3)).isoformat())
    page.fill("#id_guests", "2")
    page.click("main button[type=submit]")
    assert page.inner_text("h1") == "Check your booking"
    assert "360.00 EUR" in page.inner_text("main") and "We hold this price for you until" in page.inner_text(
        "main"
    )
    shot(page, "quote")

    # when they book, the progress page says pending at once
    page.click("#book")
    page.wait_for_url(re.compile(r".*/bookings/BK-\w+/$"))
    booking = Booking.objects.get()
    assert "PENDING" in status_text(page)
    shot(page, "progress-pending")

    # then the page follows the booking without a reload: the partner confirming, then confirmed
    page.evaluate("window.sameDocument = true; window.liveRegion = document.getElementById('booking-status')")
    page.wait_for_selector("#booking-progress >> text=The partner is confirming", timeout=20_000)
    shot(page, "progress-partner-confirming")
    page.wait_for_selector("#booking-status .tag--confirmed", timeout=30_000)
    assert "Your booking is confirmed." in status_text(page)
    assert page.evaluate(
        "window.sameDocument && window.liveRegion === document.getElementById('booking-status')"
    )
    assert page.locator("#booking-poller").count() == 0  # the poll stopped
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    steps = page.inner_text("#booking-steps")
    assert steps.index("Booking received") < steps.index("Sent to the partner") < steps.index("Confirmed by")
    (reservation,) = h.truth(booking)
    assert reservation["id"] not in page.content() and h.partner.code not in page.content()
    shot(page, "progress-confirmed")

    page.click("header >> text=My bookings")
    assert booking.reference in page.inner_text("main")
    shot(page, "bookings")

    desktop = open_page(**DESKTOP)
    log_in(desktop, live_server, ada)
    shot(desktop, "bookings-desktop")
    desktop.goto(f"{live_server.url}/bookings/{booking.reference}/")
    shot(desktop, "progress-confirmed-desktop")
    desktop.goto(f"{live_server.url}/")
    shot(desktop, "offers-desktop")


@pytest.mark.parametrize("javascript", [True, False], ids=["with-js", "without-js"])
def test_book_clicked_twice_makes_one_booking(open_page, live_server, ada, harness, javascript):
    h = harness("reference")
    page = open_page(**PHONE, java_script_enabled=javascript)
    open_quote(page, live_server, ada, h.partner.offers.get())
    posts = []
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/book/") and posts.append(r))
    held = []
    page.route("**/book/", lambda route: held.append(route))  # until both clicks are made

    # when the customer clicks Book twice, a moment apart (raw clicks: nothing waits in between)
    page.locator("#book").scroll_into_view_if_needed()
    box = page.locator("#book").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.click(x, y)
    page.wait_for_timeout(300)
    page.mouse.click(x, y)
    sent = 1 if javascript else 2  # the script disables the button while its request is out
    # (Playwright delivers the page's requests to the route while the test waits inside it)
    wait_until(lambda: page.wait_for_timeout(20) or len(held) == sent, what=f"{sent} Book requests")

    # and every request the browser sent reaches the server, even one it gave up waiting for
    answers = [route.fetch(max_redirects=0) for route in held]
    for route, answer in zip(held, answers, strict=True):
        route.fulfill(response=answer)
    page.wait_for_url(re.compile(r".*/bookings/BK-\w+/$"))

    # then with the script the second click sent nothing; without it, the server saw both
    # and answered both with the one booking
    booking = Booking.objects.get()
    assert len(posts) == sent
    assert {a.headers["location"] for a in answers} == {f"/bookings/{booking.reference}/"}
    assert page.url == f"{live_server.url}/bookings/{booking.reference}/"
    # under the attempt's key: the page's own with the script, the quote's without it
    assert [book_key(post) for post in posts] == ([booking.idempotency_key] if javascript else ["", ""])
    if javascript:
        assert_key_made_by_the_page(page, booking)
    else:
        assert booking.idempotency_key == f"quote-{booking.quote_id}"


def test_a_reload_after_the_connection_dropped_during_book_makes_one_booking(page, live_server, ada, harness):
    h = harness("reference")
    open_quote(page, live_server, ada, h.partner.offers.get())
    posts = []
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/book/") and posts.append(r))

    # given a Book request that reached the server, whose answer was lost with the connection
    first_answer = []

    def drop_the_first_answer(route):
        if first_answer:
            route.continue_()
            return
        first_answer.append(route.fetch(max_redirects=0))
        route.abort("connectionreset")

    page.route("**/book/", drop_the_first_answer)
    page.click("#book")
    page.wait_for_url(re.compile(r"^chrome-error://"))  # the browser's "connection reset" page
    booking = Booking.objects.get()
    assert first_answer[0].headers["location"] == f"/bookings/{booking.reference}/"
    shot(page, "connection-dropped", ours=False)

    # when the customer reloads, the browser sends the booking again
    page.reload()

    # then it lands on the booking it already made: one booking, both requests under its key
    assert len(posts) == 2
    assert page.url == f"{live_server.url}/bookings/{booking.reference}/"
    assert Booking.objects.count() == 1
    assert [book_key(post) for post in posts] == [booking.idempotency_key] * 2
    assert_key_made_by_the_page(page, booking)

    # and the quote's page, opened again, shows the booking instead of a Book button
    quote = booking.quote
    page.goto(f"{live_server.url}/quotes/{quote.pk}/")
    assert f"You have booked this already: booking {booking.reference}." in page.inner_text("main")
    assert page.locator("#book").count() == 0
    shot(page, "quote-already-booked")


@pytest.mark.parametrize("cut", ["before-it-reached-us", "after-we-booked"])
def test_book_tried_again_after_the_connection_was_cut_makes_one_booking_under_the_pages_key(
    page, live_server, ada, harness, cut
):
    h = harness("reference")
    open_quote(page, live_server, ada, h.partner.offers.get())
    posts = []
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/book/") and posts.append(r))

    # given a Book request whose connection is cut: before it reached us, or once we booked
    first = []

    def cut_the_first(route):
        if first:
            route.continue_()
            return
        first.append(route.fetch(max_redirects=0) if cut == "after-we-booked" else None)
        route.abort("connectionreset")

    page.route("**/book/", cut_the_first)
    page.click("#book")
    page.wait_for_url(re.compile(r"^chrome-error://"))
    assert Booking.objects.count() == (1 if cut == "after-we-booked" else 0)

    # when the customer goes back to the quote and tries again
    page.go_back()
    assert page.inner_text("h1") == "Check your booking"
    if cut == "after-we-booked":
        # the quote's page knows it is booked: no Book button, a link to the booking
        assert page.locator("#book").count() == 0
        page.click("main >> text=See how booking")
    else:
        page.click("#book")
    page.wait_for_url(re.compile(r".*/bookings/BK-\w+/$"))

    # then there is one booking, made under the key the page made for the attempt, which every
    # Book request sent (the retry's page read it back from the tab)
    booking = Booking.objects.get()
    assert page.url == f"{live_server.url}/bookings/{booking.reference}/"
    assert [book_key(post) for post in posts] == [booking.idempotency_key] * (
        2 if cut == "before-it-reached-us" else 1
    )
    assert_key_made_by_the_page(page, booking)


# --- cancelling -----------------------------------------------------------------------------------
def test_cancel_asks_first_then_shows_cancelling_until_the_partner_cancelled(
    page, live_server, ada, harness, partner_worker
):
    # given a confirmed booking at a real partner
    h = harness("reference")
    name_for_customers(h.partner)
    partner_worker(h.partner)
    start = timezone.now().date() + timedelta(days=40)
    booking = services.booking_create(
        customer=ada,
        request=services.BookingRequest(
            offer_id=h.partner.offers.get().pk, start_date=start, end_date=start + timedelta(days=3), guests=2
        ),
        idempotency_key="browser-cancel",
    ).booking
    wait_for_status(booking, S.CONFIRMED)
    log_in(page, live_server, ada)
    page.goto(f"{live_server.url}/bookings/{booking.reference}/")

    # the customer opens the cancel page: it says what will happen, and changes nothing yet
    page.click("text=Cancel this booking")
    assert page.inner_text("h1") == "Are you sure you want to cancel this booking?"
    assert "You cannot undo a cancellation." in page.inner_text("main")
    shot(page, "cancel-confirm")
    page.click("text=No, keep my booking")
    assert "CONFIRMED" in status_text(page)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED

    # when they confirm, with the partner slow to answer, the booking shows cancelling
    h.faults(latency_ms=[700, 700])
    page.click("text=Cancel this booking")
    page.click("text=Yes, cancel this booking")
    page.wait_for_url(f"{live_server.url}/bookings/{booking.reference}/")
    assert "CANCELLING" in status_text(page)
    assert "your booking still exists with them" in page.inner_text("#booking-progress")
    shot(page, "cancelling")

    # then, once the partner cancelled it, the page says so without a reload
    page.wait_for_selector("#booking-status .tag--cancelled", timeout=30_000)
    assert "Your booking is cancelled." in status_text(page)
    assert [s["status"] for s in h.truth(booking)] == ["cancelled"]
    wait_until(lambda: page.locator("#booking-poller").count() == 0, what="the poll to stop")
    shot(page, "cancelled")


# --- the cancellation policy, before Book ---------------------------------------------------------
def test_the_quote_page_says_what_cancelling_costs_for_the_stay_before_book(page, live_server, ada):
    # given an offer free to cancel until 48 hours before the start, then a quarter of the price
    partner = PartnerFactory(code=unique_code("web"), name="Seaside Hotels")
    offer = OfferFactory(
        partner=partner, name="Double room, sea view", free_cancellation_hours=48, cancellation_fee_percent=25
    )

    # the offers page states the rule before any dates are chosen
    page.goto(f"{live_server.url}/")
    rule = "Cancelling is free until 48 hours before the start; from then on the fee is 25% of the price."
    assert rule in page.inner_text("main")

    # when the customer has the price of three nights in 40 days (360.00 EUR)
    open_quote(page, live_server, ada, offer)
    quote = Quote.objects.get()
    cut_off = datetime.combine(quote.start_date, time.min, tzinfo=UTC) - timedelta(hours=48)

    # then the quote's page says, before Book, until when cancelling these dates is free and the
    # fee after that for this price
    policy = page.locator("[data-cancel-policy]")
    words = (
        f"Cancelling is free until {cut_off.day} {cut_off:%b %Y}, 00:00 UTC (48 hours before the start); "
        "from then on the fee is 25% of the price, 90.00 EUR. A fee is only ever taken from the card "
        "you book with, and only once the partner has confirmed your booking: until then, cancelling "
        "is free."
    )
    assert policy.inner_text() == words
    assert policy.is_visible()
    assert page.evaluate(
        "() => Boolean(document.querySelector('[data-cancel-policy]')"
        ".compareDocumentPosition(document.getElementById('book')) & Node.DOCUMENT_POSITION_FOLLOWING)"
    )
    shot(page, "quote-cancellation")

    # and the API's quote of the same stay says the same, with the cut-off and the fee as fields
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {TokenFactory(user=ada).key}")
    body = {
        "offer": offer.pk,
        "start_date": quote.start_date.isoformat(),
        "end_date": quote.end_date.isoformat(),
        "guests": 2,
    }
    told = api.post("/api/v1/quotes", body, format="json").json()["cancellation"]
    assert (told["message"], told["fee"], told["free_until"]) == (
        words,
        "90.00",
        cut_off.isoformat().replace("+00:00", "Z"),
    )
