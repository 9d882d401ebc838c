"""Outages reach nobody as a 500, and everything comes back by itself.

Each test owns the server it stops (a Redis, a PostgreSQL; never the machine's shared ones) and
runs the project's real processes against it: gunicorn, a Dramatiq worker, the scheduler and a
sandbox partner, as `make run` does. It stops the server around live requests and starts it again
without restarting any of them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest
import redis
import requests
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from config.cache import FailSoftRedisCache
from partners.models import InboundEvent, InboundState
from partners.services.registry import OfferSpec, partner_upsert
from reconciliation.management.commands.create_demo_data import CUSTOMER_PASSWORD, DEMO_TOKEN
from tests.factories import TokenFactory, UserFactory
from tests.helpers import unique_code, wait_until
from tests.own_servers import OwnPostgres, ProjectProcesses, own_redis
from tests.partners.conftest import SANDBOX_KEY, WEBHOOK_SECRET
from tests.sandbox_process import PERFECT_FAULTS, SandboxProcess, free_port

S = BookingState
IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
# Short enough for a test; the logic is the production one.
FAST = {
    "BOOKING_SUBMIT_GRACE_S": "1",  # a booking not queued is due for the sweeper after this
    "RECONCILE_INBOUND_STALE_S": "1",  # a webhook not processed is queued again after this
    "PARTNER_QUEUE_REFRESH_S": "1",
}
ASYNC_CONFIRM_S = 3  # the partner confirms (and sends its webhook) this long after a create


def _database_url() -> str:
    """This test's database, for processes of its own."""
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def _stay() -> dict:
    start = date.today() + timedelta(days=40)
    return {"start_date": str(start), "end_date": str(start + timedelta(days=3)), "guests": 2}


def _book(api: requests.Session, base: str, offer_id: int, key: str) -> requests.Response:
    return api.post(
        f"{base}/api/v1/bookings",
        json={"offer": offer_id, **_stay()},
        headers={"Idempotency-Key": key},
        timeout=10,
    )


def _assert_unavailable(response: requests.Response) -> None:
    """503 in the one error shape, with when to come back."""
    assert response.status_code == 503, response.text[:500]
    assert response.json()["error"]["code"] == "service_unavailable"
    assert response.headers["Retry-After"] == str(settings.UNAVAILABLE_RETRY_AFTER_S)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., ProjectProcesses]]:
    """`processes(**env)`: the project's processes with this environment; all stopped at teardown."""
    made: list[ProjectProcesses] = []

    def make(**env: str) -> ProjectProcesses:
        made.append(ProjectProcesses(tmp_path, env))
        return made[-1]

    yield make
    for group in made:
        group.stop_all()


# --- Redis ------------------------------------------------------------------------------------
def test_the_shared_cache_misses_while_redis_is_down_and_a_claim_still_fails(tmp_path: Path):
    cache = FailSoftRedisCache(f"unix://{tmp_path}/no-redis.sock?db=0", {})

    assert cache.get("confirmation-times", "computed instead") == "computed instead"
    cache.set("confirmation-times", "dropped")
    with pytest.raises(redis.ConnectionError):
        cache.add("support-token", "1")  # a claim nobody can make is not taken as made


@pytest.fixture
def redis_of_our_own(tmp_path: Path):
    server = own_redis(tmp_path / "redis-var")
    yield server
    server.stop()


@pytest.fixture
def reference_sandbox(tmp_path: Path) -> Iterator[tuple[SandboxProcess, str, int]]:
    """A reference sandbox partner, the partner code it signs its webhooks for, and the port of
    the web server (started later) that its webhooks go to."""
    web_port = free_port()
    code = unique_code("outage")
    sandbox = SandboxProcess(
        "reference",
        tmp_path / "reference.sqlite3",
        SANDBOX_KEY,
        [
            "--webhook-url",
            f"http://127.0.0.1:{web_port}/partners/{code}/webhooks/",
            "--webhook-secret",
            WEBHOOK_SECRET,
        ],
    ).start()
    yield sandbox, code, web_port
    sandbox.kill()


