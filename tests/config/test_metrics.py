"""GET /metrics: every named figure, who may read it, what it answers while a source is down, and
(end to end) the figures of every process of a machine in one scrape: gunicorn's workers, Dramatiq's
worker processes and the scheduler writing into one PROMETHEUS_MULTIPROC_DIR.

The partner side's figures moving with a real partner call and a booking that confirms:
tests/partners/test_metrics.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dramatiq
import pybreaker
import pytest
import redis
import requests
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from bookings.models import Booking
from bookings.states import BookingState
from config import devstack
from config.metrics import events
from partners import guard, messages
from partners.services.registry import OfferSpec, partner_upsert
from reconciliation.models import OwedMessage
from tests import production
from tests.factories import BookingFactory, OfferFactory, PartnerFactory, TokenFactory, UserFactory
from tests.helpers import unique_code, wait_until
from tests.own_servers import ProjectProcesses, own_redis
from tests.partners.conftest import SANDBOX_KEY, WEBHOOK_SECRET
from tests.sandbox_process import PERFECT_FAULTS, SandboxProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
S = BookingState
TOKEN = "metrics-test-token-0123456789abcdefghijklmnopqrstuv"

# Every figure README.md names, as its `# TYPE` line states it.
NAMED = {
    "bookings_by_state": "gauge",
    "bookings_needs_attention": "gauge",
    "bookings_support_messages_owed": "gauge",
    "bookings_partner_calls_total": "counter",
    "bookings_partner_calls_not_sent_total": "counter",
    "bookings_partner_call_duration_seconds": "histogram",
    "bookings_partner_breaker_state": "gauge",
    "bookings_queue_depth": "gauge",
    "bookings_queue_delayed": "gauge",
    "bookings_queue_dead_letters": "gauge",
    "bookings_webhook_deliveries_total": "counter",
    "bookings_partner_change_lag_seconds": "histogram",
    "bookings_sweep_duration_seconds": "histogram",
    "bookings_sweep_last_success_timestamp_seconds": "gauge",
    "bookings_database_unavailable_total": "counter",
    "bookings_payment_calls_total": "counter",
    "bookings_payment_call_duration_seconds": "histogram",
    "bookings_payment_webhook_deliveries_total": "counter",
    "bookings_payments_by_status": "gauge",
    "bookings_payments_in_doubt": "gauge",
    "bookings_payments_in_doubt_oldest_seconds": "gauge",
    "bookings_payments_overdue": "gauge",
    "bookings_payment_operations_open": "gauge",
    "bookings_payment_operations_open_oldest_seconds": "gauge",
    "bookings_payment_events_unapplied": "gauge",
    "bookings_payment_events_unapplied_oldest_seconds": "gauge",
    "bookings_payment_events_set_aside": "gauge",
    "bookings_metrics_source_up": "gauge",
    "bookings_metrics_source_seconds": "gauge",
}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, frozenset(labels.items())))


def types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def scrape(client: Client, **headers: str) -> str:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content[:500]
    return response.content.decode()


@pytest.fixture
def open_metrics(settings):
    settings.METRICS_OPEN = True
    settings.METRICS_TOKEN = ""
    return settings


# --- the names and the scrape-time figures -----------------------------------------------------
@pytest.mark.django_db
def test_the_endpoint_lists_every_named_metric(client, open_metrics, broker):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
    named = types(response.content.decode())
    assert {name: named.get(name) for name in NAMED} == NAMED


def test_the_readme_names_exactly_these_metrics():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Metrics and logs", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`(bookings_\w+)`", row.split(" | ")[0])}

    assert named == set(NAMED)


@pytest.mark.django_db
def test_openmetrics_is_answered_to_a_scraper_that_asks_for_it(client, open_metrics, broker):
    response = client.get("/metrics", HTTP_ACCEPT="application/openmetrics-text; version=1.0.0")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.decode().endswith("# EOF\n")


@pytest.mark.django_db
def test_bookings_by_state_counts_every_state_and_needs_attention_by_partner_reason_and_urgency(
    client, open_metrics, broker
):
    partner = PartnerFactory(code=unique_code("metrics"))
    offer = OfferFactory(partner=partner)
    soon, later = date.today() + timedelta(days=1), date.today() + timedelta(days=40)
    for status in (S.CONFIRMED, S.CONFIRMED, S.REQUESTED):
        BookingFactory(offer=offer, partner=partner, status=status)
    for reason, start in (("partner_mismatch", soon), ("partner_mismatch", later), ("worker_gave_up", later)):
        BookingFactory(
            offer=offer,
            partner=partner,
            status=S.NEEDS_ATTENTION,
            attention_reason=reason,
            start_date=start,
            end_date=start + timedelta(days=2),
        )

    text = scrape(client)

    assert {state: value(text, "bookings_by_state", state=state) for state in S.values} == {
        **dict.fromkeys(S.values, 0.0),
        S.CONFIRMED: 2.0,
        S.REQUESTED: 1.0,
        S.NEEDS_ATTENTION: 3.0,
    }
    waiting = {
        (dict(labels)["reason"], dict(labels)["urgency"]): n
        for (name, labels), n in samples(text).items()
        if name == "bookings_needs_attention" and dict(labels)["partner"] == partner.code
    }
    assert waiting == {
        ("partner_mismatch", "urgent"): 1.0,
        ("partner_mismatch", "later"): 1.0,
        ("worker_gave_up", "later"): 1.0,
    }
    assert value(text, "bookings_metrics_source_up", source="database") == 1.0
    assert value(text, "bookings_metrics_source_up", source="redis") == 1.0


@pytest.mark.django_db
def test_support_messages_owed_are_the_unsent_rows_by_partner_and_actor(client, open_metrics, broker):
    partner, other = (PartnerFactory(code=unique_code("metrics")) for _ in range(2))
    booking, elsewhere = (BookingFactory(offer=OfferFactory(partner=p)) for p in (partner, other))
    rows = [
        OwedMessage.objects.create(booking=booking, actor_name=actor)
        for actor in ("sync_booking", "sync_booking", "submit_booking")
    ]
    OwedMessage.objects.create(booking=elsewhere, actor_name="sync_booking", sent_at=timezone.now())

    def owed(text: str) -> dict[tuple[str, str], float]:
        return {
            (dict(labels)["partner"], dict(labels)["actor"]): n
            for (name, labels), n in samples(text).items()
            if name == "bookings_support_messages_owed"
        }

    assert owed(scrape(client)) == {
        (partner.code, "sync_booking"): 2.0,
        (partner.code, "submit_booking"): 1.0,
    }
    OwedMessage.objects.filter(pk__in=[rows[0].pk, rows[2].pk]).update(sent_at=timezone.now())
    assert owed(scrape(client)) == {(partner.code, "sync_booking"): 1.0}


@pytest.mark.django_db
def test_queue_depth_per_queue_and_the_breaker_state_per_partner(client, open_metrics, broker, settings):
    partner = PartnerFactory(code=unique_code("metrics"))
    closed = PartnerFactory(code=unique_code("metrics"))
    try:
        for _ in range(3):
            broker.enqueue(dramatiq.Message(partner.queue_name, "submit_booking", ("b",), {}, {}))
        broker.enqueue(dramatiq.Message(partner.queue_name, "sync_booking", ("b",), {}, {}), delay=60_000)
        guard.breaker_for(partner).open()

        text = scrape(client)
    finally:
        for name in (partner.queue_name, f"{partner.queue_name}.DQ"):
            broker.client.delete(f"{broker.namespace}:{name}", f"{broker.namespace}:{name}.msgs")
        _forget_guard(partner, settings.PARTNER_GUARD_NAMESPACE)

    assert value(text, "bookings_queue_depth", queue=partner.queue_name) == 3.0
    assert value(text, "bookings_queue_delayed", queue=partner.queue_name) == 1.0
    assert value(text, "bookings_queue_dead_letters", queue=partner.queue_name) == 0.0
    assert value(text, "bookings_queue_depth", queue="webhooks") is not None  # an actor's queue too
    assert {
        s: value(text, "bookings_partner_breaker_state", partner=partner.code, state=s)
        for s in ("closed", "open", "half-open")
    } == {
        "closed": 0.0,
        "open": 1.0,
        "half-open": 0.0,
    }
    assert value(text, "bookings_partner_breaker_state", partner=closed.code, state="closed") == 1.0


def _forget_guard(partner, namespace: str) -> None:
    client = guard.redis_client()
    keys = list(client.scan_iter(f"{namespace}:{partner.code}:*"))
    if keys:
        client.delete(*keys)
    guard._breakers.pop(partner.code, None)


def test_the_breakers_key_is_where_pybreaker_keeps_the_state(db):
    partner = PartnerFactory(code=unique_code("metrics"))
    storage = guard.breaker_for(partner)._state_storage
    try:
        assert isinstance(storage, pybreaker.CircuitRedisStorage)
        assert guard.breaker_state_key(partner) == storage._namespace("state")
    finally:
        guard._breakers.pop(partner.code, None)


@pytest.mark.django_db
def test_a_sweep_of_the_scheduler_is_timed(client, open_metrics, broker):
    before = scrape(client)

    call_command("run_scheduler", "--once")

    after = scrape(client)
    count = "bookings_sweep_duration_seconds_count"
    assert (value(after, count, result="ok") or 0) == (value(before, count, result="ok") or 0) + 1
    assert value(after, "bookings_sweep_last_success_timestamp_seconds") > value(
        before, "bookings_sweep_last_success_timestamp_seconds"
    )


# --- who may read it ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_without_a_token_or_metrics_open_there_is_no_metrics_page(client, settings):
    settings.METRICS_OPEN, settings.METRICS_TOKEN = False, ""

    assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization", [None, f"Bearer {TOKEN[:-1]}", f"Token {TOKEN}", f"Bearer {TOKEN}x", "Bearer "]
)
def test_with_a_token_nobody_without_it_reads_the_metrics(client, settings, authorization):
    settings.METRICS_OPEN, settings.METRICS_TOKEN = True, TOKEN  # the token wins over "open"
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}

    response = client.get("/metrics", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response.json() == {
        "error": {"code": "unauthorized", "message": "A valid bearer token is required."}
    }


@pytest.mark.django_db
def test_the_bearer_token_reads_the_metrics(client, settings, broker):
    settings.METRICS_OPEN, settings.METRICS_TOKEN = False, TOKEN

    text = scrape(client, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert "bookings_by_state" in types(text)


def _production(code: str, **env: str) -> subprocess.CompletedProcess:
    return production.start_django(code, **production.environment(ALLOWED_HOSTS="testserver", **env))


def test_production_never_serves_the_metrics_without_a_token():
    get = "from django.test import Client; print(Client().get('/metrics', secure=True).status_code)"

    opened = _production(get, METRICS_OPEN="true", METRICS_TOKEN="")

    assert opened.returncode == 0, opened.stderr[-2000:]
    assert opened.stdout.strip() == "404"


def test_production_asks_for_the_token_it_has(tmp_path):
    get = (
        "from django.test import Client; c = Client(); "
        "print(c.get('/metrics', secure=True).status_code, "
        f"c.get('/metrics', secure=True, HTTP_AUTHORIZATION='Bearer {TOKEN}').status_code)"
    )

    answered = _production(get, METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))

    assert answered.returncode == 0, answered.stderr[-2000:]
    assert answered.stdout.strip() == "401 200"  # 200 whether or not its database answers


@pytest.mark.parametrize("token", ["short-token", "a" * 40])
def test_production_refuses_a_weak_metrics_token(token):
    refused = _production("print('started')", METRICS_TOKEN=token)

    assert refused.returncode != 0
    assert "METRICS_TOKEN must be a random value of at least 32 characters" in refused.stderr


@pytest.mark.parametrize("serving", [{"METRICS_TOKEN": TOKEN}, {"WORKER_METRICS_PORT": "9464"}])
def test_production_refuses_metrics_without_one_directory_for_the_machines_processes(serving):
    # Each process counting on its own, /metrics showed the answering gunicorn worker's counts
    # only: never a Dramatiq worker's partner calls nor the scheduler's sweeps, one figure per
    # scrape as the proxy picked a worker.
    environment = production.environment(**serving)
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    refused = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert refused.returncode != 0
    assert re.findall(r"^- ([A-Z_]+) must ", refused.stderr, re.M) == ["PROMETHEUS_MULTIPROC_DIR"]
    assert f"PROMETHEUS_MULTIPROC_DIR must be set where {next(iter(serving))} is set" in refused.stderr


WORKER_TOKEN = "worker-metrics-test-token-0123456789abcdefghijklmnop"


def _worker_port(tmp_path: Path, **env: str) -> subprocess.Popen:
    """The workers' metrics port (config.metrics.exposition) as Dramatiq forks it, on its own."""
    environment = {k: v for k, v in os.environ.items() if "METRICS" not in k}
    environment.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), PYTHONPATH=str(ROOT), **env)
    code = "import sys; from config.metrics import exposition; sys.exit(exposition.serve())"
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_the_workers_port_takes_its_own_token_never_the_webs(tmp_path):
    # It is plain HTTP: the web's token, which reads every web machine's /metrics, crossed in clear
    # with each scrape of it (production refuses /metrics over HTTP for that reason).
    port = free_port()
    server = _worker_port(
        tmp_path, WORKER_METRICS_PORT=str(port), METRICS_TOKEN=TOKEN, WORKER_METRICS_TOKEN=WORKER_TOKEN
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        answered = wait_until(
            lambda: _get(url, {"Authorization": f"Bearer {WORKER_TOKEN}"}),
            what="the workers' metrics port",
            timeout_s=20,
            interval_s=0.1,
        )
        with_the_webs = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    finally:
        server.kill()
        server.wait()

    assert answered.status_code == 200
    assert with_the_webs.status_code == 401


def test_the_workers_port_does_not_open_beyond_loopback_without_its_own_token(tmp_path):
    server = _worker_port(
        tmp_path, WORKER_METRICS_HOST="0.0.0.0", WORKER_METRICS_PORT=str(free_port()), METRICS_TOKEN=TOKEN
    )
    try:
        _, stderr = server.communicate(timeout=20)
    finally:
        server.kill()

    assert server.returncode == 1
    assert b"without WORKER_METRICS_TOKEN" in stderr


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"WORKER_METRICS_TOKEN": TOKEN}, "WORKER_METRICS_TOKEN must not be METRICS_TOKEN"),
        ({"WORKER_METRICS_TOKEN": "short"}, "WORKER_METRICS_TOKEN must be a random value"),
        ({"WORKER_METRICS_HOST": "10.0.0.5"}, "WORKER_METRICS_TOKEN must be set where WORKER_METRICS_HOST"),
    ],
)
def test_production_refuses_a_workers_port_token_the_web_shares_or_none_beyond_loopback(tmp_path, env, said):
    serving = {
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WORKER_METRICS_PORT": "9464",
    }

    refused = _production("print('started')", **serving, **env)

    assert refused.returncode != 0
    assert re.findall(r"^- ([A-Z_]+) must ", refused.stderr, re.M) == ["WORKER_METRICS_TOKEN"]
    assert said in refused.stderr


