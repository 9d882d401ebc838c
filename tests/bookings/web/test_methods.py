"""The methods a customer page answers: HEAD wherever GET is (a link checker's or `curl -I`'s
request is a GET without its body, and changes nothing), and any method a page does not take is
a 405 page in the site's look with `Allow`, not Django's empty answer.

Before, `require_GET` and `require_http_methods(["GET", "POST"])` answered HEAD 405 with an
empty text/html body, and so did every other method a page did not take."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from bookings.models import Booking
from tests.factories import BookingFactory


@pytest.fixture
def booking(customer, offer):
    return BookingFactory(customer=customer, offer=offer)


def test_head_on_the_offers_page_is_its_get_without_the_body(client, offer):
    page = client.get("/")
    head = client.head("/")

    assert head.status_code == 200 and head.content == b""
    assert head["Content-Type"] == page["Content-Type"]


def test_head_on_a_customers_pages_answers_as_their_get(web, quote, booking):
    for url in (
        "/",
        f"/offers/{quote.offer_id}/",
        f"/quotes/{quote.pk}/",
        "/bookings/",
        f"/bookings/{booking.reference}/",
        f"/bookings/{booking.reference}/cancel/",
        "/account/signup/",
        "/account/login/",
    ):
        assert web.head(url).status_code == web.get(url).status_code, url


def test_head_on_book_books_nothing(web, quote):
    answer = web.head(f"/quotes/{quote.pk}/book/")

    assert (answer.status_code, answer["Location"]) == (302, f"/quotes/{quote.pk}/")
    assert Booking.objects.count() == 0


def test_head_leaves_a_pages_message_for_the_get_that_shows_it(client, db):
    client.post(
        "/account/signup/",
        {
            "username": "ada",
            "email": "ada@example.com",
            "password1": "correct-horse-battery",
            "password2": "correct-horse-battery",
        },
    )
    assert get_user_model().objects.filter(username="ada").exists()

    client.head("/")

    assert "Your account is ready." in client.get("/").content.decode()


@pytest.mark.parametrize(
    ("method", "url", "allowed"),
    [
        ("delete", "/", "GET, HEAD"),
        ("put", "/bookings/{reference}/", "GET, HEAD"),
        ("delete", "/bookings/{reference}/cancel/", "GET, HEAD, POST"),
        ("options", "/bookings/", "GET, HEAD"),
        ("get", "/account/logout/", "POST, OPTIONS"),
    ],
)
def test_a_method_a_page_does_not_take_is_the_405_page_with_allow(web, booking, method, url, allowed):
    answer = getattr(web, method)(url.format(reference=booking.reference))

    assert answer.status_code == 405
    assert answer["Allow"] == allowed
    assert answer["Content-Type"].startswith("text/html")
    page = answer.content.decode()
    assert "<h1" in page and "This page cannot do that" in page
    assert 'href="/bookings/"' in page  # the site's own page, header and links


@pytest.mark.parametrize(
    ("url", "allowed"), [("/", "GET, HEAD"), ("/account/login/", "GET, POST, PUT, HEAD, OPTIONS")]
)
def test_a_method_a_page_never_takes_is_405_before_csrf_asks_for_a_token(db, url, allowed):
    browser = Client(enforce_csrf_checks=True)  # as a real one: no token sent with a DELETE

    answer = browser.delete(url)

    assert (answer.status_code, answer["Allow"]) == (405, allowed)
    assert "This page cannot do that" in answer.content.decode()


def test_the_support_console_keeps_its_own_405_not_the_customers_page(admin_client):
    """The 405 page speaks to customers ("nothing was booked", links to their bookings): a method
    the console does not take is Django's own answer there."""
    answer = admin_client.get("/admin/logout/")

    assert answer.status_code == 405
    assert "POST" in answer["Allow"]
    assert "This page cannot do that" not in answer.content.decode()
