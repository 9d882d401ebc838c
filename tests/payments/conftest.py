"""Fixtures of the payment tests: a real payment provider (the sandbox's `payments` profile, a
process of its own speaking Stripe's API to the unmodified SDK) pointed at by our settings.

The connector's tests use a provider without webhooks (`provider`); the flow's integration tests
(`paying`) use one whose signed webhooks reach this project's live server, with a real Dramatiq
worker on Redis.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payments import connector
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
        """Refunds that gave money back (releases of a hold move none: no balance transaction)."""
        made = self.payments(intent_id)["refunds"]
        return [r for r in made if r["balance_transaction"] is not None]


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
