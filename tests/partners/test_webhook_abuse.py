"""The webhook URL under abuse: anyone can post to it.

A refused delivery is kept only as bounded evidence (kept headers, source, size, hash, first
bytes), at most at a rate per source and per partner; it is never on a booking's timeline, only
in its partner's feed, marked unverified. A flood of forged deliveries against the receiver as
the Procfile runs it neither grows the database beyond those limits nor keeps an authentic
delivery out; how much it slows them is a benchmark's figure (`python -m bench webhook_flood`).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.client import HTTPConnection

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from bench.webhook_flood import flood_statuses, procfile_argv, start_flood
from bookings.states import BookingState
from partners.models import InboundEvent, InboundResult, InboundState, Partner
from partners.services.webhooks import inbound_event_process
from reconciliation.selectors.partner_feed import partner_feed
from reconciliation.selectors.partner_health import partner_health
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.services.sweeper import sweep
from tests.factories import InboundEventFactory, UserFactory
from tests.helpers import wait_until
from tests.partners.conftest import WEBHOOK_SECRET
from tests.sandbox_process import free_port

FORGED_SECRET = "whsec_" + "Zm9yZ2VyLWtleS1ub3QtdGhlLXBhcnRuZXJzLTAx"


def delivery(booking_reference: str, *, pad: int = 0) -> bytes:
    data = {
        "id": f"R-{uuid.uuid4().hex[:8]}",
        "client_reference": booking_reference,
        "status": "cancelled",
        "version": 9,
        "updated_at": "2027-01-01T12:00:00+00:00",
    }
    body = {"type": "reservation.updated", "data": data, **({"pad": "x" * pad} if pad else {})}
    return json.dumps(body).encode()


def signed_headers(raw: bytes, *, secret: str = WEBHOOK_SECRET, at: datetime | None = None) -> dict[str, str]:
    event_id, at = f"msg_{uuid.uuid4().hex}", at or datetime.now(UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(event_id, at, raw.decode()),
        "content-type": "application/json",
    }


def _as_meta(headers: dict[str, str]) -> dict[str, str]:
    return {"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()}


@pytest.fixture
def post(client, ref_partner) -> Callable[..., object]:
    def send(raw: bytes, headers: dict[str, str], *, source: str = "203.0.113.7"):
        meta = {k: v for k, v in _as_meta(headers).items() if k != "HTTP_CONTENT_TYPE"}
        return client.post(
            f"/partners/{ref_partner.code}/webhooks/",
            data=raw,
            content_type="application/json",
            REMOTE_ADDR=source,
            **meta,
        )

    return send


@pytest.fixture
def limits(settings):
    """Small storage limits in a counter namespace of this test's own."""
    settings.WEBHOOK_REFUSED_SOURCE_RATE = "3/hour"
    settings.WEBHOOK_REFUSED_PARTNER_RATE = "5/hour"
    settings.WEBHOOK_EVIDENCE_BYTES = 256
    settings.API_THROTTLE_NAMESPACE = f"throttle-{uuid.uuid4().hex}"
    return settings


def _unverified(partner: Partner) -> list[InboundEvent]:
    return list(InboundEvent.objects.filter(partner=partner, signature_valid=False).order_by("id"))


# --- in process: what is stored, and where it shows ---------------------------------------------
def test_refused_deliveries_are_stored_as_bounded_evidence_up_to_their_limits(
    post, ref_partner, limits, make_booking
):
    booking = make_booking(ref_partner, BookingState.PENDING_PARTNER)
    raw = delivery(booking.reference, pad=1000)

    answers = [post(raw, signed_headers(raw, secret=FORGED_SECRET), source="198.51.100.1") for _ in range(5)]
    answers += [post(raw, signed_headers(raw, secret=FORGED_SECRET), source="198.51.100.2") for _ in range(5)]

    assert [a.status_code for a in answers] == [401] * 10  # answered alike, stored or not
    kept = _unverified(ref_partner)
    # three from the first source (its limit), then two from the second (the partner's limit of five)
    assert [e.source_address for e in kept] == ["198.51.100.1"] * 3 + ["198.51.100.2"] * 2
    for event in kept:
        assert (event.state, event.result, event.booking_id) == (
            InboundState.REJECTED,
            InboundResult.REJECTED,
            None,
        )
        assert bytes(event.raw_body) == raw[:256]
        assert (event.body_size, event.body_sha256) == (len(raw), hashlib.sha256(raw).hexdigest())
        assert set(event.headers) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    health = next(row for row in partner_health() if row.partner.pk == ref_partner.pk)
    assert (health.deliveries["unverified"], health.unverified_seen) == (5, 10)


