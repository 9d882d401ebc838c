"""Fixtures of the reconciliation tests: partners with queues of their own, bookings in any state,
the support and ops users of the demo groups, and Redis queue inspection (partner-side rows come
from tests/factories.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from bookings.models import Booking
from tests.factories import OfferFactory, PartnerFactory, UserFactory
from tests.helpers import queued_messages, unique_code

CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens, connect is refused at once


def queued(broker: dramatiq.Broker, queue_name: str) -> list[dramatiq.Message]:
    """Messages waiting on a queue of the Redis broker, ready and then delayed, in order."""
    return queued_messages(broker, queue_name) + queued_messages(broker, f"{queue_name}.DQ")


def calls(broker: dramatiq.Broker, queue_name: str) -> list[tuple[str, list]]:
    """(actor, args) of each queued message."""
    return [(m.actor_name, list(m.args)) for m in queued(broker, queue_name)]


def actor_names(broker: dramatiq.Broker, queue_name: str) -> list[str]:
    return [m.actor_name for m in queued(broker, queue_name)]


@pytest.fixture
def workers_on(broker, transactional_db) -> Iterator[Callable[..., object]]:
    """`with workers_on(queue, ...)`: a real Dramatiq worker serving only these queues."""

    @contextmanager
    def serve(*queues: str) -> Iterator[dramatiq.Worker]:
        for name in queues:
            broker.declare_queue(name)
        worker = dramatiq.Worker(broker, queues=set(queues), worker_threads=2, worker_timeout=50)
        worker.start()
        try:
            yield worker
        finally:
            worker.stop(timeout=10_000)
            # Off the process-wide broker, or a later declare_queue starts consumers for it.
            broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]
            connections.close_all()

    return serve


@pytest.fixture
def typed_by(monkeypatch) -> Callable[[str], str]:
    """Sets the OS user the shell's commands are typed by (`ops:<os user>`, kept beside `--as`):
    two people at the shell are two OS users, as the two-person rule tells them apart."""

    def at_shell(os_user: str) -> str:
        monkeypatch.setattr("reconciliation.services.support.permissions.os_user", lambda: os_user)
        return os_user

    return at_shell


@pytest.fixture
def partner(db):
    return PartnerFactory(code=unique_code("rc"), base_url=CLOSED_PORT_URL)


@pytest.fixture
def legacy_partner(db):
    return PartnerFactory(
        code=unique_code("rc"),
        adapter="legacy",
        base_url=CLOSED_PORT_URL,
        capabilities=["change_listing"],
        webhook_secret="",
        timezone="Europe/Berlin",
    )


@pytest.fixture
def offer(partner):
    return OfferFactory(partner=partner)


@pytest.fixture
def make_booking(make_booking, offer) -> Callable[..., Booking]:
    """Bookings of this directory's offer, not due for a check until a test makes them due."""

    def make(**fields: Any) -> Booking:
        fields.setdefault("next_check_at", timezone.now() + timedelta(minutes=5))
        return make_booking(offer.partner, offer=offer, **fields)

    return make


@pytest.fixture
def partner_queue(broker, partner) -> str:
    broker.flush(partner.queue_name)
    broker.flush(f"{partner.queue_name}.DQ")
    yield partner.queue_name
    broker.flush(partner.queue_name)
    broker.flush(f"{partner.queue_name}.DQ")


@pytest.fixture
def audit_queue(broker, partner) -> str:
    """The partner's audit queue, where the sweeper's re-reads of confirmed bookings go."""
    broker.flush(partner.audit_queue_name)
    yield partner.audit_queue_name
    broker.flush(partner.audit_queue_name)


@pytest.fixture
def sweep_queue(broker) -> str:
    """The reconciliation queue, where the sweeper's per-booking messages go."""
    for name in ("reconciliation", "reconciliation.DQ"):
        broker.flush(name)
    yield "reconciliation"
    for name in ("reconciliation", "reconciliation.DQ"):
        broker.flush(name)


@pytest.fixture
def webhooks_queue(broker) -> str:
    broker.flush("webhooks")
    yield "webhooks"
    broker.flush("webhooks")


# --- console users (of the demo groups, the root conftest's `groups`) ----------------
def _staff(groups, group: str):
    user = UserFactory(username=f"{group}-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.groups.set([groups[group]])
    return user


@pytest.fixture
def support_user(groups):
    return _staff(groups, "support")


@pytest.fixture
def ops_user(groups):
    return _staff(groups, "ops")


@pytest.fixture
def support_client(support_user) -> Client:
    client = Client()
    client.force_login(support_user)
    return client


@pytest.fixture
def ops_client(ops_user) -> Client:
    client = Client()
    client.force_login(ops_user)
    return client


@pytest.fixture
def superuser_client(db) -> Client:
    user = UserFactory(username=f"root-{uuid.uuid4().hex[:6]}", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client
