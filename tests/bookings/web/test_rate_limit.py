"""The customer pages' rate limit (config.throttling.PageRateLimitMiddleware): their writes reach
the same services as the API's (a quote, a booking, an account, a password-reset mail), so they
are counted too: per customer (the user, whatever session) and per address, the account forms
per address, reset mails per address asked for; past a limit, a page saying so, with 429 and
`Retry-After`. Reads are not counted."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from bookings.models import Booking, Quote

User = get_user_model()


@pytest.fixture(autouse=True)
def own_namespace(settings):
    """Counters of this test's own, and every limit out of the way unless the test sets it."""
    settings.API_THROTTLE_NAMESPACE = f"throttle-{uuid.uuid4().hex}"


def stay() -> dict[str, str | int]:
    start = timezone.localdate() + timedelta(days=30)
    return {"start_date": start.isoformat(), "end_date": (start + timedelta(days=2)).isoformat(), "guests": 1}


def assert_throttled_page(response, *, window_s: int) -> None:
    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= window_s
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "Too many requests" in page and "Please try again in" in page


def test_a_customer_past_the_limit_gets_a_page_and_makes_no_more_quotes(web, offer, settings):
    settings.PAGE_THROTTLE_RATE = "3/min"

    statuses = [web.post(f"/offers/{offer.pk}/", stay()).status_code for _ in range(3)]
    refused = web.post(f"/offers/{offer.pk}/", stay())

    assert statuses == [302, 302, 302]
    assert_throttled_page(refused, window_s=60)
    assert Quote.objects.count() == 3


def test_the_limit_counts_the_customer_not_the_session(customer, offer, settings):
    # A second login (another browser, another address) is the same customer's budget.
    settings.PAGE_THROTTLE_RATE = "2/min"
    first, second = Client(), Client(REMOTE_ADDR="203.0.113.9")
    first.force_login(customer)
    second.force_login(customer)

    statuses = [client.post(f"/offers/{offer.pk}/", stay()).status_code for client in (first, second, second)]

    assert statuses == [302, 302, 429]
    assert Quote.objects.count() == 2


def test_booking_a_quote_is_counted(web, quote, settings):
    settings.PAGE_THROTTLE_RATE = "1/min"
    web.post(f"/offers/{quote.offer.pk}/", stay())  # the one write the minute allows

    refused = web.post(f"/quotes/{quote.pk}/book/", {"idempotency_key": str(uuid.uuid4())})

    assert_throttled_page(refused, window_s=60)
    assert not Booking.objects.filter(quote=quote).exists()


def test_a_form_without_its_csrf_token_spends_no_budget(customer, web, offer, settings):
    # Another site can make the customer's browser post (no token): refused before it counts.
    settings.PAGE_THROTTLE_RATE = "1/min"
    forged = Client(enforce_csrf_checks=True)
    forged.force_login(customer)

    refused = [forged.post(f"/offers/{offer.pk}/", stay()).status_code for _ in range(3)]
    own = web.post(f"/offers/{offer.pk}/", stay())

    assert refused == [403] * 3
    assert own.status_code == 302


def test_reads_are_not_counted(web, offer, settings):
    settings.PAGE_THROTTLE_RATE = "1/min"
    settings.PAGE_THROTTLE_ADDRESS_RATE = "1/min"

    statuses = [web.get(f"/offers/{offer.pk}/").status_code for _ in range(5)]

    assert statuses == [200] * 5


def test_an_address_past_its_limit_is_refused_whoever_is_logged_in(customer, other_customer, offer, settings):
    settings.PAGE_THROTTLE_ADDRESS_RATE = "2/min"
    clients = []
    for user in (customer, other_customer, other_customer):
        client = Client()
        client.force_login(user)
        clients.append(client)

    statuses = [client.post(f"/offers/{offer.pk}/", stay()).status_code for client in clients]

    assert statuses == [302, 302, 429]


def sign_up(client: Client, name: str):
    password = "correct-horse-battery"
    return client.post(
        "/account/signup/",
        {"username": name, "email": f"{name}@example.com", "password1": password, "password2": password},
    )


def test_sign_ups_from_one_address_are_limited(db, settings):
    settings.ACCOUNT_THROTTLE_RATE = "2/min"

    statuses = [sign_up(Client(), f"user{i}").status_code for i in range(3)]
    other_address = sign_up(Client(REMOTE_ADDR="198.51.100.7"), "user9")

    assert statuses == [302, 302, 429]
    assert other_address.status_code == 302
    assert sorted(User.objects.values_list("username", flat=True)) == ["user0", "user1", "user9"]


def test_login_attempts_from_one_address_are_limited(client, customer, settings):
    settings.ACCOUNT_THROTTLE_RATE = "2/min"

    attempts = [{"username": f"name{i}", "password": "wrong"} for i in range(3)]

    statuses = [client.post("/account/login/", attempt).status_code for attempt in attempts]

    assert statuses == [400, 400, 429]


def test_password_reset_mails_to_one_address_are_limited_from_any_address(customer, settings, mailoutbox):
    settings.PASSWORD_RESET_EMAIL_RATE = "2/hour"
    senders = [Client(REMOTE_ADDR=f"192.0.2.{i}") for i in range(1, 4)]
    asked = {"email": customer.email.upper()}  # one address, however it is spelled

    responses = [sender.post("/account/password-reset/", asked) for sender in senders]

    assert [r.status_code for r in responses] == [302, 302, 429]
    assert_throttled_page(responses[-1], window_s=3600)
    assert len(mailoutbox) == 2


def test_the_api_keeps_its_json_429(api_client, settings):
    settings.API_THROTTLE_RATE = "1/min"
    api_client.get("/api/v1/offers")

    refused = api_client.get("/api/v1/offers")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
