"""Fixtures of the payment tests: a real payment provider (the sandbox's `payments` profile, a
process of its own speaking Stripe's API to the unmodified SDK) pointed at by our settings.

The connector's tests use a provider without webhooks (`provider`); the flow's integration tests
(`paying`) use one whose signed webhooks reach this project's live server, with a real Dramatiq
worker on Redis.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from bookings.models import Booking, BookingEvent
from bookings.services import BookingRequest, booking_create
from payments import connector
from payments.models import Payment
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.sandbox_process import PERFECT_FAULTS, SandboxProcess

API_KEY = "sk_test_payments0tests0key"
WEBHOOK_SECRET = "whsec_payments0tests0endpoint0secret"
# How long the provider holds a timed-out write before dropping the connection.
HANG_S = 2


def seed_for(*, after_commit: bool) -> int:
    """A provider seed whose first 5xx falls after (or before) its change commits: the sandbox
    rolls once for the 5xx, then tosses a coin for before or after."""
    for seed in range(1000):
        rng = random.Random(seed)
        rng.random()
        if (rng.random() < 0.5) == after_commit:
            return seed
    raise AssertionError("no seed")


class Provider(SandboxProcess):
    def reset(self) -> None:
        self.set_faults(**PERFECT_FAULTS, seed=self.seed)
        self.control("POST", "reset")

    def intents(self) -> list[dict[str, Any]]:
        return self.payments()["payment_intents"]

    def intent(self, intent_id: str) -> dict[str, Any]:
        [found] = self.payments(intent_id)["payment_intents"]
        return found

    def refunds(self, intent_id: str) -> list[dict[str, Any]]:
        """Refunds that gave money back (releases of a hold move none: no balance transaction; a
        refund the card refused after it was made gave none back)."""
        made = self.payments(intent_id)["refunds"]
        return [r for r in made if r["balance_transaction"] is not None and r["status"] != "failed"]


def point_settings_at(settings, provider: SandboxProcess) -> None:
    settings.STRIPE_API_KEY = API_KEY
    settings.STRIPE_API_BASE = provider.base_url
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.PAYMENTS_CONNECT_TIMEOUT_S = 1.0
    settings.PAYMENTS_READ_TIMEOUT_S = HANG_S / 2  # a held answer is a timeout


@pytest.fixture(scope="module")
def provider_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    store: Path = tmp_path_factory.mktemp("provider") / "payments.sqlite3"
    process = Provider("payments", store, API_KEY, ["--hang-s", str(HANG_S)]).start()
    yield process
    process.kill()


@pytest.fixture
def provider(provider_process: Provider, settings) -> Iterator[Provider]:
    """A provider without faults and with nothing in its store; our settings point at it."""
    provider_process.reset()
    point_settings_at(settings, provider_process)
    yield provider_process
    connector._client.cache_clear()


# --- the flow: a provider with webhooks, a sandbox partner, a real worker ---------------------------
# The partner side's fixtures (a sandbox partner registered as a Partner, its queues, a worker).
from tests.partners.conftest import (  # noqa: E402, F401
    Harness,
    clean_queues,
    fast_settings,
    harness,
    no_stray_db_sessions,
    partner_worker,
    reset_guard,
    sandboxes,
)


@pytest.fixture(scope="session")
def webhook_provider(live_server, tmp_path_factory) -> Iterator[Provider]:
    """A provider whose signed webhooks reach this project's live server, as Stripe's reach the
    webhook process."""
    store = tmp_path_factory.mktemp("webhook-provider") / "payments.sqlite3"
    process = Provider(
        "payments",
        store,
        API_KEY,
        [
            "--webhook-url",
            f"{live_server.url}/payments/webhooks/",
            "--webhook-secret",
            WEBHOOK_SECRET,
            "--hang-s",
            str(HANG_S),
        ],
    ).start()
    yield process
    process.kill()


@dataclass
class Paying:
    """A reference sandbox partner and the payment provider, with a worker running."""

    h: Harness
    provider: Provider
    start_worker: Callable[[], object]

    def book(self, method: str = "pm_card_visa", *, customer=None, days_ahead: int = 40) -> Booking:
        """A customer books and pays with `method`, through the booking service."""
        offer = self.h.partner.offers.get()
        start = timezone.now().date() + timedelta(days=days_ahead)
        return booking_create(
            customer=customer or UserFactory(),
            request=BookingRequest(
                offer_id=offer.pk,
                start_date=start,
                end_date=start + timedelta(days=3),
                guests=2,
                payment_method=method,
            ),
            idempotency_key=f"paying-{uuid.uuid4().hex}",
        ).booking

    def intents(self, booking: Booking) -> list[dict[str, Any]]:
        """Every intent the provider made for the booking's payment (ground truth)."""
        payment = Payment.objects.get(booking=booking)
        return [i for i in self.provider.intents() if i["metadata"].get("payment") == str(payment.pk)]