def test_production_starts_with_a_workers_port_token_of_its_own(tmp_path):
    serving = {
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WORKER_METRICS_PORT": "9464",
    }

    started = _production(
        "print('started')", **serving, WORKER_METRICS_HOST="10.0.0.5", WORKER_METRICS_TOKEN=WORKER_TOKEN
    )

    assert started.returncode == 0, started.stderr[-2000:]


# --- a source down is left out, never an error ---------------------------------------------------
@pytest.mark.django_db
def test_redis_down_the_database_figures_still_answer(client, open_metrics, broker, monkeypatch):
    dead = redis.Redis(unix_socket_path="/nonexistent/redis.sock", socket_connect_timeout=0.2)
    monkeypatch.setattr("reconciliation.metrics.collector.redis_client", lambda: dead)
    booking = BookingFactory(status=S.CONFIRMED)
    OwedMessage.objects.create(booking=booking, actor_name="sync_booking")  # what Redis did not take

    live, broker.client = broker.client, dead  # put back before the broker fixture's teardown
    try:
        text = scrape(client)
    finally:
        broker.client = live

    assert value(text, "bookings_metrics_source_up", source="redis") == 0.0
    assert value(text, "bookings_metrics_source_up", source="database") == 1.0
    assert value(text, "bookings_by_state", state=S.CONFIRMED) == 1.0
    owed = {"partner": booking.partner.code, "actor": "sync_booking"}
    assert value(text, "bookings_support_messages_owed", **owed) == 1.0
    assert not any(
        name.startswith(("bookings_queue_", "bookings_partner_breaker")) for name, _ in samples(text)
    )


