"""A database that answers reads but refuses writes (its disk full, turned read-only) refuses
every booking with an honest 503: `/healthz` and `/metrics` say so too.

Before, `/healthz` asked `SELECT 1` only: with SQLite on a full disk every booking and cancel was
a 503 while the probe answered 200 and `bookings_metrics_source_up{source="database"}` 1, so ops'
probe and dashboard said healthy. Now a write the database refused fails the probe's database
check for `HEALTHZ_WRITES_REFUSED_S` (no write of the probe's own), on SQLite so does too little
free space beside the file, and every 503 answered for the database is counted by cause
(`bookings_database_unavailable_total`).

The end-to-end test mounts a 16 MiB tmpfs for a real SQLite database under a real gunicorn and
fills it, as the disk fills (root: `mount`); the others raise the real errors of a real SQLite
file in this process, and need nothing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests
from django.db import OperationalError, connection
from django.db.utils import ConnectionHandler

from config import database_errors
from config.logging import AtMostEvery
from tests.config.test_metrics import value
from tests.factories import OfferFactory, TokenFactory, UserFactory
from tests.helpers import wait_until
from tests.own_servers import ROOT, ProjectProcesses, own_redis

REFUSED_S = 15  # HEALTHZ_WRITES_REFUSED_S for the end-to-end test's gunicorn


def _stay() -> dict:
    start = date.today() + timedelta(days=40)
    return {"start_date": str(start), "end_date": str(start + timedelta(days=3)), "guests": 2}


def _unavailable_total(text: str, cause: str, request: str) -> float | None:
    return value(text, "bookings_database_unavailable_total", cause=cause, request=request)


# --- end to end: SQLite on a full disk under gunicorn -------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs mounted for this test (as QA filled one), unmounted at teardown."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the in-process tests below cover the mechanism")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:  # root without CAP_SYS_ADMIN (a container)
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the in-process tests cover it")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file into `directory` until its filesystem has no byte left."""
    filler = directory / "filler"
    chunk = b"\0" * (64 * 1024)
    with filler.open("wb", buffering=0) as out:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                out.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                out.write(b"\0")
    return filler


SETUP = textwrap.dedent(
    """
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from partners.services.registry import OfferSpec, partner_upsert

    partner, _ = partner_upsert(
        code="disk-full", adapter="reference", base_url="http://127.0.0.1:9", api_key="k",
        offers=[OfferSpec.parse("hotel-1-dbl:120.00:EUR:4")],
    )
    user = get_user_model().objects.create_user("disk-full-customer", password="x")
    print(Token.objects.create(user=user).key, partner.offers.get().pk)
    """
)


@pytest.mark.integration
@pytest.mark.timeout(240)
@pytest.mark.once_per_ci("embedded")  # it brings its own SQLite file and Redis
def test_sqlite_on_a_full_disk_fails_healthz_and_is_counted_and_recovers(tmp_path, small_disk):
    redis_server = own_redis(tmp_path / "redis-var")
    database = small_disk / "db.sqlite3"
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": redis_server.url,
        "METRICS_OPEN": "true",
        "METRICS_TOKEN": "",
        "HEALTHZ_WRITES_REFUSED_S": str(REFUSED_S),
    }
    stack = ProjectProcesses(tmp_path, env)
    try:
        run = {"cwd": ROOT, "env": stack.env, "capture_output": True, "text": True, "timeout": 120}
        migrated = subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], **run)
        assert migrated.returncode == 0, migrated.stderr[-3000:]
        made = subprocess.run([sys.executable, "manage.py", "shell", "-c", SETUP], **run)
        assert made.returncode == 0, made.stderr[-3000:]
        token, offer_id = made.stdout.split()[-2:]
        base = stack.web()
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"

        def book() -> requests.Response:
            body = {"offer": int(offer_id), **_stay()}
            return api.post(
                f"{base}/api/v1/bookings", json=body, headers={"Idempotency-Key": "k-1"}, timeout=30
            )

        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200

        filler = _fill(small_disk)
        # Too little room beside the SQLite file: the probe says so before any write is refused.
        health = requests.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 503, health.text
        assert health.headers["Retry-After"]
        assert health.json() == {"status": "unavailable", "checks": {"database": False, "broker": True}}
        # The customer's booking: an honest 503, counted as a write refused for a full disk.
        refused = book()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "service_unavailable"
        assert refused.headers["Retry-After"]
        metrics = requests.get(f"{base}/metrics", timeout=10).text
        assert _unavailable_total(metrics, "disk_full", "write") == 1, metrics[-3000:]
        assert _unavailable_total(metrics, "disk_full", "read") == 0

        # Room again: the refused write keeps the probe at 503 for a while, then it is 200.
        filler.unlink()
        freed_at = time.monotonic()
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 503
        wait_until(
            lambda: requests.get(f"{base}/healthz", timeout=10).status_code == 200,
            what="/healthz 200 once the refused write is older than HEALTHZ_WRITES_REFUSED_S",
            timeout_s=REFUSED_S + 15,
            interval_s=0.5,
        )
        assert time.monotonic() - freed_at < REFUSED_S + 15
        # The customer's retry under the same key is taken; nothing of the refused one was kept.
        accepted = book()
        assert accepted.status_code == 202, accepted.text
        assert book().json()["reference"] == accepted.json()["reference"]
        log = (tmp_path / "web.log").read_text(errors="replace")
        assert 'msg="healthz database check failed"' in log and "KiB free beside the SQLite database" in log
        assert "a write was refused" in log
        assert "cause=disk_full" in log and "level=error" not in log
    finally:
        stack.stop_all()
        redis_server.stop()