@pytest.fixture
def paying_idle(request, webhook_provider, settings) -> Iterator[Paying]:
    """The partner and the provider, no worker yet (`start_worker`)."""
    import payments.tasks  # noqa: F401  (declares the payment actors and their queue)

    webhook_provider.reset()
    point_settings_at(settings, webhook_provider)
    settings.PAYMENTS_RETRY_BASE_S = 0.2
    settings.PAYMENTS_RETRY_MAX_S = 1.0
    settings.PAYMENTS_RUN_GRACE_S = 1.0
    h = request.getfixturevalue("harness")("reference")
    start = request.getfixturevalue("partner_worker")
    paying = Paying(h, webhook_provider, start_worker=lambda: start(h.partner))
    h.broker.client.delete(
        *(f"{h.broker.namespace}:payments{suffix}" for suffix in ("", ".msgs", ".DQ", ".DQ.msgs"))
    )
    yield paying
    webhook_provider.reset()  # no redelivery into the next test
    connector._client.cache_clear()


@pytest.fixture
def paying(paying_idle) -> Paying:
    paying_idle.start_worker()
    return paying_idle


def book_through_api(api_client, offer, **extra):
    """POST /api/v1/bookings for a 3-night stay of `offer` 40 days ahead, as a customer would."""
    start = timezone.now().date() + timedelta(days=40)
    body = {
        "offer": offer.pk,
        "start_date": start.isoformat(),
        "end_date": (start + timedelta(days=3)).isoformat(),
        "guests": 2,
        **extra,
    }
    return api_client.post(
        "/api/v1/bookings", body, format="json", HTTP_IDEMPOTENCY_KEY=f"k-{uuid.uuid4().hex}"
    )


def payment_of(booking: Booking) -> Payment:
    return Payment.objects.get(booking=booking)


def money_code(booking: Booking) -> str:
    return Booking.objects.get(pk=booking.pk).customer_money.get("code", "")


def wait_for_money(booking: Booking, code: str, *, timeout_s: float = 20.0) -> None:
    wait_until(
        lambda: money_code(booking) == code and payment_of(booking).next_check_at is None,
        timeout_s=timeout_s,
        what=f"{booking.reference}'s money to be {code} and at rest (now {money_code(booking)})",
    )


def kinds(booking: Booking) -> list[str]:
    return list(
        BookingEvent.objects.filter(booking=booking)
        .order_by("occurred_at", "id")
        .values_list("kind", flat=True)
    )


def assert_money_at_rest(p: Paying, booking: Booking, *, owed: Decimal, code: str) -> None:
    """The money invariants, against the provider's ground truth: one authorization at most,
    nothing left held, captured - refunded = what the booking owes, no refund made twice, ours
    equal to the provider's, never captured before the partner confirmed."""
    booking.refresh_from_db()
    payment = payment_of(booking)
    intents = p.intents(booking)
    assert len(intents) <= 1, f"{len(intents)} authorizations for one booking: {intents}"
    captured = refunded = 0
    if intents:
        [intent] = intents
        assert intent["status"] != "requires_capture", "a hold left undecided at rest"
        refunds = p.provider.refunds(intent["id"])
        keys = [r["metadata"].get("operation") for r in refunds]
        assert len(keys) == len(set(keys)), f"a refund made twice: {keys}"
        captured, refunded = intent["amount_received"], sum(r["amount"] for r in refunds)
    # Money support paid back another way (a refund the card refused) went back too, not by the provider.
    assert Decimal(captured - refunded) / 100 - payment.refunded_outside == owed
    assert (payment.captured_amount, payment.refunded_amount) == (
        Decimal(captured) / 100,
        Decimal(refunded) / 100,
    )
    assert not payment.operations.open().exists()
    assert booking.customer_money["code"] == code, booking.customer_money
    timeline = kinds(booking)
    captures = [i for i, kind in enumerate(timeline) if kind.startswith("payment.capture.")]
    if captures:  # never asked before the partner confirmed, made or not
        assert "booking.confirmed" in timeline[: captures[0]], timeline
    if not captured:
        assert "payment.capture.ok" not in timeline, timeline
