"""Paying on the customer's page against the real processes, in headless Debian Chromium: the
pages from the live server and the booking's stream from a real events process, both behind the
router; a real Dramatiq worker taking the partner's queue and the `payments` queue; a real sandbox
partner; and the payment provider (the sandbox's `payments` profile, speaking Stripe's API to the
SDK) whose signed webhooks reach the live server.

The customer picks a test card on the quote's page and clicks Book, then leaves the page alone.
Each test states what the page and the API say about the money, in the customer's words, against
our payment row and the provider's own ground truth (`assert_money_at_rest`: one authorization
at most, none left held, captured - refunded = what the booking owes, no refund twice, never
captured before the partner confirmed) and the partner's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest

from bookings import live
from bookings.models import Booking
from bookings.states import BookingState, CustomerMessage, CustomerMoney
from payments.models import PaymentStatus
from tests.browser import name_for_customers, open_quote, record_shown, shot, shown, status_text
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.payments import conftest as payment_fixtures
from tests.payments.conftest import assert_money_at_rest, payment_of, wait_for_money
from tests.streams import STOPPED_CLEANLY, ServerProcess, followers, start_events, start_router

S = BookingState
M = CustomerMessage
MONEY = CustomerMoney
P = PaymentStatus
pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(150)]

# The provider whose webhooks reach the live server, and a worker on the partner's and the
# payments queues (tests/payments/conftest.py).
webhook_provider = payment_fixtures.webhook_provider
paying_idle = payment_fixtures.paying_idle
paying = payment_fixtures.paying

PAGE_NEWS_TIMEOUT_MS = 30_000  # generous for a busy two-core machine; ends when the page shows it
PRICE = Decimal("360.00")  # 3 nights at 120.00 EUR (the reference partner's offer)


@pytest.fixture(scope="module")
def events(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    process = start_events(tmp_path_factory.mktemp("events"))
    yield process
    assert process.stop() in STOPPED_CLEANLY, process.log()


@pytest.fixture
def site(live_server, events, tmp_path) -> Iterator[ServerProcess]:
    """The router in front of the live server (the pages) and the events process (the streams)."""
    router = start_router(tmp_path, web_port=int(live_server.url.rsplit(":", 1)[1]), events_port=events.port)
    yield router
    assert router.stop() in STOPPED_CLEANLY, router.log()


@pytest.fixture
def ada(transactional_db):
    return UserFactory(username="ada", email="ada@example.com")


def pay_on_the_page(page, site, user, offer, card: str, *, on_the_quote=None) -> Booking:
    """Open a fresh quote (`on_the_quote(page)` reads it first), choose the test card, click
    Book, land on the booking's page and mark its document; the page follows the booking's
    stream."""
    record_shown(page)
    open_quote(page, site, user, offer)
    if on_the_quote is not None:
        on_the_quote(page)
    page.select_option("select[name=payment_method]", card)
    page.click("#book")
    page.wait_for_url(re.compile(r".*/bookings/BK-\w+/$"))
    page.evaluate("window.sameDocument = true")
    booking = Booking.objects.get()
    wait_until(lambda: followers(live.booking_channel(booking.pk)), what="the page to follow its stream")
    return booking


def money_on_the_page(page) -> str:
    return page.inner_text("#booking-status .status-panel__money")


def money_in_the_api(page, site, booking: Booking) -> dict:
    """The API's money for the booking, asked with the page's own session."""
    response = page.request.get(f"{site.url}/api/v1/bookings/{booking.reference}")
    assert response.status == 200, response.text()
    return response.json()["money"]


def statuses(page) -> list[str]:
    runs: list[str] = []
    for state in shown(page):
        if not runs or runs[-1] != state.status:
            runs.append(state.status)
    return runs


# --- a card that pays -----------------------------------------------------------------------------
def test_a_card_that_pays_confirms_the_booking_and_charges_it_once(page, site, ada, paying):
    # given the reference partner and the provider, without faults
    name_for_customers(paying.h.partner)

    # when the customer books with the test card that succeeds
    booking = pay_on_the_page(page, site, ada, paying.h.partner.offers.get(), "pm_card_visa")

    # then the page says confirmed and charged, in place
    page.wait_for_selector("#booking-status .tag--confirmed", timeout=PAGE_NEWS_TIMEOUT_MS)
    wait_for_money(booking, "charged")
    page.wait_for_selector('#booking-status [data-money-code="charged"]', timeout=PAGE_NEWS_TIMEOUT_MS)
    assert page.evaluate("window.sameDocument === true")
    charged = "We charged 360.00 EUR to your card."
    assert MONEY.CHARGED.label.format(charged="360.00 EUR") == charged
    assert "Your booking is confirmed." in status_text(page)
    assert money_on_the_page(page) == charged
    assert money_in_the_api(page, site, booking) == {
        "code": "charged",
        "message": charged,
        "currency": "EUR",
        "amount": "360.00",
        "charging": None,
        "charged": "360.00",
        "refunded": "0.00",
        "refund_failed": "0.00",
        "refunded_outside": "0.00",
        "lapses_at": None,
    }
    assert statuses(page)[-1] == "confirmed" and "failed" not in statuses(page)

    # and the provider holds one intent, captured for the price, after the partner confirmed
    assert_money_at_rest(paying, booking, owed=PRICE, code="charged")
    [intent] = paying.intents(booking)
    assert (intent["status"], intent["amount_received"]) == ("succeeded", 36_000)
    [reservation] = paying.h.truth(booking)
    assert reservation["status"] == "confirmed"
    assert payment_of(booking).status == P.CAPTURED
    shot(page, "pay-charged")


# --- a card the provider places in review -----------------------------------------------------------
def test_a_card_placed_in_review_is_told_so_while_it_is_held_then_charged_as_any_other(
    page, site, ada, paying
):
    # given a partner that takes a few seconds to confirm, so the hold is what the page shows first
    name_for_customers(paying.h.partner)
    paying.h.faults(async_confirm_delay_s=6)

    # when the customer books with the test card the provider authorizes and places in review
    booking = pay_on_the_page(page, site, ada, paying.h.partner.offers.get(), "pm_card_riskLevelElevated")

    # then, while the partner confirms, the page says the hold is in review, in place
    page.wait_for_selector('#booking-status [data-money-code="held_in_review"]', timeout=PAGE_NEWS_TIMEOUT_MS)
    in_review = (
        "We are holding 360.00 EUR on your card, and our payment provider has placed the payment in "
        "review; you are not charged yet."
    )
    assert MONEY.HELD_IN_REVIEW.label.format(amount="360.00 EUR") == in_review
    assert money_on_the_page(page) == in_review
    assert money_in_the_api(page, site, booking)["message"] == in_review
    assert payment_of(booking).in_review  # support's flag, as before
    shot(page, "pay-in-review")

    # and once the partner confirms, it is charged as any other card
    page.wait_for_selector("#booking-status .tag--confirmed", timeout=PAGE_NEWS_TIMEOUT_MS)
    wait_for_money(booking, "charged")
    page.wait_for_selector('#booking-status [data-money-code="charged"]', timeout=PAGE_NEWS_TIMEOUT_MS)
    assert page.evaluate("window.sameDocument === true")
    assert money_on_the_page(page) == "We charged 360.00 EUR to your card."
    assert_money_at_rest(paying, booking, owed=PRICE, code="charged")


# --- a declined card ------------------------------------------------------------------------------
def test_a_declined_card_shows_not_confirmed_with_the_reason_and_the_partner_never_hears_of_it(
    page, site, ada, paying
):
    name_for_customers(paying.h.partner)

    booking = pay_on_the_page(page, site, ada, paying.h.partner.offers.get(), "pm_card_chargeDeclined")

    # then the page says it did not go ahead, and why, in place
    page.wait_for_selector("#booking-status .tag--failed", timeout=PAGE_NEWS_TIMEOUT_MS)
    wait_for_money(booking, "declined")
    page.wait_for_selector('#booking-status [data-money-code="declined"]', timeout=PAGE_NEWS_TIMEOUT_MS)
    assert page.evaluate("window.sameDocument === true")
    declined = "Your bank declined the payment of 360.00 EUR: you were not charged."
    assert M.PAYMENT_DECLINED.label in status_text(page)
    assert money_on_the_page(page) == declined
    api = money_in_the_api(page, site, booking)
    assert (api["code"], api["message"], api["charged"]) == ("declined", declined, "0.00")
    assert "confirmed" not in statuses(page)

    # and the partner never received a create; nothing is held at the provider
    booking.refresh_from_db()
    assert (booking.status, booking.submission_count) == (S.FAILED, 0)
    assert paying.h.truth(booking) == []
    assert_money_at_rest(paying, booking, owed=Decimal("0.00"), code="declined")
    assert all(intent["status"] != "requires_capture" for intent in paying.intents(booking))
    assert payment_of(booking).decline_code == "generic_decline"
    shot(page, "pay-declined")


def test_a_declined_card_is_tried_again_on_a_new_price_for_the_same_stay_and_goes_ahead(
    page, site, ada, paying
):
    """Reviewer: back on the quote after a declined card, the page said "You have booked this
    already" and offered no way to try again; Book with another card was refused as booked."""
    # given a booking its card's bank declined
    name_for_customers(paying.h.partner)
    failed = pay_on_the_page(page, site, ada, paying.h.partner.offers.get(), "pm_card_chargeDeclined")
    page.wait_for_selector("#booking-status .tag--failed", timeout=PAGE_NEWS_TIMEOUT_MS)
    wait_for_money(failed, "declined")

    # when the customer goes back to its quote
    page.goto(f"{site.url}/quotes/{failed.quote_id}/")

    # then it says the booking did not go ahead, and why, and offers a new price, not Book
    main = page.inner_text("main")
    assert (
        f"Your booking {failed.reference} of this price did not go ahead: {M.PAYMENT_DECLINED.label}" in main
    )
    assert "booked this already" not in main
    assert page.locator("#book").count() == 0
    shot(page, "quote-did-not-go-ahead")

    # when they get a new price for the same stay and book it with a card that pays
    page.click("#price-again")
    page.wait_for_url(lambda url: "/quotes/" in url and str(failed.quote_id) not in url)
    assert "Book for 360.00 EUR" in page.inner_text("#book")
    page.select_option("select[name=payment_method]", "pm_card_visa")
    page.click("#book")
    page.wait_for_url(re.compile(r".*/bookings/BK-\w+/$"))

    # then that booking goes ahead: confirmed and charged, once; the declined one stays as it was
    booking = Booking.objects.exclude(pk=failed.pk).get()
    assert page.url.endswith(f"/bookings/{booking.reference}/")
    assert (booking.start_date, booking.end_date, booking.guests) == (
        failed.start_date,
        failed.end_date,
        failed.guests,
    )
    assert booking.quote_id != failed.quote_id
    page.wait_for_selector("#booking-status .tag--confirmed", timeout=PAGE_NEWS_TIMEOUT_MS)
    wait_for_money(booking, "charged")
    page.wait_for_selector('#booking-status [data-money-code="charged"]', timeout=PAGE_NEWS_TIMEOUT_MS)
    assert money_on_the_page(page) == "We charged 360.00 EUR to your card."
    assert_money_at_rest(paying, booking, owed=PRICE, code="charged")
    assert [reservation["status"] for reservation in paying.h.truth(booking)] == ["confirmed"]
    failed.refresh_from_db()
    assert (failed.status, failed.submission_count) == (S.FAILED, 0)
    assert paying.h.truth(failed) == []
    assert_money_at_rest(paying, failed, owed=Decimal("0.00"), code="declined")