@pytest.mark.django_db
def test_database_down_the_redis_figures_still_answer(client, open_metrics, broker):
    def refuse(execute, sql, params, many, context):
        raise OperationalError("connection refused (as a database that is down)")

    with connection.execute_wrapper(refuse):
        response = client.get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert value(text, "bookings_metrics_source_up", source="database") == 0.0
    assert value(text, "bookings_metrics_source_up", source="redis") == 1.0
    assert value(text, "bookings_queue_depth", queue="webhooks") == 0.0  # the actors' queues
    assert not any(name in ("bookings_by_state", "bookings_needs_attention") for name, _ in samples(text))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a statement timeout is PostgreSQL's")
def test_a_slow_database_is_cut_off_by_the_scrapes_statement_timeout(
    client, open_metrics, broker, transactional_db
):
    open_metrics.METRICS_QUERY_TIMEOUT_MS = 200

    def slow(execute, sql, params, many, context):
        if "GROUP BY" in sql and '"status"' in sql:  # the count by state takes a second
            execute("SELECT pg_sleep(1)", None, False, context)
        return execute(sql, params, many, context)

    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        server_default = cursor.fetchone()

    with connection.execute_wrapper(slow):
        response = client.get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert value(text, "bookings_metrics_source_up", source="database") == 0.0
    assert value(text, "bookings_metrics_source_seconds", source="database") < 1
    assert value(text, "bookings_metrics_source_up", source="redis") == 1.0
    with connection.cursor() as cursor:  # the timeout was the scrape's transaction's alone
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone() == server_default


