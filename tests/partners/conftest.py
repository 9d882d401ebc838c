"""Fixtures of the partner-boundary tests: partners, bookings in any state, partner snapshots,
the broker's queues, a real worker, and (for integration tests) real sandbox partner processes
whose webhooks reach this project through a live server.

Connector tests (test_connector*.py) bring their own servers and use none of the sandbox
fixtures here.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from django.conf import settings
from django.db import connection, connections
from django.utils import timezone

from bookings.models import Booking, BookingEvent
from bookings.states import BookingState
from partners.connectors.base import ReservationSnapshot
from partners.connectors.http import close_sessions
from partners.models import Adapter, Capability, Partner, ReservationStatus
from tests.factories import BookingFactory, PartnerFactory
from tests.helpers import queued_messages, unique_code, wait_until
from tests.sandbox_process import SandboxProcess

ROOT = Path(__file__).resolve().parents[2]
IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
S = BookingState
REFERENCE_CAPS = [
    Capability.IDEMPOTENCY_KEYS,
    Capability.LOOKUP_BY_REFERENCE,
    Capability.WEBHOOKS,
    Capability.ASYNC_CONFIRMATION,
]
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"partner-tests-webhook-secret-01").decode()
SANDBOX_KEY = "sandbox-partner-tests-key"


def delayed_messages(broker: dramatiq.Broker, queue_name: str) -> list[dramatiq.Message]:
    return queued_messages(broker, f"{queue_name}.DQ")


def timeline(booking: Booking) -> list[str]:
    return list(
        BookingEvent.objects.filter(booking=booking)
        .order_by("occurred_at", "id")
        .values_list("kind", flat=True)
    )


def transitions(booking: Booking) -> list[tuple[str, str]]:
    rows = BookingEvent.objects.filter(booking=booking).exclude(to_state="").order_by("occurred_at", "id")
    return [(row.from_state, row.to_state) for row in rows]


def snapshot(
    ref: str,
    status: str = ReservationStatus.CONFIRMED,
    *,
    version: int | None = 1,
    client_reference: str = "",
    modified_at: datetime | None = None,
    created_at: datetime | None = None,
) -> ReservationSnapshot:
    modified_at = modified_at or datetime(2027, 1, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=version or 0)
    raw = {"id": ref, "client_reference": client_reference, "status": status, "version": version}
    return ReservationSnapshot(
        partner_ref=ref,
        client_reference=client_reference,
        status=ReservationStatus(status),
        version=version,
        created_at=created_at,
        modified_at=modified_at,
        raw=raw,
    )


# --- rows --------------------------------------------------------------------------------------
@pytest.fixture
def ref_partner(db) -> Partner:
    """A reference partner row (nothing listens at its URL: unit tests make no calls)."""
    return PartnerFactory(
        code=unique_code("ref"),
        adapter=Adapter.REFERENCE,
        capabilities=list(REFERENCE_CAPS),
        webhook_secret=WEBHOOK_SECRET,
    )


@pytest.fixture
def legacy_partner(db) -> Partner:
    return PartnerFactory(
        code=unique_code("leg"),
        adapter=Adapter.LEGACY,
        capabilities=[Capability.CHANGE_LISTING],
        webhook_secret="",
        timezone="Europe/Berlin",
    )


# --- broker and worker -------------------------------------------------------------------------
@pytest.fixture
def clean_queues(broker) -> Callable[[Partner], str]:
    """Empty a partner's queues (its own and its audit queue, with their delay queues) now and at
    teardown; returns its own queue's name."""
    names: list[str] = []

    def clean(partner: Partner) -> str:
        for queue in partner.queue_names:
            for name in (queue, f"{queue}.DQ"):
                broker.client.delete(f"{broker.namespace}:{name}", f"{broker.namespace}:{name}.msgs")
        names.extend(partner.queue_names)
        return partner.queue_name

    yield clean
    for name in names:
        for queue in (name, f"{name}.DQ"):
            broker.client.delete(f"{broker.namespace}:{queue}", f"{broker.namespace}:{queue}.msgs")


@pytest.fixture
def reset_guard() -> Callable[[Partner], None]:
    """Forget a partner's breaker and concurrency state (Redis keys and this process's cache)."""
    from config.redis_client import redis_client
    from partners import guard

    def reset(partner: Partner) -> None:
        client = redis_client()
        keys = list(client.scan_iter(f"{settings.PARTNER_GUARD_NAMESPACE}:{partner.code}:*"))
        if keys:
            client.delete(*keys)
        guard._breakers.pop(partner.code, None)

    return reset


@pytest.fixture
def no_stray_db_sessions(transactional_db):
    """On PostgreSQL, end sessions that threads of this test left behind (the live server's,
    a killed subprocess's), so that flushing and dropping the test database never waits."""
    yield
    connections.close_all()
    if IS_POSTGRES:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture
