"""A form that fails its CSRF check (a page left open across a new log-in, a lost cookie) gets the
site's own page saying nothing was done and what to do; the machine paths keep the one error
shape, and token-authenticated API calls and signed webhooks are not CSRF-checked at all.

In a browser: tests/bookings/web/test_browser_pages.py."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.config.test_limits import assert_error_shape
from tests.factories import TokenFactory


@pytest.mark.django_db
@pytest.mark.parametrize("cookie", [True, False], ids=["stale-token", "no-cookie"])
def test_a_page_s_form_failing_its_csrf_check_is_the_site_s_page(customer, cookie):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(customer)
    if cookie:
        browser.get("/bookings/")  # the page's header form sets the cookie
        assert browser.cookies["csrftoken"].value

    response = browser.post("/account/logout/", {"csrfmiddlewaretoken": "stale" * 8})

    assert response.status_code == 403
    page = response.content.decode()
    assert '<h1 class="heading-l">This page has expired</h1>' in page
    assert "nothing was done" in page
    assert ("your browser may be blocking cookies" in page) is not cookie
    assert "DEBUG" not in page and "CSRF" not in page
    assert response.wsgi_request.user.is_authenticated  # the log out did not happen


@pytest.mark.django_db
def test_the_api_is_csrf_checked_only_for_a_session_and_then_answers_in_the_one_shape(customer):
    session = Client(enforce_csrf_checks=True)
    session.force_login(customer)
    token = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {TokenFactory(user=customer).key}")

    refused = session.post("/api/v1/quotes", data="{}", content_type="application/json")
    taken = token.post("/api/v1/quotes", data="{}", content_type="application/json")

    error = assert_error_shape(refused, 403, "permission_denied")
    assert error["message"].startswith("CSRF Failed")
    assert_error_shape(taken, 400, "validation_error")  # read, not refused


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/partners/acme/webhooks/", "/payments/webhooks/"])
def test_webhooks_are_not_csrf_checked(path):
    response = Client(enforce_csrf_checks=True).post(path, data="{}", content_type="application/json")

    assert response.status_code != 403
    assert response["Content-Type"] == "application/json"
