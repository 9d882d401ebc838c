"""Shared fixtures: the embedded Redis when no REDIS_URL is given, a clean broker, real workers."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# The browser tests' Chromium and pages (fixtures `browser`, `open_page`, `page`); the SMTP sink
# (`mail_sink`); a test's timeout paused while a fixture many tests share is set up.
pytest_plugins = ["tests.browser", "tests.mail", "tests.timeouts"]

_embedded = None


def pytest_configure(config: pytest.Config) -> None:
    """Start this run's embedded Redis when no REDIS_URL is given; children inherit the run's ids."""
    global _embedded
    from django.conf import settings

    os.environ["TEST_RUN_ID"] = settings.TEST_RUN_ID
    _cheap_test_flush()
    if _xdist_controller(config):
        return  # it runs no test: each worker starts what it needs (config/settings/test.py)
    if settings.EMBEDDED_REDIS_DIR is not None:
        from config import embedded_redis

        _embedded = embedded_redis.EmbeddedRedis(settings.EMBEDDED_REDIS_DIR).start()
    os.environ["REDIS_URL"] = settings.REDIS_URL


def _cheap_test_flush() -> None:
    """Empty the test database after each `transactional_db` test with DELETEs, and keep the
    content types and permissions.

    PostgreSQL's TRUNCATE gives each of the ~30 tables a new file, and the flush's post-migrate
    signal then inserts every content type and permission again (on SQLite too): 0.3 to 0.8 s a
    test on PostgreSQL, paid by some 400 tests a suite, for tables that hold a few rows. DELETEs
    in the flush's one transaction take milliseconds (Django's foreign keys are deferred, so
    their order does not matter), and the post-migrate signal finds the content types and
    permissions (derived from the models, which no test changes) already there. Only the tests'
    flush uses it: the product never flushes.
    """
    from django.db.backends.postgresql.base import DatabaseOperations as PostgresOperations
    from django.db.backends.sqlite3.base import DatabaseOperations as SQLiteOperations

    kept = {"django_content_type", "auth_permission"}

    def postgres_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        tables = [t for t in tables if t not in kept]
        if reset_sequences or allow_cascade:
            return truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        delete = style.SQL_KEYWORD("DELETE FROM")
        return [f"{delete} {style.SQL_FIELD(self.quote_name(t))};" for t in tables]

    def sqlite_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        tables = [t for t in tables if t not in kept]
        return delete_each(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)

    truncate, delete_each = PostgresOperations.sql_flush, SQLiteOperations.sql_flush
    PostgresOperations.sql_flush, SQLiteOperations.sql_flush = postgres_flush, sqlite_flush


@pytest.hookimpl(trylast=True)  # after the conftests that mark tests `once_per_ci`
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """CI runs the suite twice, on PostgreSQL + Redis and on the embedded defaults. A test whose
    subject does not depend on those stores runs in one of the two only (`once_per_ci(suite)`):
    the other would repeat it to the second. The browser tests are of these: a page and its
    scripts are their subject, and they run with the production stack; what the pages stand on is
    proven by the rest of the suite in both. `TEST_EVERY_SUITE=1` runs them wherever asked."""
    if os.environ.get("TEST_EVERY_SUITE") == "1":
        return
    from django.conf import settings

    here = "postgresql" if settings.DATABASES["default"]["ENGINE"].endswith("postgresql") else "embedded"
    for item in items:
        marker = item.get_closest_marker("once_per_ci")
        suite = marker.args[0] if marker and marker.args else None
        if marker and suite not in SUITES:
            raise pytest.UsageError(f"{item.nodeid}: once_per_ci takes one of {sorted(SUITES)}: {suite!r}")
        if marker is None and item.get_closest_marker("browser"):
            suite = "postgresql"
        if suite not in (None, here):
            reason = f"runs once per CI, in the {SUITES[suite]} suite (TEST_EVERY_SUITE=1 runs it here too)"
            item.add_marker(pytest.mark.skip(reason=reason))


SUITES = {"postgresql": "PostgreSQL + Redis", "embedded": "embedded-defaults"}


def _xdist_controller(config: pytest.Config) -> bool:
    """Is this the process that hands tests to pytest-xdist's workers (`-n N`, N > 0)?"""
    workers = config.getoption("numprocesses", default=None)
    return not hasattr(config, "workerinput") and workers not in (None, 0, "0")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _embedded is not None:
        _embedded.stop()
        shutil.rmtree(_embedded.dir.parent, ignore_errors=True)


@pytest.fixture
def broker():
    """The project's real Redis broker, emptied before and after the test, with the actors
    declared on it (as `rundramatiq` finds them): services send to them by name."""
    import dramatiq

    import bookings.tasks  # noqa: F401
    import partners.tasks  # noqa: F401
    import payments.tasks  # noqa: F401  (declared, its queue is emptied with the others)
    import reconciliation.tasks  # noqa: F401

    broker = dramatiq.get_broker()

    from tests.helpers import lose_claims

    def flush() -> None:
        broker.flush_all()
        lose_claims(broker)  # the claims stand for queued messages: they go with the queues

    flush()
    yield broker
    flush()


@pytest.fixture
def worker(broker, transactional_db) -> Iterator:
    """A real Dramatiq worker (threads in this process) consuming from Redis.

    Needs `transactional_db`: worker threads use their own connections and cannot see the data
    of a test wrapped in a transaction.
    """
    import dramatiq
    from dramatiq.worker import _WorkerMiddleware

    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop()
    # A stopped worker's middleware stays on the shared broker and would start consumers for
    # queues declared later (prefetching messages nobody runs): take it off.
    broker.middleware[:] = [
        m for m in broker.middleware if not (isinstance(m, _WorkerMiddleware) and m.worker is worker)
    ]
    from django.db import connections

    connections.close_all()


@pytest.fixture
def customer(db):
    from tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def make_booking(db) -> Callable[..., Any]:
    """`make_booking(partner, status, **fields)`: a booking with the partner in any state, on an
    offer of its own unless one is given."""
    from bookings.states import BookingState
    from tests.factories import BookingFactory, OfferFactory

    def make(partner, status: str = BookingState.REQUESTED, **fields: Any):
        offer = fields.pop("offer", None) or OfferFactory(partner=partner)
        return BookingFactory(offer=offer, status=status, **fields)

    return make


@pytest.fixture
def groups(db):
    """The console's staff groups (support, ops) with their permissions, by name."""
    from reconciliation.services.support.groups import ensure_groups

    return ensure_groups()


@pytest.fixture
def api_client(customer):
    from rest_framework.test import APIClient

    from tests.factories import TokenFactory

    client = APIClient()
    token = TokenFactory(user=customer)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture(autouse=True)
def _redis_not_paused():
    # A test whose Redis refused a hint pauses this process's calls to it for REDIS_HINT_PAUSE_S:
    # the next test's submissions were then left to a sweeper it does not run (a flake found by
    # order), its cache reads missed, its rate limits let everything through.
    from config import redis_pause

    redis_pause.forget()
    yield


@pytest.fixture(autouse=True)
def _fresh_catalogue_cache():
    # The booking path's per-process offer cache: no test sees another test's offers.
    from bookings import catalogue

    catalogue.forget_offers()
    yield