def test_a_forged_flood_does_not_use_up_the_authentic_refusals_budget(
    post, ref_partner, limits, make_booking
):
    booking = make_booking(ref_partner, BookingState.PENDING_PARTNER)
    forged = delivery(booking.reference)
    for _ in range(8):
        post(forged, signed_headers(forged, secret=FORGED_SECRET))

    late = delivery(booking.reference)
    response = post(late, signed_headers(late, at=datetime.now(UTC) - timedelta(minutes=20)))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "timestamp_out_of_tolerance"
    stored = InboundEvent.objects.get(partner=ref_partner, signature_valid=True)
    assert (stored.result, stored.booking_id) == (InboundResult.LATE, booking.pk)


def test_without_redis_unverified_deliveries_are_not_stored_and_authentic_ones_are(
    post, ref_partner, limits, make_booking
):
    limits.API_THROTTLE_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    booking = make_booking(ref_partner, BookingState.PENDING_PARTNER)
    forged = delivery(booking.reference)
    late = delivery(booking.reference)

    refused = post(forged, signed_headers(forged, secret=FORGED_SECRET))
    skewed = post(late, signed_headers(late, at=datetime.now(UTC) + timedelta(minutes=20)))

    assert (refused.status_code, skewed.status_code) == (401, 401)
    assert _unverified(ref_partner) == []
    assert InboundEvent.objects.get(partner=ref_partner).result == InboundResult.LATE


def test_a_forged_delivery_naming_a_booking_is_only_in_the_partner_feed_marked_unverified(
    post, ref_partner, make_booking, groups
):
    booking = make_booking(ref_partner, BookingState.CONFIRMED)
    raw = delivery(booking.reference)
    post(raw, signed_headers(raw, secret=FORGED_SECRET))
    forged = InboundEvent.objects.get(partner=ref_partner)

    assert [row for row in booking_timeline(booking) if row.source == "inbound"] == []
    [row] = partner_feed(ref_partner)
    assert (row.delivery.pk, row.mark, row.booking_reference) == (forged.pk, "unverified", "")

    support = UserFactory(username=f"support-{uuid.uuid4().hex[:6]}", is_staff=True)
    support.groups.set([groups["support"]])
    browser = Client()
    browser.force_login(support)
    page = browser.get(reverse("admin:partners_partner_feed", args=[ref_partner.pk]), {"show": "unverified"})
    assert page.status_code == 200
    html = page.content.decode()
    assert f'data-delivery="{forged.pk}" data-mark="unverified"' in html
    assert booking.reference in html  # in the evidence as it was posted, linked to nothing
    assert reverse("admin:bookings_booking_change", args=[booking.pk]) not in html


def test_the_sweeper_deletes_unverified_evidence_after_its_retention(ref_partner, make_booking, settings):
    settings.WEBHOOK_REFUSED_RETENTION_DAYS = 7
    booking = make_booking(ref_partner, BookingState.CONFIRMED)
    old = timezone.now() - timedelta(days=8)
    expired = InboundEventFactory(
        partner=ref_partner, signature_valid=False, state=InboundState.REJECTED, received_at=old
    )
    recent = InboundEventFactory(
        partner=ref_partner, signature_valid=False, state=InboundState.REJECTED, received_at=timezone.now()
    )
    authentic = InboundEventFactory(
        partner=ref_partner,
        booking=booking,
        state=InboundState.REJECTED,
        result=InboundResult.LATE,
        received_at=old,
    )

    assert sweep(dry_run=True, partner=ref_partner).refused_pruned == 1
    assert sweep(partner=ref_partner).refused_pruned == 1

    left = set(InboundEvent.objects.filter(partner=ref_partner).values_list("pk", flat=True))
    assert left == {recent.pk, authentic.pk} and expired.pk not in left


# --- the receiver as the Procfile runs it, under a flood ------------------------------------------
# How much the flood slows authentic deliveries is measured, not asserted: `python -m bench
# webhook_flood` (the attacker and the Procfile's command are the benchmark's).
FLOOD = 10_000
FLOOD_CONNECTIONS = 4
FLOOD_SOURCES = 200
FLOOD_PAD = 8_000  # bytes of padding in each forged body
SOURCE_LIMIT, PARTNER_LIMIT, EVIDENCE_BYTES = 5, 100, 1024
AUTHENTIC_EVERY_S = 0.1  # one authentic delivery this often while the flood is on
STAY = {
    "start_date": date(2027, 3, 1),
    "end_date": date(2027, 3, 4),
    "guests": 2,
    "total_price": Decimal("360.00"),
    "currency": "EUR",
}


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def receiver(transactional_db, no_stray_db_sessions, broker, tmp_path) -> Iterator[Callable[..., int]]:
    """The partners' webhook receiver started exactly as the Procfile's `webhooks` line starts it,
    with the given environment; its port."""
    started: list[subprocess.Popen] = []

    def start(**env: str) -> int:
        port = free_port()
        log = tmp_path / f"receiver-{port}.log"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(),
            **env,
        }
        process = subprocess.Popen(
            procfile_argv("webhooks", WEBHOOK_PORT=port),
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        started.append(process)

        def answers() -> bool:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                return _get(port, "/healthz") == 200
            except OSError:
                return False

        wait_until(answers, timeout_s=60, interval_s=0.1, what="the webhook receiver to answer")
        return port

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=30)


