"""Fixtures of the reconciliation tests: partners with queues of their own, bookings in any state,
partner-side rows, the support and ops users of the demo groups, and Redis queue inspection."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dramatiq
import pytest
from django.test import Client
from django.utils import timezone

from bookings.models import Booking
from partners.models import (
    InboundEvent,
    InboundState,
    ObservationResult,
    Operation,
    Outcome,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
    ReservationStatus,
    Source,
)
from tests.factories import BookingFactory, OfferFactory, PartnerFactory, UserFactory

CLOSED_PORT_URL = "http://127.0.0.1:9"  # discard port: nothing listens, connect is refused at once


def unique_code() -> str:
    """A partner code no other test (or run sharing this Redis) uses: its queue is ours alone."""
    return f"rc-{uuid.uuid4().hex[:12]}"


def queued(broker: dramatiq.Broker, queue_name: str) -> list[dramatiq.Message]:
    """Messages waiting on a queue of the Redis broker, ready and delayed, in order."""
    messages = []
    for name in (queue_name, f"{queue_name}.DQ"):
        key = f"{broker.namespace}:{name}"
        ids = broker.client.lrange(key, 0, -1)
        encoded = broker.client.hmget(f"{key}.msgs", ids) if ids else []
        messages += [dramatiq.Message.decode(data) for data in encoded]
    return messages


def calls(broker: dramatiq.Broker, queue_name: str) -> list[tuple[str, list]]:
    """(actor, args) of each queued message."""
    return [(m.actor_name, list(m.args)) for m in queued(broker, queue_name)]


def actor_names(broker: dramatiq.Broker, queue_name: str) -> list[str]:
    return [m.actor_name for m in queued(broker, queue_name)]


@pytest.fixture
def partner(db):
    return PartnerFactory(code=unique_code(), base_url=CLOSED_PORT_URL)


@pytest.fixture
def legacy_partner(db):
    return PartnerFactory(
        code=unique_code(),
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
def make_booking(offer) -> Callable[..., Booking]:
    def make(**fields: Any) -> Booking:
        fields.setdefault("next_check_at", timezone.now() + timedelta(minutes=5))
        return BookingFactory(offer=offer, partner=offer.partner, **fields)

    return make


@pytest.fixture
def partner_queue(broker, partner) -> str:
    broker.flush(partner.queue_name)
    broker.flush(f"{partner.queue_name}.DQ")
    yield partner.queue_name
    broker.flush(partner.queue_name)
    broker.flush(f"{partner.queue_name}.DQ")


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


def add_reservation(booking: Booking, ref: str | None = None, **fields: Any) -> PartnerReservation:
    fields.setdefault("status", ReservationStatus.CONFIRMED)
    fields.setdefault("learned_from", Source.RESPONSE)
    fields.setdefault("client_reference", booking.reference)
    fields.setdefault("version", 1)
    return PartnerReservation.objects.create(
        partner=booking.partner, booking=booking, partner_ref=ref or f"R-{uuid.uuid4().hex[:8]}", **fields
    )


def add_attempt(booking: Booking, **fields: Any) -> PartnerAttempt:
    fields.setdefault("operation", Operation.CREATE)
    fields.setdefault("outcome", Outcome.OK)
    fields.setdefault("idempotency_key", booking.partner_key)
    return PartnerAttempt.objects.create(partner=booking.partner, booking=booking, **fields)


def add_fence(booking: Booking, *, age: timedelta = timedelta(minutes=10)) -> PartnerAttempt:
    """An ambiguous create whose outcome nobody has resolved: it fences the booking."""
    return add_attempt(booking, outcome=Outcome.AMBIGUOUS, started_at=timezone.now() - age)


def add_observation(reservation: PartnerReservation, **fields: Any) -> PartnerObservation:
    fields.setdefault("source", Source.LOOKUP)
    fields.setdefault("status", reservation.status)
    fields.setdefault("version", reservation.version)
    fields.setdefault("result", ObservationResult.APPLIED)
    return PartnerObservation.objects.create(reservation=reservation, booking=reservation.booking, **fields)


def add_inbound(partner, *, body: bytes = b'{"type": "reservation.updated"}', **fields: Any) -> InboundEvent:
    fields.setdefault("event_id", f"msg_{uuid.uuid4().hex[:10]}")
    fields.setdefault("signature_valid", True)
    fields.setdefault("state", InboundState.PROCESSED)
    fields.setdefault("headers", {"webhook-id": fields["event_id"]})
    return InboundEvent.objects.create(partner=partner, raw_body=body, **fields)


# --- console users ----------------------------------------------------------------
@pytest.fixture
def groups(db):
    from reconciliation.management.commands.create_demo_data import ensure_groups

    return ensure_groups()


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
