"""The load's clients: who cancels what, and a client that cancels once it sees its booking
confirmed (the path that makes the chaos run refund paid bookings)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from chaos.config import ChaosConfig, ClientBehaviour, RunIdentity
from chaos.load import BookingClient, ClientLedger, Customer, LoadGenerator, OfferChoice, plan_bookings

OFFER = OfferChoice(offer_id=1, partner_code="p", profile="reference", product_id="room", max_guests=2)
CUSTOMER = Customer(username="c", token="t")


def _plan(**behaviour: float) -> list:
    config = ChaosConfig(bookings=200, seed=7, client=replace(ClientBehaviour(), **behaviour))
    return plan_bookings(
        config=config,
        identity=RunIdentity(run_id="t", directory=Path("/tmp")),
        customers=[CUSTOMER],
        offers=[OFFER],
    )


def test_a_booking_is_cancelled_at_most_one_way():
    planned = _plan(cancel_rate=0.5, cancel_confirmed_rate=1.0)

    early = [p for p in planned if p.cancel_after_s is not None]
    once_confirmed = [p for p in planned if p.cancel_once_confirmed]
    assert 60 < len(early) < 140
    assert {p.index for p in once_confirmed} == {p.index for p in planned} - {p.index for p in early}


def test_no_client_waits_for_confirmation_when_the_rate_is_zero():
    assert not any(p.cancel_once_confirmed for p in _plan(cancel_confirmed_rate=0.0))


class _Answer:
    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code, self._body, self.headers = status_code, body, {}

    def json(self) -> dict[str, Any]:
        return self._body


class _Partner:
    """The API as the client sees it: a booking whose shown status moves along `statuses`."""

    def __init__(self, statuses: list[str]) -> None:
        self.statuses = statuses
        self.reads = 0
        self.cancels: list[str] = []
        self.lock = threading.Lock()

    def get(self, url: str, **kwargs: Any) -> _Answer:
        with self.lock:
            status = self.statuses[min(self.reads, len(self.statuses) - 1)]
            self.reads += 1
        return _Answer(200, {"reference": "BK1", "status": status})

    def post(self, url: str, **kwargs: Any) -> _Answer:
        self.cancels.append(url)
        return _Answer(202, {"reference": "BK1", "status": "cancelling"})


@pytest.mark.parametrize(
    ("statuses", "cancelled"),
    [
        (["pending", "pending", "confirmed"], True),
        (["pending", "failed"], False),
        (["pending"], False),  # never confirmed within the wait
    ],
)
def test_a_client_cancels_once_it_sees_its_booking_confirmed(statuses, cancelled):
    api = _Partner(statuses)
    behaviour = replace(ClientBehaviour(), confirmed_poll_s=0.01, confirmed_wait_s=0.5)
    client = BookingClient(
        base_url="http://api", behaviour=behaviour, ledger=ClientLedger(), session_factory=lambda: api
    )
    generator = LoadGenerator(client=client, concurrency=1, duration_s=0)
    (planned,) = [replace(p, cancel_after_s=None, cancel_once_confirmed=True) for p in _plan()[:1]]
    record = client.ledger.open(planned)
    record.references.append("BK1")

    generator._cancel_once_confirmed(planned, record)

    assert api.cancels == (["http://api/api/v1/bookings/BK1/cancel"] if cancelled else [])
    assert record.cancel == ("202 BK1" if cancelled else "")
    if statuses == ["pending", "pending", "confirmed"]:
        assert api.reads == 3
