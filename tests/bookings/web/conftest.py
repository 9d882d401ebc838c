"""Fixtures of the customer web client's tests: a logged-in browser session (Django's test
client), offers and quotes, and the real partner side for the browser tests."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.factories import OfferFactory, PartnerFactory, QuoteFactory, UserFactory
from tests.helpers import unique_code
from tests.partners.conftest import (  # noqa: F401 - the real partner side, for the browser tests
    clean_queues,
    fast_settings,
    harness,
    no_stray_db_sessions,
    partner_worker,
    reset_guard,
    sandboxes,
)


@pytest.fixture
def web(customer) -> Client:
    """The customer's browser session, logged in."""
    client = Client()
    client.force_login(customer)
    return client


@pytest.fixture
def other_customer(db):
    return UserFactory()


@pytest.fixture
def offer(db):
    return OfferFactory(partner=PartnerFactory(code=unique_code("web")), capacity=4)


@pytest.fixture
def quote(customer, offer):
    return QuoteFactory(customer=customer, offer=offer)


def htmx(client: Client, url: str, **params: str):
    """A GET as htmx sends it (the HX-Request header)."""
    return client.get(url, params, headers={"HX-Request": "true"})