def partner_worker(
    broker, transactional_db, no_stray_db_sessions
) -> Iterator[Callable[..., dramatiq.Worker]]:
    """Start a real Dramatiq worker (threads in this process, on Redis) once the partners exist.

    Unlike a bare `dramatiq.Worker`, it declares the given partners' queues (each one's own and
    its audit queue) before starting and, when stopped, removes the middleware the worker
    registered on the (process-wide) broker: left there, a later `declare_queue` would start
    consumers for the stopped worker, which would take messages off Redis that no thread ever
    runs.
    """
    started: list[dramatiq.Worker] = []

    def start(*partners: Partner, threads: int = 4) -> dramatiq.Worker:
        for partner in partners:
            for name in partner.queue_names:
                broker.declare_queue(name)
        worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=50)
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=10_000)
        broker.middleware[:] = [m for m in broker.middleware if getattr(m, "worker", None) is not worker]
    connections.close_all()


# --- sandbox partners ----------------------------------------------------------------------------
@dataclass
class Sandbox(SandboxProcess):
    """A sandbox partner process, and the partner code we register it as."""

    code: str = ""

    def live(self, client_reference: str) -> list[dict[str, Any]]:
        states = ("pending", "confirmed") if self.profile == "reference" else ("PENDING", "OK")
        key = "status" if self.profile == "reference" else "state"
        return [r for r in self.truth(client_reference) if r[key] in states]

    def webhook_attempts(self) -> list[dict[str, Any]]:
        return self.stats()["webhooks"]["attempt_log"]


@pytest.fixture(scope="session")
def sandboxes(live_server, tmp_path_factory) -> Iterator[dict[str, Sandbox]]:
    """One sandbox partner per profile for the session; the reference one signs webhooks to our
    live server under its partner code (fixed for the session, unique to this run)."""
    store = tmp_path_factory.mktemp("sandboxes")
    ref_code, legacy_code = unique_code("sbx-ref"), unique_code("sbx-leg")
    reference = Sandbox(
        "reference",
        store / "reference.sqlite3",
        SANDBOX_KEY,
        [
            "--webhook-url",
            f"{live_server.url}/partners/{ref_code}/webhooks/",
            "--webhook-secret",
            WEBHOOK_SECRET,
            "--timezone",
            "Europe/Berlin",
            "--hang-s",
            "5",
        ],
        seed=4242,
        code=ref_code,
    )
    legacy = Sandbox(
        "legacy",
        store / "legacy.sqlite3",
        SANDBOX_KEY,
        ["--timezone", "Europe/Berlin", "--hang-s", "5"],
        seed=4242,
        code=legacy_code,
    )
    started = []
    try:
        for sandbox in (reference, legacy):
            started.append(sandbox.start())
        yield {"reference": reference, "legacy": legacy}
    finally:
        for sandbox in started:
            sandbox.kill()


@dataclass
class Harness:
    """A sandbox partner registered as a Partner row, with the Redis state of this test."""

    sandbox: Sandbox
    partner: Partner
    broker: dramatiq.Broker

    @property
    def profile(self) -> str:
        return self.sandbox.profile

    def faults(self, **changes: Any) -> dict[str, Any]:
        return self.sandbox.set_faults(**changes)

    def booking(self, **fields: Any) -> Booking:
        offer = self.partner.offers.get()
        defaults = {
            "start_date": timezone.now().date() + timedelta(days=40),
            "status": S.REQUESTED,
            "deadline": timezone.now() + timedelta(minutes=30),
        }
        defaults.update(fields)
        defaults["end_date"] = defaults.get("end_date", defaults["start_date"] + timedelta(days=3))
        return BookingFactory(offer=offer, partner=self.partner, **defaults)

    def live(self, booking: Booking) -> list[dict[str, Any]]:
        return self.sandbox.live(booking.reference)

    def truth(self, booking: Booking) -> list[dict[str, Any]]:
        return self.sandbox.truth(booking.reference)


def _register(sandbox: Sandbox, *, capabilities: list[str] | None = None) -> Partner:
    from partners.services.registry import OfferSpec, partner_upsert

    partner, _ = partner_upsert(
        code=sandbox.code,
        adapter=sandbox.profile,
        base_url=sandbox.base_url,
        api_key=SANDBOX_KEY,
        capabilities=capabilities,
        webhook_secret=WEBHOOK_SECRET if sandbox.profile == "reference" else "",
        timezone_name="Europe/Berlin",
        timeouts=(0.5, 1.0),
        max_concurrency=8,
        offers=[OfferSpec.parse("hotel-42-dbl:120.00:EUR:4")],
    )
    return partner


@pytest.fixture
def fast_settings(settings):
    """Short delays, so that recoveries fit in a test (the logic is the production one)."""
    settings.PARTNER_SYNC_DELAY_S = 0.3
    settings.PARTNER_RETRY_MIN_S = 0.1
    settings.PARTNER_RETRY_BASE_S = 0.2
    settings.PARTNER_RETRY_MAX_S = 1.0
    settings.PARTNER_LISTING_SETTLE_S = 0.5
    settings.PARTNER_IN_FLIGHT_GRACE_S = 0.5
    settings.PARTNER_BREAKER_FAIL_MAX = 50  # faults are on purpose here; test_guard covers it
    settings.RECONCILE_SYNC_AGE_S = 2
    return settings


