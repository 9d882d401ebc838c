"""Health endpoint and log format, and what an outage of the database logs."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import dramatiq
import pytest
import redis
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.db import OperationalError, ProgrammingError
from django.urls import resolve

from config.logging import AtMostEvery, ContextFilter, KeyValueFormatter, log_context
from config.throttling import PageRateLimitMiddleware
from tests.factories import BookingFactory, TokenFactory, UserFactory


@pytest.mark.django_db
def test_healthz_is_200_when_database_and_broker_answer(client, broker):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": True, "broker": True}}


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_unreachable(client, monkeypatch):
    broker = dramatiq.get_broker()
    dead = redis.Redis(unix_socket_path="/nonexistent/redis.sock", socket_connect_timeout=0.2)
    monkeypatch.setattr(broker, "client", dead)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": True, "broker": False}}


def test_log_lines_are_key_value_with_the_booking_context():
    record = logging.LogRecord("partners", logging.INFO, __file__, 1, "partner call", (), None)
    record.http_status = 504
    with log_context(booking="BK-7F3K2Q", partner_key="bk-abc"):
        ContextFilter().filter(record)
    line = KeyValueFormatter().format(record)
    assert 'msg="partner call"' in line
    assert "booking=BK-7F3K2Q" in line
    assert "partner_key=bk-abc" in line
    assert "http_status=504" in line
    assert "\n" not in line


def test_log_context_is_scoped():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    with log_context(booking="BK-1"):
        pass
    ContextFilter().filter(record)
    assert "booking=" not in KeyValueFormatter().format(record)


# --- A database outage in the log ---------------------------------------------------------------
# psycopg's message for a server that refuses: a first line, then a hint.
REFUSED = (
    'connection failed: connection to server at "10.0.0.5", port 5432 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?"
)


@pytest.fixture
def database_unreachable(monkeypatch):
    """Every query of the offers endpoint, the home page and /healthz fails as against a database
    that is down; each log's traceback allowance starts afresh."""

    def refused(*args, **kwargs):
        raise OperationalError(REFUSED)

    monkeypatch.setattr("bookings.api.views.selectors.bookable_offers", refused)
    monkeypatch.setattr("bookings.web.views.selectors.bookable_offers", refused)
    monkeypatch.setattr("config.health.connection", SimpleNamespace(cursor=refused))
    monkeypatch.setattr("config.middleware._tracebacks", AtMostEvery(60.0))
    monkeypatch.setattr(
        "config.health._tracebacks", {"database": AtMostEvery(60.0), "broker": AtMostEvery(60.0)}
    )


@pytest.mark.django_db
def test_each_503_of_a_database_outage_logs_one_line_and_a_traceback_once_in_a_while(
    client, broker, database_unreachable, caplog
):
    customer = UserFactory()
    token = TokenFactory(user=customer).key
    with caplog.at_level(logging.INFO):
        answers = [
            client.get("/api/v1/offers", headers={"Authorization": f"Token {token}"}),
            client.get("/"),
            client.get("/api/v1/offers", headers={"Authorization": f"Token {token}"}),
            client.get("/healthz"),
            client.get("/healthz"),
        ]

    assert [a.status_code for a in answers] == [503] * 5
    assert all(a.headers["Retry-After"] for a in answers)
    # No ERROR line for an answer given on purpose (django.request logs every other 5xx as one).
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    summary = f"OperationalError: {REFUSED.splitlines()[0]}"
    unavailable = [r for r in caplog.records if r.name == "config.middleware"]
    assert [(r.levelname, r.getMessage(), r.error, r.path) for r in unavailable] == [
        ("WARNING", "database unavailable: answered 503", summary, path)
        for path in ("/api/v1/offers", "/", "/api/v1/offers")
    ]
    health = [r for r in caplog.records if r.name == "config.health"]
    assert [(r.levelname, r.getMessage(), r.error) for r in health] == [
        ("WARNING", "healthz database check failed", summary)
    ] * 2
    # Where it failed: the first line of each says so; the others only what failed.
    assert [bool(r.exc_info) for r in unavailable] == [True, False, False]
    assert [bool(r.exc_info) for r in health] == [True, False]
    line = KeyValueFormatter().format(unavailable[1])
    assert "\n" not in line and "Traceback" not in line


@pytest.mark.django_db
def test_a_logged_in_customer_s_form_during_an_outage_is_the_503_page_not_the_500(
    client, monkeypatch, caplog
):
    # given a logged-in customer with a booking, and then a database that refuses connections:
    # their session (and so who they are) can no longer be read
    booking = BookingFactory()
    client.force_login(booking.customer)

    def refused(*args, **kwargs):
        raise OperationalError(REFUSED)

    monkeypatch.setattr(SessionStore, "load", refused)
    monkeypatch.setattr("config.middleware._tracebacks", AtMostEvery(60.0))

    # when they send a page's form (the page rate limit reads who they are before the view runs)
    with caplog.at_level(logging.INFO):
        response = client.post(f"/bookings/{booking.reference}/cancel/", {"expected_fee": "0.00"})

    # then the outage's page with when to come back, as for any page, never the 500 page
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(settings.UNAVAILABLE_RETRY_AFTER_S)
    assert "We are briefly unavailable" in response.content.decode()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.name == "config.middleware"] == [
        "database unavailable: answered 503"
    ]


class _UnreadableUser:
    @property
    def is_authenticated(self) -> bool:
        raise ProgrammingError("a bug of ours")


def test_the_page_rate_limit_keeps_a_database_error_that_is_no_outage(rf, monkeypatch):
    # an error of ours (not the database being away) stays the error it is, in the middleware
    request = rf.post("/bookings/BK-ANY/cancel/")
    request.resolver_match = resolve("/bookings/BK-ANY/cancel/")
    request.user = _UnreadableUser()

    with pytest.raises(ProgrammingError):
        PageRateLimitMiddleware(lambda _: None).process_view(request, None, (), {})


def test_a_condition_logs_its_detail_at_most_once_per_interval():
    every = AtMostEvery(0.2)
    assert [every.due(), every.due()] == [True, False]
    time.sleep(0.25)
    assert [every.due(), every.due()] == [True, False]
