"""Fixtures and helpers of the booking tests (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import dramatiq
import pytest
from django.conf import settings
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from tests.factories import OfferFactory, PartnerFactory, TokenFactory, UserFactory
from tests.helpers import unique_code
from tests.partners.conftest import (  # noqa: F401 - real sandbox partners and workers
    clean_queues,
    fast_settings,
    harness,
    no_stray_db_sessions,
    partner_worker,
    reset_guard,
    sandboxes,
)
from tests.payments.conftest import (  # noqa: F401 - a real payment provider, for a booking that pays
    paying,
    paying_idle,
    webhook_provider,
)

BOOKINGS_URL = "/api/v1/bookings"
IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
postgres_only = pytest.mark.skipif(
    not IS_POSTGRES,
    reason="needs PostgreSQL row locks and concurrent writers (set DATABASE_URL=postgres://...)",
)


def today() -> date:
    return timezone.now().date()


def stay_body(offer, **overrides: Any) -> dict[str, Any]:
    start = today() + timedelta(days=30)
    body: dict[str, Any] = {
        "offer": offer.pk,
        "start_date": start.isoformat(),
        "end_date": (start + timedelta(days=3)).isoformat(),
        "guests": 2,
    }
    body.update(overrides)
    return body


def authed_client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {TokenFactory(user=user).key}")
    return client


def post_booking(client: APIClient, body: dict[str, Any], key: str | None = "key-1"):
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(BOOKINGS_URL, body, format="json", headers=headers)


def queue_length(broker: dramatiq.Broker, queue_name: str) -> int:
    return broker.client.llen(f"{broker.namespace}:{queue_name}")


def run_concurrently(
    *targets: Callable[[], Any], while_running: Callable[[], None] | None = None
) -> list[Any]:
    """Run each target in its own thread, released together; return results (or exceptions).

    Each thread uses its own database connection and closes it when done. `while_running`
    runs in the calling thread once the threads are started (e.g. to wait for a lock).
    """
    barrier = threading.Barrier(len(targets))
    results: list[Any] = [None] * len(targets)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = targets[index]()
        except Exception as exc:  # noqa: BLE001 - handed back to the test to assert on
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    try:
        if while_running is not None:
            while_running()
    finally:
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    return results


@pytest.fixture
def partner(db):
    return PartnerFactory(code=unique_code())


@pytest.fixture
def offer(partner):
    return OfferFactory(partner=partner)


@pytest.fixture
def partner_queue(broker, partner) -> str:
    """The partner's queue on the real Redis broker, empty before and after the test."""
    broker.flush(partner.queue_name)
    yield partner.queue_name
    broker.flush(partner.queue_name)


@pytest.fixture
def other_customer(db):
    return UserFactory()


@pytest.fixture
def other_client(other_customer) -> APIClient:
    return authed_client(other_customer)