# --- cancelling a paid booking --------------------------------------------------------------------
def test_cancelling_a_paid_booking_refunds_it_as_the_offer_s_policy_says(page, site, ada, paying):
    # given an offer whose free cancellation ends 60 days before the stay (it starts in 40): a
    # quarter of the price is kept
    name_for_customers(paying.h.partner)
    offer = paying.h.partner.offers.get()
    policy = {"free_cancellation_hours": 60 * 24, "cancellation_fee_percent": 25}
    type(offer).objects.filter(pk=offer.pk).update(**policy)
    told_before_book: list[str] = []
    booking = pay_on_the_page(
        page,
        site,
        ada,
        offer,
        "pm_card_visa",
        on_the_quote=lambda quote: told_before_book.append(quote.inner_text("[data-cancel-policy]")),
    )
    # the quote's page told the fee before Book: the one the cancel below keeps
    cut_off = booking.start_date - timedelta(days=60)
    assert told_before_book == [
        f"Free cancellation ended on {cut_off.day} {cut_off:%b %Y}, 00:00 UTC (1440 hours before the "
        "start): the fee is now 25% of the price, 90.00 EUR. A fee is only ever taken from the card you "
        "book with, and only once the partner has confirmed your booking: until then, cancelling is free."
    ]
    page.wait_for_selector("#booking-status .tag--confirmed", timeout=PAGE_NEWS_TIMEOUT_MS)
    wait_for_money(booking, "charged")

    # when the customer cancels it on its page
    page.goto(f"{site.url}/bookings/{booking.reference}/")
    page.click("text=Cancel this booking")
    # the page says, before the customer confirms, what is kept and what comes back
    assert page.inner_text(".cancel-money") == (
        "Once the cancellation is done, we keep the cancellation fee of 90.00 EUR and refund the "
        "other 270.00 EUR of the 360.00 EUR you paid to your card."
    )
    page.click("text=Yes, cancel this booking")
    page.wait_for_url(f"{site.url}/bookings/{booking.reference}/")

    # then, once the partner cancelled it and the provider refunded, the page says so
    page.wait_for_selector("#booking-status .tag--cancelled", timeout=PAGE_NEWS_TIMEOUT_MS)
    wait_for_money(booking, "partly_refunded")
    page.wait_for_selector(
        '#booking-status [data-money-code="partly_refunded"]', timeout=PAGE_NEWS_TIMEOUT_MS
    )
    refunded = (
        "We charged 360.00 EUR and refunded 270.00 EUR of it to your card: you paid 90.00 EUR. The "
        "90.00 EUR you paid is the cancellation fee we keep. Your booking was cancelled after free "
        f"cancellation ended on {cut_off.day} {cut_off:%b %Y}, 00:00 UTC (1440 hours before the start): "
        "the fee is 25% of the price."
    )
    assert "Your booking is cancelled." in status_text(page)
    assert money_on_the_page(page) == refunded
    api = money_in_the_api(page, site, booking)
    assert (api["code"], api["message"], api["charged"], api["refunded"]) == (
        "partly_refunded",
        refunded,
        "360.00",
        "270.00",
    )

    # and the provider's ground truth shows the one refund, of what the policy gives back
    booking.refresh_from_db()
    assert booking.cancellation_fee == Decimal("90.00")
    assert_money_at_rest(paying, booking, owed=Decimal("90.00"), code="partly_refunded")
    [intent] = paying.intents(booking)
    [refund] = paying.provider.refunds(intent["id"])
    assert (refund["amount"], refund["status"]) == (27_000, "succeeded")
    assert [r["status"] for r in paying.h.truth(booking)] == ["cancelled"]
    payment = payment_of(booking)
    assert (payment.captured_amount, payment.refunded_amount) == (PRICE, Decimal("270.00"))
    shot(page, "pay-refunded")