@pytest.fixture
def harness(
    request,
    sandboxes,
    transactional_db,
    broker,
    fast_settings,
    clean_queues,
    reset_guard,
    no_stray_db_sessions,
) -> Iterator[Callable[..., Harness]]:
    """`harness("reference" | "legacy", capabilities=None)`: a clean sandbox, registered."""
    made: list[Harness] = []

    def make(profile: str, *, capabilities: list[str] | None = None) -> Harness:
        sandbox = sandboxes[profile]
        sandbox.reset()
        partner = _register(sandbox, capabilities=capabilities)
        clean_queues(partner)
        reset_guard(partner)
        made.append(Harness(sandbox, partner, broker))
        return made[-1]

    yield make
    for harness in made:
        harness.sandbox.reset()  # stop redeliveries into the next test
        reset_guard(harness.partner)
    close_sessions()


# --- integration helpers -------------------------------------------------------------------------
def book(h: Harness, *, key: str | None = None) -> Booking:
    """A customer books through the booking service: committed, submission queued on commit."""
    from bookings.services import BookingRequest, booking_create
    from tests.factories import UserFactory

    offer = h.partner.offers.get()
    start = timezone.now().date() + timedelta(days=40)
    created = booking_create(
        customer=UserFactory(),
        request=BookingRequest(
            offer_id=offer.pk, start_date=start, end_date=start + timedelta(days=3), guests=2
        ),
        idempotency_key=key or f"customer-key-{uuid.uuid4().hex}",
    )
    return created.booking


def status_of(booking: Booking) -> str:
    return Booking.objects.values_list("status", flat=True).get(pk=booking.pk)


def wait_for_status(booking: Booking, *states: str, timeout_s: float = 15.0) -> str:
    return wait_until(
        lambda: (s := status_of(booking)) in states and s,
        timeout_s=timeout_s,
        what=f"{booking.reference} to reach {'/'.join(states)} (now {status_of(booking)})",
    )


# Moves a booking may make; anything else on the timeline is a regression.
ALLOWED_MOVES = {
    ("", "requested"),
    ("requested", "submitting"),
    ("submitting", "requested"),
    ("submitting", "unknown"),
    ("submitting", "pending_partner"),
    ("submitting", "confirmed"),
    ("submitting", "rejected"),
    ("submitting", "failed"),
    ("submitting", "needs_attention"),
    ("unknown", "requested"),
    ("unknown", "pending_partner"),
    ("unknown", "confirmed"),
    ("unknown", "rejected"),
    ("unknown", "failed"),
    ("unknown", "expired"),
    ("unknown", "needs_attention"),
    ("requested", "pending_partner"),
    ("requested", "confirmed"),
    ("requested", "expired"),
    ("pending_partner", "confirmed"),
    ("pending_partner", "rejected"),
    ("pending_partner", "failed"),
    ("pending_partner", "expired"),
    ("confirmed", "needs_attention"),
    ("confirmed", "cancel_requested"),
    ("cancel_requested", "cancelled"),
}


def assert_at_rest(h: Harness, booking: Booking, status: str) -> None:
    """Invariants at rest: the booking's state, at most one live partner reservation (ground
    truth), our records agree with the partner's, and the timeline never regressed. At rest means
    no call to the partner is out either: a booking confirmed by one path (the partner's webhook)
    may still have another's call in flight (status sync reading the partner after an ambiguous
    create), which ends in its own time."""
    wait_until(
        lambda: not booking.partner_attempts.filter(outcome="in_flight").exists(),
        what="every call to the partner to end",
        timeout_s=15,
    )
    booking.refresh_from_db()
    assert booking.status == status, f"{booking.reference}: {booking.status} {booking.attention_reason}"
    truth = h.truth(booking)
    live = h.live(booking)
    assert len(live) <= 1, f"{len(live)} live reservations at the partner: {live}"
    if status == S.CONFIRMED:
        assert len(live) == 1
        ours = booking.partner_reservations.get(partner_ref=str(_partner_id(h, live[0])))
        assert ours.status == "confirmed" and ours.compensation_requested_at is None
    if status in (S.REJECTED, S.FAILED, S.EXPIRED, S.CANCELLED):
        assert live == []
    known = {r.partner_ref: r.status for r in booking.partner_reservations.all()}
    for reservation in truth:  # every reservation the partner holds for the booking is known
        assert str(_partner_id(h, reservation)) in known, f"unknown to us: {reservation}"
    moves = transitions(booking)
    assert set(moves) <= ALLOWED_MOVES, f"unexpected moves: {set(moves) - ALLOWED_MOVES}"
    for (_, to_state), (from_state, _) in itertools.pairwise(moves):
        assert to_state == from_state, f"timeline does not chain: {moves}"


def _partner_id(h: Harness, reservation: dict[str, Any]) -> str:
    return str(reservation["id"] if h.profile == "reference" else reservation["booking_no"])


def partner_status(h: Harness, reservation: dict[str, Any]) -> str:
    if h.profile == "reference":
        return reservation["status"]
    return {"OK": "confirmed", "PENDING": "pending", "FAIL": "rejected", "CXL": "cancelled"}[
        reservation["state"]
    ]
