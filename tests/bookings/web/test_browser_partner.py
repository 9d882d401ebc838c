"""The customer's page against what a real partner does, in headless Debian Chromium: the pages
from the live server and the booking's live status stream from a real events process, both
through the router as `make run` serves them; a real Dramatiq worker; a real sandbox partner
process whose webhooks reach the live server; the real SMTP sink.

A partner that confirms 30 s later; one that commits the booking and never answers the call; one
that declines; one that cancels a booking it confirmed. In each the page is booked with its own
Book button and then left alone: every state its status region showed is recorded with the page's
clock (`tests.browser.record_shown`), so each test can say what the customer saw and when,
against the booking's row and the partner's ground truth. The page follows the news on its stream
without a reload (a marker on `window` survives) and without polling. The booking the partner
cancelled is then offered a cancel page that says the partner no longer holds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from bookings import live
from bookings.models import Booking
from bookings.states import BookingState, CustomerMessage
from tests.browser import (
    AXE_WCAG,
    Shown,
    name_for_customers,
    open_quote,
    record_shown,
    shot,
    shown,
    status_text,
)
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.streams import STOPPED_CLEANLY, ServerProcess, followers, start_events, start_router

S = BookingState
M = CustomerMessage
pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(150)]

SAME_DOCUMENT = "window.sameDocument === true"
# Generous bounds for a busy two-core machine; the waits end as soon as the page shows the state.
PAGE_NEWS_TIMEOUT_MS = 30_000
# A mail client's reading pane, for the mail's screenshot (the mail sets no viewport of its own).
MAIL_PANE = {"width": 600, "height": 300}


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


@pytest.fixture
def polls(page) -> list[str]:
    """Every poll the page makes (`/status/?seen=`): while its stream works there is none."""
    made: list[str] = []
    page.on("request", lambda request: "/status/?seen=" in request.url and made.append(request.url))
    return made


def book_on_the_page(page, site, user, offer) -> Booking:
    """Open a fresh quote, click Book, land on the booking's page, and mark its document; the page
    follows the booking's stream."""
    record_shown(page)
    open_quote(page, site, user, offer)
    page.click("#book")
    page.wait_for_url(re.compile(r".*/bookings/BK-\w+/$"))
    page.evaluate("window.sameDocument = true")
    booking = Booking.objects.get()
    wait_until(lambda: followers(live.booking_channel(booking.pk)), what="the page to follow its stream")
    return booking


def statuses(history: list[Shown]) -> list[str]:
    """The statuses shown, each run of one status once."""
    runs: list[str] = []
    for state in history:
        if not runs or runs[-1] != state.status:
            runs.append(state.status)
    return runs


def first_shown(history: list[Shown], status: str) -> Shown:
    return next(state for state in history if state.status == status)


def to_the_ms(moment: datetime) -> datetime:
    """A server-side time as the page's clock could read it (milliseconds, rounded down)."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def partner_time(reservation: dict, status: str) -> datetime:
    """When the partner's ground truth says its reservation took `status`."""
    return datetime.fromisoformat(next(v for v in reservation["history"] if v["status"] == status)["at"])


def assert_never_backwards(history: list[Shown]) -> None:
    versions = [state.version for state in history]
    assert versions == sorted(versions), versions
    if "confirmed" in statuses(history):
        after = statuses(history)[statuses(history).index("confirmed") :]
        assert "pending" not in after and "failed" not in after, statuses(history)