def test_a_metric_that_cannot_be_written_never_fails_the_call_it_counts(monkeypatch, caplog):
    def broken(*labels: str):
        raise OSError("No space left on device")

    monkeypatch.setattr(events.PARTNER_CALLS, "labels", broken)
    monkeypatch.setattr(events, "_failed", set())
    result = type("Result", (), {"outcome": "ok", "latency_ms": 12, "error_code": ""})()

    for _ in range(3):
        events.partner_call(partner="acme", operation="create", result=result, sent=True)

    warnings = [r for r in caplog.records if r.getMessage() == "metric not recorded"]
    assert [(r.levelname, r.recorder) for r in warnings] == [("WARNING", "partner_call")]  # once


# --- make run: one directory for its processes, empty at each start -----------------------------
def test_make_run_gives_its_processes_one_metrics_directory_emptied_at_start(monkeypatch, tmp_path):
    started: list[dict[str, str]] = []

    class Honcho:  # the edge of this unit test: records the environment honcho would start with
        def __init__(self, argv: list[str], *, env: dict[str, str], cwd: object) -> None:
            started.append(env)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Honcho)
    monkeypatch.setattr(devstack, "already_running", lambda env, var_dir: [])  # ports: not this unit's
    monkeypatch.setattr(signal, "signal", lambda signum, handler: None)  # pytest keeps its own
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/15")  # no embedded Redis needed
    monkeypatch.setenv("VAR_DIR", str(tmp_path))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    stale = tmp_path / "metrics" / "counter_4242.db"  # a process of the previous run
    stale.parent.mkdir()
    stale.write_bytes(b"\0" * 16)

    assert devstack.main() == 0

    (env,) = started
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "metrics")
    assert list((tmp_path / "metrics").iterdir()) == []