# --- in this process: the real errors of a real SQLite file --------------------------------------
def _sqlite(settings_dict: dict):
    return ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", **settings_dict}})[
        "default"
    ]


@pytest.fixture
def sqlite_file(tmp_path: Path, django_db_blocker):
    """A Django connection to a SQLite file of the test's own, with one table."""
    with django_db_blocker.unblock():
        sqlite = _sqlite({"NAME": str(tmp_path / "x.db")})
        with sqlite.cursor() as cursor:
            cursor.execute("CREATE TABLE t (x TEXT)")
        yield sqlite
        sqlite.close()


def _write(sqlite, *pragmas: str) -> None:
    """A real write on `sqlite` after `pragmas`: a few pages."""
    with sqlite.cursor() as cursor:
        for pragma in pragmas:
            cursor.execute(pragma)
        for _ in range(100):
            cursor.execute("INSERT INTO t VALUES (%s)", ["x" * 4000])


def _write_error(sqlite, *pragmas: str) -> OperationalError:
    """The error Django raises for a real write on `sqlite` after `pragmas`."""
    with pytest.raises(OperationalError) as raised:
        _write(sqlite, *pragmas)
    return raised.value


@contextlib.contextmanager
def _locked(sqlite) -> Iterator[object]:
    """A second connection to `sqlite`'s file that gives up at once, while `sqlite` holds the
    file's write lock."""
    other = _sqlite({**sqlite.settings_dict, "OPTIONS": {"timeout": 0}})
    with sqlite.cursor() as holder:
        holder.execute("BEGIN IMMEDIATE")
        try:
            yield other
        finally:
            holder.execute("ROLLBACK")
            other.close()


FULL = "PRAGMA max_page_count = 3"  # the file may not grow: as on a full disk
READ_ONLY = "PRAGMA query_only = ON"


def test_the_cause_of_real_database_errors(sqlite_file, tmp_path, django_db_blocker):
    with _locked(sqlite_file) as other:
        assert database_errors.cause_of(_write_error(other)) == "busy"
    assert database_errors.cause_of(_write_error(sqlite_file, FULL)) == "disk_full"
    assert database_errors.cause_of(_write_error(sqlite_file, READ_ONLY)) == "read_only"  # last: it stays
    with django_db_blocker.unblock(), pytest.raises(OperationalError) as cannot_open:
        _sqlite({"NAME": str(tmp_path / "missing" / "x.db")}).cursor()
    assert database_errors.cause_of(cannot_open.value) == "unreachable"

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock():
            own = ConnectionHandler({"default": dict(connection.settings_dict)})["default"]
            with pytest.raises(OperationalError) as timed_out, own.cursor() as cursor:
                cursor.execute("SET statement_timeout = 1")
                cursor.execute("SELECT pg_sleep(1)")
            own.close()
            nowhere = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": "1"}
            with pytest.raises(OperationalError) as refused:
                ConnectionHandler({"default": nowhere})["default"].cursor()
        assert database_errors.cause_of(timed_out.value) == "busy"
        assert database_errors.cause_of(refused.value) == "unreachable"


@pytest.fixture
def fresh(monkeypatch):
    """No write refused yet in this process; each log's traceback allowance afresh."""
    monkeypatch.setattr(database_errors, "last_refusal", database_errors._LastRefusal())
    monkeypatch.setattr("config.middleware._tracebacks", AtMostEvery(60.0))