# --- confirmed later ------------------------------------------------------------------------------
def test_a_partner_confirming_30_s_later_updates_the_open_page_without_a_reload(
    page, site, polls, ada, harness, partner_worker
):
    # given a partner that acknowledges a booking at once and confirms it 30 s later
    h = harness("reference")
    h.faults(async_confirm_delay_s=30)
    name_for_customers(h.partner)
    partner_worker(h.partner)

    # when the customer books and keeps the page open
    booking = book_on_the_page(page, site, ada, h.partner.offers.get())
    page.wait_for_selector(
        "#booking-progress >> text=The partner is confirming", timeout=PAGE_NEWS_TIMEOUT_MS
    )

    # then, half a minute later, the page says confirmed: the same document, updated in place
    page.wait_for_selector("#booking-status .tag--confirmed", timeout=60_000)
    assert page.evaluate(SAME_DOCUMENT)
    assert "Your booking is confirmed." in status_text(page)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    (reservation,) = h.truth(booking)
    acknowledged, confirmed = partner_time(reservation, "pending"), partner_time(reservation, "confirmed")
    assert confirmed - acknowledged >= timedelta(seconds=30)  # genuinely later

    # and it was pending until then: confirmed only once the partner and our row said so
    history = shown(page)
    assert statuses(history) == ["pending", "confirmed"]
    assert [state.message for state in history if state.status == "pending"][-1] == M.PARTNER_CONFIRMING.label
    assert first_shown(history, "confirmed").at >= to_the_ms(max(confirmed, booking.confirmed_shown_at))
    assert_never_backwards(history)
    steps = page.inner_text("#booking-steps")
    assert steps.index("The partner is confirming") < steps.index("Confirmed by the partner")
    assert page.locator("#booking-poller").count() == 0 and polls == []  # pushed, never polled
    shot(page, "progress-confirmed-later")


# --- timeout after the partner committed ----------------------------------------------------------
def test_a_booking_whose_create_timed_out_after_the_partner_committed_is_never_shown_confirmed_early(
    page, site, polls, ada, harness, partner_worker, settings
):
    # given a partner that commits (and confirms) each create, then holds the call past our read
    # timeout and drops it; its webhook is late, and we look it up 10 s after the timeout
    h = harness("reference")
    h.faults(timeout_after_commit_rate=1, webhook_delay_s=[120, 120])
    settings.PARTNER_SYNC_DELAY_S = 10
    name_for_customers(h.partner)
    partner_worker(h.partner)

    # when the customer books
    booking = book_on_the_page(page, site, ada, h.partner.offers.get())

    # then while our create's outcome is unknown the page says we are checking, though the
    # partner already holds it confirmed: what we know, not what we hope
    page.wait_for_selector(f"#booking-status >> text={M.CHECKING.label}", timeout=PAGE_NEWS_TIMEOUT_MS)
    (reservation,) = h.truth(booking)
    assert reservation["status"] == "confirmed"
    booking.refresh_from_db()
    assert booking.status == S.UNKNOWN
    assert "PENDING" in status_text(page)
    shot(page, "progress-timeout-honest")
    assert M.CHECKING.label in status_text(page)  # the picture is of that state

    # and once the lookup found the reservation, confirmed, without a reload
    page.wait_for_selector("#booking-status .tag--confirmed", timeout=PAGE_NEWS_TIMEOUT_MS)
    assert page.evaluate(SAME_DOCUMENT)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert len(h.truth(booking)) == 1  # the timeout made no second reservation

    # never success before truth: confirmed appeared only after our row said confirmed
    history = shown(page)
    assert statuses(history) == ["pending", "confirmed"]
    checking = next(state for state in history if state.message == M.CHECKING.label)
    assert checking.at >= to_the_ms(partner_time(reservation, "confirmed"))  # the partner had it
    assert first_shown(history, "confirmed").at >= to_the_ms(booking.confirmed_shown_at)
    assert_never_backwards(history)
    steps = page.inner_text("#booking-steps")
    assert steps.index("Checking with the partner") < steps.index("Confirmed by the partner")
    assert polls == []
    shot(page, "progress-timeout-confirmed")


# --- declined ---------------------------------------------------------------------------------------
def test_a_booking_the_partner_declines_shows_not_confirmed_and_nothing_booked(
    page, site, polls, ada, harness, partner_worker
):
    # given a partner that acknowledges each booking, then declines it a few seconds later
    h = harness("reference")
    h.faults(async_confirm_delay_s=3, reject_rate=1)
    name_for_customers(h.partner)
    partner_worker(h.partner)

    # when the customer books
    booking = book_on_the_page(page, site, ada, h.partner.offers.get())

    # then the page says it did not go ahead, in the honest words, without a reload
    page.wait_for_selector("#booking-status .tag--failed", timeout=PAGE_NEWS_TIMEOUT_MS)
    assert page.evaluate(SAME_DOCUMENT)
    assert M.DECLINED.label in status_text(page)
    assert "Nothing is booked." in page.inner_text("#booking-progress")
    assert "Not confirmed: the partner declined" in page.inner_text("#booking-steps")
    booking.refresh_from_db()
    assert booking.status == S.REJECTED
    assert h.live(booking) == []  # nothing is held at the partner: "nothing is booked" is true

    history = shown(page)
    assert statuses(history)[-1] == "failed" and "confirmed" not in statuses(history)
    assert first_shown(history, "failed").at >= to_the_ms(booking.status_changed_at)
    assert_never_backwards(history)
    assert page.locator("#booking-poller").count() == 0 and polls == []
    shot(page, "rejected")