# --- end to end: one directory, every process of the machine -------------------------------------
def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[ProjectProcesses]:
    redis_server = own_redis(tmp_path / "redis-var")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    processes = ProjectProcesses(
        tmp_path,
        {
            "DATABASE_URL": _database_url(),
            "REDIS_URL": redis_server.url,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "METRICS_TOKEN": TOKEN,
            "WORKER_METRICS_TOKEN": WORKER_TOKEN,
            "LOG_FORMAT": "json",
            "PARTNER_QUEUE_REFRESH_S": "1",
        },
    )
    yield processes
    processes.stop_all()
    redis_server.stop()


def _get(url: str, headers: dict) -> requests.Response | None:
    """The answer, or None while nothing answers yet: nothing listens, or gunicorn's master
    listens and its workers are still loading the application (a busy machine: over 10 s)."""
    try:
        return requests.get(url, headers=headers, timeout=10)
    except (requests.ConnectionError, requests.Timeout):
        return None


def _json_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_every_process_of_the_machine_in_one_scrape(transactional_db, stack, tmp_path):
    web_port, worker_port, code = free_port(), free_port(), unique_code("metrics")
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
    try:
        # The partner confirms a moment after the create, and says so by webhook.
        sandbox.set_faults(**{**PERFECT_FAULTS, "async_confirm_delay_s": 0.5})
        partner, _ = partner_upsert(
            code=code,
            adapter="reference",
            base_url=sandbox.base_url,
            api_key=SANDBOX_KEY,
            webhook_secret=WEBHOOK_SECRET,
            timeouts=(0.5, 2.0),
            offers=[OfferSpec.parse("hotel-42-dbl:120.00:EUR:4")],
        )
        api = requests.Session()
        api.headers["Authorization"] = f"Token {TokenFactory(user=UserFactory()).key}"
        stack.env["WORKER_METRICS_PORT"] = str(worker_port)
        stack.manage("worker", "rundramatiq", "--processes", "2", "--threads", "2")
        stack.manage("scheduler", "run_scheduler", "--interval", "0.5")
        stack.start(
            "web",
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{web_port}",
             "--workers", "2", "--threads", "2", "--no-control-socket", "--access-logfile", "-"],
        )  # fmt: skip
        base = f"http://127.0.0.1:{web_port}"
        wait_until(lambda: _get(f"{base}/healthz", {}), what="gunicorn", timeout_s=60, interval_s=0.2)
        scraper = requests.Session()
        scraper.headers["Authorization"] = f"Bearer {TOKEN}"

        before = scraper.get(f"{base}/metrics", timeout=10).text
        start = date.today() + timedelta(days=40)
        booked = api.post(
            f"{base}/api/v1/bookings",
            json={
                "offer": partner.offers.get().pk,
                "start_date": str(start),
                "end_date": str(start + timedelta(days=3)),
                "guests": 2,
            },
            headers={"Idempotency-Key": "metrics-end-to-end"},
            timeout=10,
        )
        assert booked.status_code == 202, booked.text
        booking = Booking.objects.get(reference=booked.json()["reference"])
        wait_until(
            lambda: Booking.objects.filter(pk=booking.pk, status=S.CONFIRMED).exists(),
            what="the booking to be confirmed",
            timeout_s=60,
            interval_s=0.2,
        )

        def scraped_all() -> str | None:
            text = scraper.get(f"{base}/metrics", timeout=10).text
            ready = value(
                text, "bookings_partner_change_lag_seconds_count", partner=code, source="webhook"
            ) and value(text, "bookings_sweep_duration_seconds_count", result="ok")
            return text if ready else None

        text = wait_until(
            scraped_all, what="the webhook's lag and a sweep in /metrics", timeout_s=30, interval_s=0.3
        )
        # Any web process answers the same (each scrape may reach either of gunicorn's two).
        answers = [scraper.get(f"{base}/metrics", timeout=10).text for _ in range(6)]
        unauthorized = requests.get(f"{base}/metrics", timeout=10)
        # Dramatiq starts its fork processes once its workers have booted.
        from_workers = wait_until(
            lambda: _get(
                f"http://127.0.0.1:{worker_port}/metrics", {"Authorization": f"Bearer {WORKER_TOKEN}"}
            ),
            what="the workers' metrics port",
            timeout_s=30,
            interval_s=0.2,
        )
        refused_by_workers = requests.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10)
        webs_token_at_workers = scraper.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=10)
    finally:
        sandbox.kill()

    assert value(before, "bookings_by_state", state=S.CONFIRMED) == 0.0
    assert value(text, "bookings_by_state", state=S.CONFIRMED) == 1.0
    # The worker processes' call and their messages, the web's webhook, the scheduler's sweep.
    assert value(text, "bookings_partner_calls_total", partner=code, operation="create", outcome="ok") == 1.0
    assert (
        value(text, "bookings_partner_call_duration_seconds_count", partner=code, operation="create") == 1.0
    )
    assert value(text, "bookings_webhook_deliveries_total", partner=code, result="accepted") >= 1.0
    assert value(text, "bookings_queue_depth", queue=partner.queue_name) is not None  # syncs come and go
    assert value(text, "bookings_partner_breaker_state", partner=code, state="closed") == 1.0
    submitted = samples(text).get(
        (
            "dramatiq_messages_total",
            frozenset({"queue_name": partner.queue_name, "actor_name": "submit_booking"}.items()),
        )
    )
    assert submitted == 1.0
    for answer in answers:
        assert value(answer, "bookings_by_state", state=S.CONFIRMED) == 1.0
        assert (
            value(answer, "bookings_partner_calls_total", partner=code, operation="create", outcome="ok")
            == 1.0
        )
    assert unauthorized.status_code == 401
    # The workers' own port: the same directory, behind a token of its own (plain HTTP: the web's
    # must never cross it).
    assert refused_by_workers.status_code == 401
    assert webs_token_at_workers.status_code == 401
    assert from_workers.status_code == 200
    worker_view = from_workers.text
    assert (
        value(worker_view, "bookings_partner_calls_total", partner=code, operation="create", outcome="ok")
        == 1.0
    )
    assert "bookings_by_state" not in worker_view  # the database's figures are the web's

    # LOG_FORMAT=json: the worker's partner call and gunicorn's access line, as JSON objects.
    call = next(
        line for line in _json_lines(tmp_path / "worker.log") if line["logger"] == "partners.services.calls"
    )
    assert (call["partner"], call["operation"], call["outcome"]) == (code, "create", "ok")
    access = [line for line in _json_lines(tmp_path / "web.log") if line["logger"] == "gunicorn.access"]
    assert {"path": "/metrics", "status": 401} in [{"path": a["path"], "status": a["status"]} for a in access]