def _get(port: int, path: str) -> int:
    connection = HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def confirmation(booking_reference: str, version: int) -> bytes:
    """The partner's word that it holds the booking (on the terms of `STAY`), at `version`."""
    updated_at = datetime(2027, 1, 1, 12, tzinfo=UTC) + timedelta(seconds=version)
    data = {
        "id": "R-AUTHENTIC",
        "client_reference": booking_reference,
        "product_id": "hotel-42-dbl",
        "start_date": "2027-03-01",
        "end_date": "2027-03-04",
        "guests": 2,
        "total_price": "360.00",
        "currency": "EUR",
        "status": "confirmed",
        "reason": None,
        "version": version,
        "created_at": "2027-01-01T12:00:00+00:00",
        "updated_at": updated_at.isoformat(),
    }
    return json.dumps({"type": "reservation.updated", "data": data}).encode()


@pytest.mark.integration
@pytest.mark.timeout(300)  # well under a minute; a busy machine slows the flood, and the test with it
def test_ten_thousand_forged_deliveries_are_refused_and_stored_within_limits_while_authentic_ones_apply(
    receiver, ref_partner, make_booking, settings
):
    settings.API_THROTTLE_NAMESPACE = f"throttle-{uuid.uuid4().hex}"  # the receiver's counters too
    port = receiver(
        TRUSTED_PROXY_COUNT="1",
        WEBHOOK_REFUSED_SOURCE_RATE=f"{SOURCE_LIMIT}/hour",
        WEBHOOK_REFUSED_PARTNER_RATE=f"{PARTNER_LIMIT}/hour",
        WEBHOOK_EVIDENCE_BYTES=str(EVIDENCE_BYTES),
        API_THROTTLE_NAMESPACE=settings.API_THROTTLE_NAMESPACE,
    )
    booking = make_booking(ref_partner, BookingState.CONFIRMED)  # the one the forgers name
    ours = make_booking(ref_partner, BookingState.PENDING_PARTNER, **STAY)  # the partner confirms it
    path = f"/partners/{ref_partner.code}/webhooks/"
    authentic = HTTPConnection("127.0.0.1", port, timeout=60)

    # when 10,000 forged deliveries arrive as fast as the receiver answers them, from 200 addresses,
    # while the partner sends an authentic delivery every 0.1 s
    flood = start_flood(
        port,
        path,
        delivery(booking.reference, pad=FLOOD_PAD),
        total=FLOOD,
        connections=FLOOD_CONNECTIONS,
        sources=FLOOD_SOURCES,
        rate_per_s=0,
        niceness=0,  # nothing is timed: on a busy machine a niced attacker would only make it slow
    )
    sent: list[str] = []  # the authentic deliveries' ids, in the order sent
    answered: list[int] = []
    while flood.poll() is None:
        raw = confirmation(ours.reference, version=len(sent) + 1)
        headers = signed_headers(raw)
        authentic.request("POST", path, body=raw, headers=headers)
        response = authentic.getresponse()
        response.read()
        sent.append(headers["webhook-id"])
        answered.append(response.status)
        if flood.poll() is None:
            time.sleep(AUTHENTIC_EVERY_S)
    statuses = flood_statuses(flood)
    authentic.close()

    # then every forged delivery was refused, and what is kept of them is within its limits
    assert statuses == {"401": FLOOD}
    kept = _unverified(ref_partner)
    assert len(kept) == PARTNER_LIMIT
    assert max(Counter(e.source_address for e in kept).values()) <= SOURCE_LIMIT
    kept_bytes = sum(len(bytes(e.raw_body)) + len(json.dumps(e.headers)) + len(e.error) for e in kept)
    assert kept_bytes <= PARTNER_LIMIT * (EVIDENCE_BYTES + 2_000)
    assert all(e.body_size > FLOOD_PAD and e.booking_id is None for e in kept)
    assert [row for row in booking_timeline(booking) if row.source == "inbound"] == []
    health = next(row for row in partner_health() if row.partner.pk == ref_partner.pk)
    assert (health.deliveries["unverified"], health.unverified_seen) == (PARTNER_LIMIT, FLOOD)

    # and every authentic one was accepted, stored and, processed, applied to its booking
    assert answered == [202] * len(sent)
    stored = {e.event_id: e for e in InboundEvent.objects.filter(partner=ref_partner, signature_valid=True)}
    assert sorted(stored) == sorted(sent)
    for event_id in sent:
        inbound_event_process(stored[event_id].pk)
    results = Counter(
        InboundEvent.objects.filter(partner=ref_partner, signature_valid=True).values_list(
            "state", "result", "booking"
        )
    )
    assert results == {(InboundState.PROCESSED, InboundResult.APPLIED, ours.pk): len(sent)}
    ours.refresh_from_db()
    assert ours.status == BookingState.CONFIRMED