@pytest.mark.django_db
@pytest.mark.parametrize(("pragma", "cause"), [(FULL, "disk_full"), (READ_ONLY, "read_only")])
def test_a_write_the_database_refuses_fails_healthz_for_a_while_and_is_counted(
    client, broker, settings, monkeypatch, fresh, sqlite_file, pragma, cause, caplog
):
    """A booking whose write a real SQLite file refuses: 503 to the customer, then /healthz 503
    naming the database (whose reads still pass), the 503 counted by cause; 200 again after
    HEALTHZ_WRITES_REFUSED_S. Before, /healthz stayed 200 and nothing counted it."""
    settings.METRICS_OPEN, settings.METRICS_TOKEN = True, ""
    settings.HEALTHZ_WRITES_REFUSED_S = 30.0
    customer = TokenFactory(user=UserFactory())
    offer = OfferFactory()

    monkeypatch.setattr(
        "bookings.api.views.services.booking_create", lambda **kw: _write(sqlite_file, pragma)
    )
    before = client.get("/metrics").content.decode()
    assert client.get("/healthz").status_code == 200

    answer = client.post(
        "/api/v1/bookings",
        {"offer": offer.pk, **_stay()},
        content_type="application/json",
        headers={"Authorization": f"Token {customer.key}", "Idempotency-Key": "refused-1"},
    )

    assert answer.status_code == 503 and answer.headers["Retry-After"], answer.content
    health = client.get("/healthz")
    assert health.status_code == 503 and health.headers["Retry-After"]
    assert health.json() == {"status": "unavailable", "checks": {"database": False, "broker": True}}
    after = client.get("/metrics").content.decode()
    assert _unavailable_total(after, cause, "write") == (_unavailable_total(before, cause, "write") or 0) + 1
    said = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= 30]
    assert ("config.middleware", "WARNING", "database unavailable: answered 503") in said
    assert ("config.health", "WARNING", "healthz database check failed") in said
    assert [r for r in caplog.records if r.levelno >= 40] == []
    checked = next(r for r in caplog.records if r.name == "config.health")
    assert checked.error.startswith("a write was refused 0 s ago: OperationalError: ")

    settings.HEALTHZ_WRITES_REFUSED_S = 0.0  # as once that long has passed
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_a_read_refused_or_a_busy_write_does_not_fail_healthz(
    client, broker, monkeypatch, fresh, sqlite_file
):
    """A read's 503 is the read check's business, and a lock waited out under load passes with
    the next write: neither takes the instance out of rotation."""
    auth = {"Authorization": f"Token {TokenFactory(user=UserFactory()).key}"}

    def busy_write(**kwargs):
        with _locked(sqlite_file) as other:
            _write(other)

    monkeypatch.setattr("bookings.api.views.selectors.bookable_offers", lambda: _write(sqlite_file, FULL))
    monkeypatch.setattr("bookings.api.views.services.booking_create", busy_write)
    assert client.get("/api/v1/offers", headers=auth).status_code == 503
    booking = {"offer": OfferFactory().pk, **_stay()}
    written = client.post(
        "/api/v1/bookings",
        booking,
        content_type="application/json",
        headers={**auth, "Idempotency-Key": "b-1"},
    )
    assert written.status_code == 503, written.content

    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_a_postgresql_that_takes_no_writes_is_a_503_not_a_500(
    client, broker, settings, monkeypatch, fresh, django_db_blocker
):
    """A failover that leaves us on a standby (or `default_transaction_read_only`): PostgreSQL
    refuses each write with SQLSTATE 25006, which psycopg raises as an InternalError, the class
    Django gives a bug of ours. It was a 500; it is the database refusing writes: 503 and
    Retry-After, counted as `read_only`, and /healthz says so."""
    if connection.vendor != "postgresql":
        pytest.skip("a PostgreSQL server's read-only mode")
    settings.METRICS_OPEN, settings.METRICS_TOKEN = True, ""
    settings.HEALTHZ_WRITES_REFUSED_S = 30.0
    customer = TokenFactory(user=UserFactory())
    offer = OfferFactory()
    with django_db_blocker.unblock():
        standby = ConnectionHandler({"default": dict(connection.settings_dict)})["default"]

    def write_on_the_standby(**kwargs):
        with standby.cursor() as cursor:
            cursor.execute("SET default_transaction_read_only = on")
            cursor.execute("CREATE TEMPORARY TABLE refused (x int)")

    monkeypatch.setattr("bookings.api.views.services.booking_create", write_on_the_standby)
    before = client.get("/metrics").content.decode()
    try:
        answer = client.post(
            "/api/v1/bookings",
            {"offer": offer.pk, **_stay()},
            content_type="application/json",
            headers={"Authorization": f"Token {customer.key}", "Idempotency-Key": "standby-1"},
        )
    finally:
        with django_db_blocker.unblock():
            standby.close()

    assert answer.status_code == 503 and answer.headers["Retry-After"], answer.content
    assert answer.json()["error"]["code"] == "service_unavailable"
    after = client.get("/metrics").content.decode()
    assert (
        _unavailable_total(after, "read_only", "write")
        == (_unavailable_total(before, "read_only", "write") or 0) + 1
    )
    assert client.get("/healthz").status_code == 503