def test_redis_down_reads_answer_bookings_and_webhooks_are_kept_and_processed_when_it_returns(
    transactional_db, redis_of_our_own, reference_sandbox, processes
):
    sandbox, code, web_port = reference_sandbox
    sandbox.set_faults(**{**PERFECT_FAULTS, "async_confirm_delay_s": ASYNC_CONFIRM_S})
    partner, _ = partner_upsert(
        code=code,
        adapter="reference",
        base_url=sandbox.base_url,
        api_key=SANDBOX_KEY,
        webhook_secret=WEBHOOK_SECRET,
        timeouts=(0.5, 2.0),
        offers=[OfferSpec.parse("hotel-42-dbl:120.00:EUR:4")],
    )
    offer = partner.offers.get()
    customer = UserFactory()
    api = requests.Session()
    api.headers["Authorization"] = f"Token {TokenFactory(user=customer).key}"
    browser = Client()
    browser.force_login(customer)  # a session in the database, as the log-in page makes
    page = requests.Session()
    page.cookies.set(settings.SESSION_COOKIE_NAME, browser.cookies[settings.SESSION_COOKIE_NAME].value)

    stack = processes(DATABASE_URL=_database_url(), REDIS_URL=redis_of_our_own.url, **FAST)
    stack.manage("worker", "rundramatiq", "--processes", "1", "--threads", "4")
    stack.manage("scheduler", "run_scheduler", "--interval", "0.5")
    base = stack.web(port=web_port)

    # A booking the partner holds as pending; its confirmation (and webhook) comes later.
    first = _book(api, base, offer.pk, "before-the-outage")
    assert first.status_code == 202, first.text
    held = Booking.objects.get(reference=first.json()["reference"])
    wait_until(
        lambda: Booking.objects.filter(pk=held.pk, status=S.PENDING_PARTNER).exists(),
        what=f"the worker to submit the booking (worker log: {stack.log('worker')})",
        timeout_s=30,
    )

    redis_of_our_own.stop()
    stopped_at = timezone.now()

    health = requests.get(f"{base}/healthz", timeout=10)
    assert health.status_code == 503 and health.headers["Retry-After"]
    assert health.json() == {"status": "unavailable", "checks": {"database": True, "broker": False}}
    # Reads answer: the API (the rate limit lets them through uncounted) and the pages.
    assert api.get(f"{base}/api/v1/offers", timeout=10).status_code == 200
    assert api.get(f"{base}/api/v1/bookings/{held.reference}", timeout=10).json()["status"] == "pending"
    assert page.get(f"{base}/bookings/{held.reference}/", timeout=10).status_code == 200
    # A booking is stored and accepted; nothing could be queued, and the customer is not told otherwise.
    during = _book(api, base, offer.pk, "during-the-outage")
    assert during.status_code == 202, during.text
    kept = Booking.objects.get(reference=during.json()["reference"])
    assert (kept.status, during.json()["status"]) == (S.REQUESTED, "pending")
    assert _book(api, base, offer.pk, "during-the-outage").json()["reference"] == kept.reference
    # The partner's confirmation arrives now: stored and acknowledged, not yet applied.
    webhook = wait_until(
        lambda: InboundEvent.objects.filter(partner=partner, received_at__gte=stopped_at).first(),
        what="the partner's webhook during the outage",
        timeout_s=ASYNC_CONFIRM_S + 10,
    )
    assert webhook.state == InboundState.RECEIVED
    assert wait_until(
        lambda: sandbox.stats()["webhooks"]["attempts_by_code"].get("202"), what="the acknowledgement"
    )
    assert Booking.objects.get(pk=held.pk).status == S.PENDING_PARTNER
    sandbox.set_faults(async_confirm_delay_s=None)  # the next create confirms at once

    redis_of_our_own.start()

    wait_until(lambda: _status(f"{base}/healthz") == 200, what="healthz to recover", timeout_s=10)
    # The sweeper queues both; the worker (reconnected by itself) applies and submits them.
    wait_until(
        lambda: InboundEvent.objects.filter(pk=webhook.pk, state=InboundState.PROCESSED).exists(),
        what=f"the stored webhook to be processed (scheduler log: {stack.log('scheduler')})",
        timeout_s=30,
    )
    wait_until(
        lambda: Booking.objects.filter(pk__in=[held.pk, kept.pk], status=S.CONFIRMED).count() == 2,
        what=f"both bookings to be confirmed (worker log: {stack.log('worker')})",
        timeout_s=30,
    )
    assert api.get(f"{base}/api/v1/bookings/{kept.reference}", timeout=10).json()["status"] == "confirmed"
    assert [r["status"] for r in sandbox.truth(kept.reference)] == ["confirmed"]  # submitted once


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.ConnectionError:
        return None


# --- PostgreSQL -------------------------------------------------------------------------------
BOOKED_BEFORE = "booked-before-the-outage"


def _logged_in(base: str, username: str, password: str) -> requests.Session:
    """A browser's session on the site, logged in through the log-in page."""
    browser = requests.Session()
    form = browser.get(f"{base}/account/login/", timeout=10)
    assert form.status_code == 200, form.text[:500]
    token = browser.cookies["csrftoken"]
    answer = browser.post(
        f"{base}/account/login/",
        data={"csrfmiddlewaretoken": token, "username": username, "password": password},
        timeout=10,
        allow_redirects=False,
    )
    assert answer.status_code == 302, answer.text[:500]
    return browser


@pytest.fixture
def postgres_of_our_own() -> Iterator[OwnPostgres]:
    server = OwnPostgres().init()
    yield server
    server.destroy()