# --- a dead process's live gauges --------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_worker_process_killed_mid_message_leaves_no_message_in_progress(
    transactional_db, broker, client, open_metrics, tmp_path, monkeypatch
):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # A partner that refuses at once, and one that never answers (it holds the listing walk).
    refusing, _ = partner_upsert(
        code=unique_code("refuses"), adapter="legacy", base_url=f"http://127.0.0.1:{free_port()}",
        api_key=SANDBOX_KEY, timeouts=(1.0, 20.0),
    )  # fmt: skip
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel takes the connection; nobody answers
    holding, _ = partner_upsert(
        code=unique_code("silent"), adapter="legacy",
        base_url=f"http://127.0.0.1:{silent.getsockname()[1]}", api_key=SANDBOX_KEY, timeouts=(1.0, 20.0),
    )  # fmt: skip
    processes = ProjectProcesses(
        tmp_path,
        {
            "DATABASE_URL": _database_url(),
            "REDIS_URL": django_settings.REDIS_URL,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
    )
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))  # what /metrics here reads
    try:
        worker = processes.manage(
            "worker", "rundramatiq", "--processes", "1", "--threads", "1", "--skip-checks",
            "--queues", refusing.queue_name, holding.queue_name,
        )  # fmt: skip
        messages.send_for_partner(messages.WALK_CHANGE_LISTING, refusing, refusing.pk)
        wait_until(
            lambda: _walks(scrape(client), "dramatiq_messages_total", refusing),
            what=f"the first walk to end (log: {tmp_path / 'worker.log'})",
            timeout_s=30,
            interval_s=0.2,
        )
        messages.send_for_partner(messages.WALK_CHANGE_LISTING, holding, holding.pk)
        wait_until(
            lambda: _walks(scrape(client), "dramatiq_messages_inprogress", holding),
            what="the second walk to be in progress",
            timeout_s=30,
            interval_s=0.2,
        )
        (live_file,) = metrics_dir.glob("gauge_livesum_*.db")
        os.kill(int(live_file.stem.rpartition("_")[2]), signal.SIGKILL)  # the worker process
        worker.wait(timeout=15)  # Dramatiq's main process reaps it, and exits for it
    finally:
        processes.stop_all()
        silent.close()

    text = scrape(client)
    assert not _walks(text, "dramatiq_messages_inprogress", holding)
    # What the dead process counted stays counted.
    assert _walks(text, "dramatiq_messages_total", refusing) == 1.0
    calls = value(
        text, "bookings_partner_calls_total", partner=refusing.code, operation="list", outcome="transient"
    )
    assert calls >= 1.0