# --- the partner cancels a confirmed booking --------------------------------------------------------
def test_a_confirmed_booking_the_partner_cancels_is_shown_disrupted_and_mailed(
    page, open_page, site, polls, ada, harness, partner_worker, mail_sink, settings
):
    # given a partner that confirms each booking a moment after acknowledging it, then cancels
    # it on its own 8 s later
    settings.SITE_URL = site.url
    h = harness("reference")
    h.faults(async_confirm_delay_s=2, partner_cancel_rate=1, partner_cancel_delay_s=[8, 8])
    name_for_customers(h.partner)
    partner_worker(h.partner)

    # when the customer books and keeps the page open: confirmed first
    booking = book_on_the_page(page, site, ada, h.partner.offers.get())
    page.wait_for_selector("#booking-status .tag--confirmed", timeout=PAGE_NEWS_TIMEOUT_MS)

    # then, once the partner cancelled it, the page says so, and what happens next, in place
    page.wait_for_selector("#booking-status .tag--disrupted", timeout=PAGE_NEWS_TIMEOUT_MS)
    assert page.evaluate(SAME_DOCUMENT)
    assert M.DISRUPTED_PARTNER_CANCELLED.label in status_text(page)
    steps = page.inner_text("#booking-steps")
    assert "Passed to our support team" in steps
    assert "Waiting for our support team" in steps and "Waiting for Seaside Hotels" not in steps
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_cancelled_confirmed")
    (reservation,) = h.truth(booking)
    assert (reservation["status"], reservation["history"][-1]["cause"]) == ("cancelled", "partner_cancel")

    history = shown(page)
    assert statuses(history) == ["pending", "confirmed", "disrupted"]  # never pending again
    assert first_shown(history, "disrupted").at >= to_the_ms(partner_time(reservation, "cancelled"))
    assert_never_backwards(history)
    assert polls == []
    shot(page, "disrupted")

    # and the customer is mailed each change they did not make: confirmed, then the disruption
    wait_until(lambda: len(mail_sink.files()) == 2, what="two mails", timeout_s=30)
    confirmed_mail, disrupted_mail = mail_sink.messages()
    assert confirmed_mail["Subject"] == f"Your booking {booking.reference} is confirmed"
    assert disrupted_mail["Subject"] == f"A problem with your booking {booking.reference}"
    assert disrupted_mail["To"] == "ada@example.com"
    text = disrupted_mail.get_body(("plain",)).get_content()
    assert M.DISRUPTED_PARTNER_CANCELLED.label in text
    assert "Our support team will email you when they know more." in text
    assert f"{site.url}/bookings/{booking.reference}/" in text
    html = disrupted_mail.get_body(("html",)).get_content()
    mail_page = open_page(viewport=MAIL_PANE)
    mail_page.set_content(html)
    assert M.DISRUPTED_PARTNER_CANCELLED.label in mail_page.inner_text("body")
    shot(mail_page, "email-disrupted", rules=AXE_WCAG)

    # and its cancel page says what cancelling does now: nothing is left to cancel with the
    # partner, and it costs nothing; not that they are asked and still hold it
    page.click("text=Cancel this booking")
    page.wait_for_url(f"{site.url}/bookings/{booking.reference}/cancel/")
    assert page.inner_text("h1") == "Are you sure you want to cancel this booking?"
    main = page.inner_text("main")
    assert "Seaside Hotels no longer holds your booking, so there is nothing left to cancel with them" in main
    assert "It shows as Cancelled once we have closed it." in main
    assert "We ask Seaside Hotels" not in main and "it still exists with them" not in main
    assert page.inner_text("[data-cancel-money]") == (
        "This booking takes no payment: cancelling costs nothing, and there is nothing to refund."
    )
    assert page.locator("main button", has_text="Yes, cancel this booking").count() == 1
    shot(page, "cancel-disrupted")
