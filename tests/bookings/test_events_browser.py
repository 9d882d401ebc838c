"""The customer pages following their bookings live, in headless Chromium, through the router as
`make run` serves them: the pages from the live server, the streams from a real events process,
on one origin. The progress page and "my bookings" change without a reload and without polling,
one fetch per change; the poll takes over when the browser has no EventSource or the stream
keeps failing.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator

import pytest

from bookings import customer_view, live, selectors
from bookings.web.views import PAGE_SIZE
from tests.browser import PHONE, log_in
from tests.factories import BookingFactory, UserFactory
from tests.helpers import wait_until
from tests.sandbox_process import free_port
from tests.streams import STOPPED_CLEANLY, ServerProcess, followers, move, start_events, start_router

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(120)]

NO_EVENTSOURCE = "delete window.EventSource"
# An outage longer than a few quick retries would outlast (1, 2 and 3 s after a failed fetch).
QUICK_RETRIES_S = 6


@pytest.fixture(scope="module")
def events(django_db_setup, tmp_path_factory) -> Iterator[ServerProcess]:
    process = start_events(tmp_path_factory.mktemp("events"))
    yield process
    assert process.stop() in STOPPED_CLEANLY, process.log()


@pytest.fixture
def site(live_server, events, tmp_path) -> Iterator[ServerProcess]:
    """The router in front of the live server (the pages) and the events process (the streams)."""
    router = start_router(tmp_path, web_port=_port(live_server.url), events_port=events.port)
    yield router
    assert router.stop() in STOPPED_CLEANLY, router.log()


@pytest.fixture
def ada(transactional_db):
    return UserFactory(username="ada", email="ada@example.com")


def status_fetches(page) -> list[str]:
    """Every request the page makes for its status fragment, as it makes them."""
    fetched: list[str] = []
    page.on("request", lambda request: "/status/" in request.url and fetched.append(request.url))
    return fetched


def test_the_progress_page_follows_the_booking_on_its_stream_without_polling(page, site, ada):
    booking = BookingFactory(customer=ada)
    log_in(page, site, ada)
    fetched = status_fetches(page)
    page.goto(f"{site.url}/bookings/{booking.reference}/")
    wait_until(lambda: followers(live.booking_channel(booking.pk)), what="the page's stream to be followed")
    assert page.locator("#booking-poller").count() == 0  # set aside while the stream works
    page.evaluate("window.sameDocument = true; window.liveRegion = document.getElementById('booking-status')")

    # each change the worker commits is on the page at once, one fetch of its live parts apiece
    move(booking, "start_submission")
    page.wait_for_selector('#booking-status [data-status-version="2"]')
    assert "We are placing your booking with the partner." in page.inner_text("#booking-status")
    move(booking, "mark_partner_pending")
    page.wait_for_selector("#booking-progress >> text=The partner is confirming")
    move(booking, "confirm")
    page.wait_for_selector("#booking-status .tag--confirmed")

    assert "Your booking is confirmed." in page.inner_text("#booking-status")
    steps = page.inner_text("#booking-steps")
    assert (
        steps.index("Sent to the partner")
        < steps.index("The partner is confirming")
        < steps.index("Confirmed")
    )
    assert page.evaluate(
        "window.sameDocument && window.liveRegion === document.getElementById('booking-status')"
    )
    assert page.get_attribute("#booking-status", "aria-live") == "polite"
    assert [re.sub(r".*/bookings/", "/bookings/", url) for url in fetched] == [
        f"/bookings/{booking.reference}/status/"
    ] * 3


def test_my_bookings_follow_the_customers_stream_and_say_what_changed(page, site, ada):
    first, second = BookingFactory(customer=ada), BookingFactory(customer=ada)
    log_in(page, site, ada)  # lands on my bookings
    wait_until(lambda: followers(live.customer_channel(ada.pk)), what="the page's stream to be followed")
    page.evaluate("window.sameDocument = true")

    move(second, "start_submission")
    move(second, "mark_partner_pending")
    move(second, "confirm")

    card = f'[data-reference="{second.reference}"]'
    page.wait_for_selector(f"{card} .tag--confirmed")
    assert page.get_attribute(card, "data-status-version") == "4"
    assert page.locator(f'[data-reference="{first.reference}"] .tag--pending').count() == 1
    wait_until(
        lambda: page.text_content("#booking-news") == f"Booking {second.reference}: Confirmed.",
        what="the news in the live region",
    )
    assert page.evaluate("window.sameDocument") is True


def test_a_retry_after_a_stale_answer_never_undoes_newer_news(page, site, ada):
    """A refresh answered with an older page retries a moment later. When the stream's next
    event has brought the page up to date before then, the retry has nothing to do: it neither
    asks again nor clears what the live region last told the customer."""
    booking = BookingFactory(customer=ada)
    log_in(page, site, ada)
    wait_until(lambda: followers(live.customer_channel(ada.pk)), what="the page's stream to be followed")
    stale = page.request.get(f"{site.url}/bookings/").text()  # as the list is before any change
    refreshes = []

    def answer(route) -> None:
        refreshes.append(route.request.url)
        if len(refreshes) == 1:
            route.fulfill(body=stale, content_type="text/html")  # answered before the change
        else:
            route.continue_()

    page.route(f"{site.url}/bookings/", answer)
    card = f'[data-reference="{booking.reference}"]'

    move(booking, "start_submission")
    wait_until(lambda: page.evaluate("1") and refreshes, what="the first refresh")
    assert page.get_attribute(card, "data-status-version") == "1"  # behind: a retry is due in 2 s
    move(booking, "mark_partner_pending")  # its event refreshes the page before the retry is due
    page.wait_for_selector(f'{card}[data-status-version="3"]')
    news = f"Booking {booking.reference}: {page.text_content(card).strip()}."
    wait_until(lambda: page.text_content("#booking-news") == news, what="the news of the change")

    page.wait_for_timeout(2500)  # the retry's time passes
    assert page.text_content("#booking-news") == news
    assert len(refreshes) == 2


@pytest.mark.parametrize("why", ["no-eventsource", "stream-keeps-failing"])
def test_the_poll_takes_over_without_a_working_stream(open_page, live_server, events, ada, tmp_path, why):
    if why == "no-eventsource":
        page = open_page(**PHONE)
        page.add_init_script(NO_EVENTSOURCE)
        router = start_router(tmp_path, web_port=_port(live_server.url), events_port=events.port)
    else:  # no events process behind the router: every stream request is a 502
        page = open_page(**PHONE)
        router = start_router(tmp_path, web_port=_port(live_server.url), events_port=free_port())
    try:
        booking = BookingFactory(customer=ada)
        log_in(page, router, ada)
        page.goto(f"{router.url}/bookings/{booking.reference}/")
        page.wait_for_selector("#booking-poller", state="attached")

        move(booking, "start_submission")

        page.wait_for_selector('#booking-status [data-status-version="2"]')
        assert "We are placing your booking with the partner." in page.inner_text("#booking-status")
        assert page.locator("#booking-poller").count() == 1  # still polling: news may come
    finally:
        assert router.stop() in STOPPED_CLEANLY, router.log()


@pytest.mark.parametrize(
    ("where", "outage"),
    [("progress", "answered-503"), ("progress", "connection-dropped"), ("my-bookings", "answered-503")],
)
def test_a_page_whose_fetches_fail_for_a_while_shows_the_news_once_they_succeed(
    page, site, ada, where, outage
):
    """The stream announces a version once. When the page's fetch of it fails for longer than a
    few retries (the web process restarting, a 503 while the database is away, a dropped
    connection) the page keeps asking, after the 503's Retry-After or a pause that grows, until it
    shows what was announced: the news arrives once the fetches succeed, without a reload."""
    booking = BookingFactory(customer=ada)
    log_in(page, site, ada)  # lands on my bookings
    tag = f'[data-reference="{booking.reference}"]'  # its [data-status-version]
    if where == "progress":
        page.goto(f"{site.url}/bookings/{booking.reference}/")
        channel = live.booking_channel(booking.pk)
        refresh_url = f"{site.url}/bookings/{booking.reference}/status/"
    else:
        channel, refresh_url = live.customer_channel(ada.pk), f"{site.url}/bookings/"
    wait_until(lambda: followers(channel), what="the page's stream to be followed")
    page.evaluate("window.sameDocument = true")
    down = [True]
    failed: list[float] = []

    def answer(route) -> None:
        if not down[0]:
            route.continue_()
            return
        failed.append(time.monotonic())
        if outage == "answered-503":
            route.fulfill(status=503, headers={"Retry-After": "1"}, body="Briefly unavailable.")
        else:
            route.abort("connectionreset")

    page.route(refresh_url, answer)

    move(booking, "start_submission")
    wait_until(lambda: page.evaluate("1") and failed, what="the first fetch of the news")
    page.wait_for_timeout((QUICK_RETRIES_S + 1) * 1000)
    assert page.get_attribute(tag, "data-status-version") == "1"
    gaps = [later - earlier for earlier, later in itertools.pairwise(failed)]
    if outage == "answered-503":  # asked again after each Retry-After: 1 s, and no sooner
        assert len(failed) > 4 and min(gaps) > 0.9, gaps
    else:  # no Retry-After: a pause that grows with each failure (2 s, 4 s)
        assert len(failed) == 3 and 1.9 < gaps[0] < gaps[1] - 1.5, gaps
    down[0] = False

    page.wait_for_selector(f'{tag}[data-status-version="2"]')
    assert page.evaluate("window.sameDocument") is True
    if where == "my-bookings":
        news = f"Booking {booking.reference}: {page.text_content(tag).strip()}."
        wait_until(lambda: page.text_content("#booking-news") == news, what="the news of the change")
    else:
        assert "We are placing your booking with the partner." in page.inner_text("#booking-status")


def test_a_fetch_that_hangs_is_abandoned_and_asked_again(page, site, ada):
    """A status fetch whose connection hangs (no answer, no error: a proxy holding it, a web
    process stuck) would hold every later refresh, for a refresh waits for the one out. The pages'
    htmx gives up on a request after 10 s; the fetch then counts as failed and is asked again, and
    the news arrives without a reload."""
    booking = BookingFactory(customer=ada)
    log_in(page, site, ada)
    page.goto(f"{site.url}/bookings/{booking.reference}/")
    assert page.evaluate("htmx.config.timeout") == 10_000
    wait_until(lambda: followers(live.booking_channel(booking.pk)), what="the page's stream to be followed")
    page.evaluate("window.sameDocument = true")
    held: list[float] = []

    def hang_the_first(route) -> None:
        if held:
            route.continue_()
        else:
            held.append(time.monotonic())  # never answered

    page.route(f"{site.url}/bookings/{booking.reference}/status/", hang_the_first)

    move(booking, "start_submission")
    wait_until(lambda: page.evaluate("1") and held, what="the fetch of the news")
    page.wait_for_selector('#booking-status [data-status-version="2"]', timeout=20_000)
    assert time.monotonic() - held[0] > 9.5  # abandoned at 10 s, not answered sooner
    assert page.evaluate("window.sameDocument") is True
    assert "We are placing your booking with the partner." in page.inner_text("#booking-status")
    page.unroute_all(behavior="ignoreErrors")


def test_my_bookings_spend_one_fetch_on_a_booking_they_do_not_show(page, site, ada):
    """A change to a booking on another page of my bookings costs one fetch of the cards (the
    page cannot tell it from a new booking, which it shows first), not a fetch and its retries;
    a new booking still appears at once, and is announced."""
    elsewhere = BookingFactory(customer=ada)  # the oldest: on the second page
    BookingFactory.create_batch(PAGE_SIZE, customer=ada)
    log_in(page, site, ada)
    wait_until(lambda: followers(live.customer_channel(ada.pk)), what="the page's stream to be followed")
    assert page.locator(f'[data-reference="{elsewhere.reference}"]').count() == 0
    fetched: list[str] = []
    page.on("request", lambda request: request.url == f"{site.url}/bookings/" and fetched.append(request.url))

    move(elsewhere, "start_submission")
    wait_until(lambda: page.evaluate("1") and fetched, what="the fetch of the cards")
    page.wait_for_timeout(2500)  # past the first pause a retry would wait (2 s)
    assert len(fetched) == 1
    assert page.text_content("#booking-news") == ""  # nothing the page shows changed

    new = BookingFactory(customer=ada)
    customer_view.created(new)  # published as booking_create does
    card = f'[data-reference="{new.reference}"]'
    page.wait_for_selector(card)
    news = f"Booking {new.reference}: {page.text_content(card).strip()}."
    wait_until(lambda: page.text_content("#booking-news") == news, what="the new booking's news")
    assert len(fetched) == 2


def test_a_poll_that_takes_over_asks_from_the_status_the_page_shows(page, live_server, ada, tmp_path):
    """The stream brought a change, then fails (its events process stopped; the router answers its
    reconnection 503): the poll that takes over asks from the version the page shows now, not the
    one it loaded with, so its first answer swaps nothing in and the live region announces
    nothing that is not news."""
    events = start_events(tmp_path)  # this test's own: it stops it
    router = start_router(tmp_path, web_port=_port(live_server.url), events_port=events.port)
    try:
        booking = BookingFactory(customer=ada)
        log_in(page, router, ada)
        page.goto(f"{router.url}/bookings/{booking.reference}/")
        channel = live.booking_channel(booking.pk)
        wait_until(lambda: followers(channel), what="the page's stream to be followed")
        move(booking, "start_submission")
        page.wait_for_selector('#booking-status [data-status-version="2"]')
        seen = selectors.customer_booking_progress(customer=ada, reference=booking.reference).version
        polls = status_fetches(page)
        page.evaluate(
            "window.shownTag = document.querySelector('#booking-status [data-status-version]');"
            "window.polled = 0;"
            "document.addEventListener('htmx:afterRequest', () => { window.polled += 1; });"
        )

        assert events.stop() in STOPPED_CLEANLY, events.log()

        page.wait_for_function("window.polled >= 1", timeout=20_000)
        assert [re.sub(r".*/status/", "", url) for url in polls] == [f"?seen={seen}"]
        assert page.evaluate(
            "window.shownTag === document.querySelector('#booking-status [data-status-version]')"
        )
        assert page.locator("#booking-poller").count() == 1  # still polling: news may come
    finally:
        events.stop()
        assert router.stop() in STOPPED_CLEANLY, router.log()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])