def _walks(text: str, name: str, partner) -> float | None:
    labels = {"queue_name": partner.queue_name, "actor_name": messages.WALK_CHANGE_LISTING}
    return value(text, name, **labels)


def test_a_metrics_file_a_process_has_only_created_is_not_a_failed_scrape(tmp_path):
    # A process that starts (or is killed) between creating its file and sizing it leaves it
    # empty for that moment: prometheus_client failed the whole scrape on it (/metrics 500 in CI).
    import os

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from config.metrics import dead_processes

    written = MmapedDict(str(tmp_path / "counter_4242.db"))  # a process that counted once
    written.write_value(mmap_key("bookings_test", "bookings_test_total", [], [], "test"), 1.0, 0.0)
    written.close()
    (tmp_path / f"gauge_livesum_{os.getpid()}.db").write_bytes(b"")  # a live one, creating its file
    registry = CollectorRegistry()

    dead_processes.collect(registry, str(tmp_path))

    assert b"bookings_test_total 1.0" in generate_latest(registry)


# --- dead processes' counts, folded -----------------------------------------------------------------
def _counted(directory, pid: int, **values: float) -> None:
    """A process's counter file, as prometheus_client writes it: `name=value` per sample."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    kept = MmapedDict(str(directory / f"counter_{pid}.db"))
    for name, value in values.items():
        kept.write_value(mmap_key(name, f"{name}_total", ["kind"], ["a"], "test"), value, 0.0)
    kept.close()


def _observed(directory, pid: int, value: float) -> None:
    """A process's histogram file with one observation of `value`: buckets 1 and +Inf, each with its
    own count (the scrape makes them cumulative and reads the count off +Inf), and the sum."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    kept = MmapedDict(str(directory / f"histogram_{pid}.db"))
    for name, labels, counted in (
        ("bookings_wait_seconds_bucket", {"le": "1.0"}, 1.0 if value <= 1 else 0.0),
        ("bookings_wait_seconds_bucket", {"le": "+Inf"}, 0.0 if value <= 1 else 1.0),
        ("bookings_wait_seconds_sum", {}, value),
    ):
        key = mmap_key("bookings_wait_seconds", name, list(labels), list(labels.values()), "test")
        kept.write_value(key, counted, 0.0)
    kept.close()


def _dead_pids(count: int) -> list[int]:
    """Pids no process has: above the kernel's largest (a reaped process's could be reused)."""
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    return [pid_max + 1 + n for n in range(count)]


def _scraped(directory) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from config.metrics import dead_processes

    registry = CollectorRegistry()
    dead_processes.collect(registry, str(directory))
    return generate_latest(registry).decode()


def test_a_scrape_folds_dead_processes_files_into_one_archive_and_counts_the_same(tmp_path):
    first, second, third = _dead_pids(3)
    alive = os.getpid()
    _counted(tmp_path, first, bookings_a=2.0, bookings_b=1.0)
    _counted(tmp_path, second, bookings_a=3.0)
    _counted(tmp_path, alive, bookings_a=10.0)
    _observed(tmp_path, first, 0.5)
    _observed(tmp_path, second, 4.0)

    text = _scraped(tmp_path)

    assert value(text, "bookings_a_total", kind="a") == 15.0
    assert value(text, "bookings_b_total", kind="a") == 1.0
    assert value(text, "bookings_wait_seconds_count") == 2.0
    assert value(text, "bookings_wait_seconds_bucket", le="1.0") == 1.0
    assert value(text, "bookings_wait_seconds_sum") == 4.5
    # One file per kind for the dead, the live process's own untouched.
    assert {p.name for p in tmp_path.glob("*.db")} == {
        "counter_archive.db", f"counter_{alive}.db", "histogram_archive.db"
    }  # fmt: skip

    # A later death folds into the same archive.
    _counted(tmp_path, third, bookings_a=5.0)
    text = _scraped(tmp_path)
    assert value(text, "bookings_a_total", kind="a") == 20.0
    assert len(list(tmp_path.glob("*.db"))) == 3