@pytest.mark.skipif(not IS_POSTGRES, reason="the PostgreSQL outage is proven in the PostgreSQL run")
def test_postgres_down_is_a_503_with_retry_after_nothing_half_written_and_recovery_without_restart(
    postgres_of_our_own, redis_of_our_own, processes, tmp_path
):
    stack = processes(DATABASE_URL=postgres_of_our_own.url, REDIS_URL=redis_of_our_own.url)
    for step in (["migrate", "--noinput", "-v0"], ["create_demo_data", "--allow-production"]):
        name = f"setup-{step[0]}"
        assert stack.manage(name, *step).wait(timeout=120) == 0, stack.log(name)
    base = stack.web()
    api = requests.Session()
    api.headers["Authorization"] = f"Token {DEMO_TOKEN}"
    offer_id = api.get(f"{base}/api/v1/offers", timeout=10).json()["results"][0]["id"]
    # A customer logged in on the site (a session in the database), on their booking's cancel page.
    mine = _book(api, base, offer_id, BOOKED_BEFORE).json()["reference"]
    browser = _logged_in(base, "demo-customer", CUSTOMER_PASSWORD)
    assert browser.get(f"{base}/bookings/{mine}/cancel/", timeout=10).status_code == 200

    # Customers keep booking while the database goes away and comes back.
    answers: dict[str, int] = {}
    stop = threading.Event()

    def keep_booking() -> None:
        session = requests.Session()
        session.headers.update(api.headers)
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            key = f"outage-{uuid.uuid4().hex}"
            response = _book(session, base, offer_id, key)
            answers[key] = response.status_code
            if response.status_code == 503:
                _assert_unavailable(response)

    customer = threading.Thread(target=keep_booking)
    customer.start()
    try:
        wait_until(lambda: 202 in answers.values(), what="a booking before the outage", timeout_s=10)
        postgres_of_our_own.stop()
        wait_until(lambda: list(answers.values())[-3:] == [503] * 3, what="503s while down", timeout_s=15)

        _assert_unavailable(api.get(f"{base}/api/v1/bookings", timeout=10))
        health = requests.get(f"{base}/healthz", timeout=10)
        assert (health.status_code, health.json()["checks"]) == (503, {"database": False, "broker": True})
        page = requests.get(f"{base}/", timeout=10)
        assert page.status_code == 503 and "try again" in page.text
        assert page.headers["Retry-After"] == str(settings.UNAVAILABLE_RETRY_AFTER_S)
        # A page's form from a logged-in customer: who they are cannot be read either (the page
        # rate limit asks before the view runs), and that is the same 503 page, not the 500 page.
        form = browser.post(
            f"{base}/bookings/{mine}/cancel/",
            data={"csrfmiddlewaretoken": browser.cookies["csrftoken"], "expected_fee": "0.00"},
            timeout=10,
            allow_redirects=False,
        )
        assert form.status_code == 503 and "try again" in form.text, form.text[:500]
        assert form.headers["Retry-After"] == str(settings.UNAVAILABLE_RETRY_AFTER_S)
        # The site's own error pages show its header, which reads who is logged in: an address
        # not found, and a form failing its CSRF check, are that 503 page too, not the 500 page.
        missing = browser.get(f"{base}/no-such-page/", timeout=10)
        expired = browser.post(
            f"{base}/bookings/{mine}/cancel/",
            data={"csrfmiddlewaretoken": "x" * 64, "expected_fee": "0.00"},
            timeout=10,
            allow_redirects=False,
        )
        for answer in (missing, expired):
            assert answer.status_code == 503 and "try again" in answer.text, answer.text[:500]
            assert answer.headers["Retry-After"] == str(settings.UNAVAILABLE_RETRY_AFTER_S)

        postgres_of_our_own.start()
        wait_until(lambda: _status(f"{base}/healthz") == 200, what="healthz to recover", timeout_s=15)
        wait_until(lambda: list(answers.values())[-3:] == [202] * 3, what="bookings again", timeout_s=15)
    finally:
        stop.set()
        customer.join(timeout=15)

    assert set(answers.values()) == {202, 503}, "every answer was accepted or 'come back later'"
    # Nothing half-written: every booking has its first timeline row, and a refused request sent
    # again with its key makes its booking once (or finds the one that did commit).
    for key, status in answers.items():
        if status == 503:
            assert _book(api, base, offer_id, key).status_code == 202
    with psycopg.connect(postgres_of_our_own.url) as db:
        keys = [row[0] for row in db.execute("SELECT idempotency_key FROM bookings_booking")]
        orphans = db.execute(
            "SELECT count(*) FROM bookings_booking b WHERE NOT EXISTS (SELECT 1 FROM bookings_bookingevent e"
            " WHERE e.booking_id = b.id AND e.kind = 'booking.requested')"
        ).fetchone()[0]
    assert sorted(keys) == sorted([*answers, BOOKED_BEFORE]) and orphans == 0
    assert stack.started["web"].poll() is None  # the same gunicorn throughout