def test_a_fold_stopped_at_any_point_counts_each_process_once(tmp_path):
    from config.metrics import archive

    def fresh(directory):
        directory.mkdir()
        first, second = _dead_pids(2)
        _counted(directory, first, bookings_a=2.0)
        _counted(directory, second, bookings_a=3.0)
        _scraped(directory)  # folded: the archive holds 5
        later = _dead_pids(1)[0]
        _counted(directory, later, bookings_a=7.0)
        return [f"counter_{later}.db"]

    # Stopped after its commit point (the journal written, nothing moved): finished, not redone.
    committed = tmp_path / "committed"
    archive.stage_fold(str(committed), fresh(committed))
    assert value(_scraped(committed), "bookings_a_total", kind="a") == 12.0
    assert not (committed / archive.JOURNAL).exists()

    # Stopped with the archive moved in and the old file not yet removed: not counted twice.
    moved = tmp_path / "moved"
    folded = fresh(moved)
    archive.stage_fold(str(moved), folded)
    os.replace(moved / archive.STAGING / "counter_archive.db", moved / "counter_archive.db")
    assert value(_scraped(moved), "bookings_a_total", kind="a") == 12.0

    # Stopped before its commit point (staged, no journal): discarded, folded again.
    staged = tmp_path / "staged"
    archive.stage_fold(str(staged), fresh(staged))
    (staged / archive.JOURNAL).unlink()
    assert value(_scraped(staged), "bookings_a_total", kind="a") == 12.0
    assert sorted(p.name for p in staged.glob("*.db")) == ["counter_archive.db"]


def test_scrapes_at_once_while_processes_count_and_die_never_count_one_twice_or_lose_one(tmp_path):
    import threading

    from config.metrics import archive

    # Each process counts once, as a process of ours does (its own file, named by its pid), and ends.
    count_once = (
        "import os, sys; from prometheus_client.mmap_dict import MmapedDict, mmap_key; "
        "kept = MmapedDict(os.path.join(sys.argv[1], f'counter_{os.getpid()}.db')); "
        "kept.write_value(mmap_key('bookings_a', 'bookings_a_total', ['kind'], ['a'], 'test'), 1.0, 0.0); "
        "kept.close()"
    )
    seen: list[list[float]] = [[] for _ in range(4)]
    errors: list[BaseException] = []
    done = threading.Event()

    def scrape_until_done(totals: list[float]) -> None:
        try:
            while not done.wait(0.005):
                totals.append(value(_scraped(tmp_path), "bookings_a_total", kind="a") or 0.0)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    scrapers = [threading.Thread(target=scrape_until_done, args=(totals,)) for totals in seen]
    for thread in scrapers:
        thread.start()
    for _ in range(30):  # processes count and end while the scrapes fold
        subprocess.run([sys.executable, "-c", count_once, str(tmp_path)], check=True)
    done.set()
    for thread in scrapers:
        thread.join()

    assert not errors, errors
    # Each scraper's totals never go back: nothing was counted twice, then once, or lost.
    assert all(len(totals) > 10 and totals == sorted(totals) for totals in seen), seen
    assert value(_scraped(tmp_path), "bookings_a_total", kind="a") == 30.0
    assert [p.name for p in tmp_path.glob("*.db")] == ["counter_archive.db"]
    assert not (tmp_path / archive.JOURNAL).exists()


def test_a_scrape_that_finds_a_fold_stopped_after_its_commit_finishes_it_before_it_reads(tmp_path):
    # A fold killed with its archive moved in and the old file still there: a scrape that lost
    # the race to fold reads only after finishing it, never both.
    from config.metrics import archive, dead_processes

    (first,) = _dead_pids(1)
    _counted(tmp_path, first, bookings_a=2.0)
    archive.stage_fold(str(tmp_path), [f"counter_{first}.db"])
    os.replace(tmp_path / archive.STAGING / "counter_archive.db", tmp_path / "counter_archive.db")
    collector = dead_processes._WrittenFilesCollector(registry=None, path=str(tmp_path))

    totals = {m.name: sum(s.value for s in m.samples) for m in collector.collect()}

    assert totals == {"bookings_a": 2.0}
    assert not (tmp_path / archive.JOURNAL).exists()


def test_a_fold_that_fails_leaves_the_scrape_answering(tmp_path, caplog):
    from config.metrics import archive

    (first,) = _dead_pids(1)
    _counted(tmp_path, first, bookings_a=2.0)
    (tmp_path / archive.STAGING).write_text("")  # a file where the staging directory goes

    assert value(_scraped(tmp_path), "bookings_a_total", kind="a") == 2.0
    assert "metrics fold skipped" in caplog.text


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a statement timeout is PostgreSQL's")
def test_a_slow_read_of_the_payments_leaves_out_their_figures_alone(
    client, open_metrics, broker, transactional_db
):
    """Review: the payments' figures shared the bookings' read; a slow count of every payment ever
    kept dropped every database figure and said the database was down."""
    open_metrics.METRICS_QUERY_TIMEOUT_MS = 200

    def slow(execute, sql, params, many, context):
        if "GROUP BY" in sql and '"payments_payment"' in sql:  # the count by status takes a second
            execute("SELECT pg_sleep(1)", None, False, context)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(slow):
        response = client.get("/metrics")

    text = response.content.decode()
    assert value(text, "bookings_metrics_source_up", source="payments") == 0.0
    assert value(text, "bookings_metrics_source_up", source="database") == 1.0
    assert value(text, "bookings_by_state", state="confirmed") == 0.0  # the bookings' figures kept
    assert not any(name.startswith("bookings_payments_") for name, _ in samples(text))
