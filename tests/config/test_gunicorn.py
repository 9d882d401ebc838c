"""gunicorn as the Procfile runs it: its access log says who asked (the client behind the trusted
proxies) and how long each request took, what it refuses before the application sees it is
answered in the one error shape, and a worker that dies leaves no live gauge behind."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys

import pytest
from django.conf import settings
from prometheus_client.multiprocess import MultiProcessCollector

from config.schema import NOT_A_VERSION
from tests.helpers import wait_until
from tests.sandbox_process import free_port


def test_the_access_log_line_of_a_request_carries_its_duration(tmp_path):
    line, status = _access_line(tmp_path)

    # address [time] "request line" status bytes duration "user agent" (http.client sends none)
    pattern = rf'127\.0\.0\.1 \[[^]]+\] "GET /healthz HTTP/1\.1" {status} \d+ \d+ms "-"'
    assert re.fullmatch(pattern, line), line


@pytest.mark.parametrize(
    ("proxies", "logged"),
    [("1", "203.0.113.9"), ("2", "198.51.100.7"), ("0", "127.0.0.1")],
    ids=["behind-one-proxy", "behind-two", "no-proxy-trusted"],
)
def test_the_access_log_line_carries_the_client_s_address_behind_the_trusted_proxies(
    tmp_path, proxies, logged
):
    # the proxy (127.0.0.1 here) appends the address it saw; what is left of it the client wrote
    forwarded = {"X-Forwarded-For": "10.6.6.6, 198.51.100.7, 203.0.113.9"}

    line, _ = _access_line(tmp_path, headers=forwarded, TRUSTED_PROXY_COUNT=proxies)

    assert line.split(" ", 1)[0] == logged, line


def _access_line(tmp_path, headers: dict[str, str] | None = None, **env: str) -> tuple[str, int]:
    """The access log line of one GET /healthz to gunicorn as the Procfile runs it, and its status."""
    port = free_port()
    log = tmp_path / "access.log"
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--access-logfile", str(log), "--no-control-socket"],
        cwd=settings.BASE_DIR,  # where gunicorn finds gunicorn.conf.py
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(
            lambda: _health_status(port, gunicorn), timeout_s=30, interval_s=0.2, what="gunicorn to answer"
        )
        status = _health_status(port, gunicorn, headers or {})
        wait_until(lambda: len(_lines(log)) >= 2, what="the access log line")
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)
    return _lines(log)[-1], status


def _lines(log) -> list[str]:
    return [line for line in log.read_text().splitlines() if "/healthz" in line] if log.exists() else []


def _health_status(
    port: int, gunicorn: subprocess.Popen, headers: dict[str, str] | None = None
) -> int | None:
    """The status of GET /healthz, or None while nothing listens yet."""
    assert gunicorn.poll() is None, gunicorn.stderr.read().decode()[-2000:]
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/healthz", headers=headers or {})
        status = connection.getresponse().status
        connection.close()
    except OSError:
        return None
    return status


@pytest.fixture
def gunicorn_port(tmp_path):
    port = free_port()
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--no-control-socket"],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_until(lambda: _health_status(port, gunicorn), timeout_s=30, interval_s=0.2, what="gunicorn")
        yield port
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)


@pytest.mark.parametrize(
    ("path", "headers", "status", "code", "message"),
    [
        ("/api/v1/offers", {"Idempotency-Key": "k" * 9000}, 431, "request_header_fields_too_large",
         "The request's headers are too large."),
        ("/api/v1/bookings/" + "A" * 5000, {}, 414, "request_uri_too_long", "The request's URL is too long."),
    ],
)  # fmt: skip
def test_what_gunicorn_refuses_before_the_application_is_answered_in_the_one_error_shape(
    gunicorn_port, path, headers, status, code, message
):
    connection = http.client.HTTPConnection("127.0.0.1", gunicorn_port, timeout=10)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()

    assert response.status == status
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(response.read()) == {"error": {"code": code, "message": message}}


def test_the_schema_s_version_never_reaches_gunicorn_s_header_check_unsafe(gunicorn_port):
    """drf-spectacular puts `?version=` into Content-Disposition; gunicorn refused the header of a
    control character with a 500 (an ERROR traceback). Now such a version is a 400 (config/schema.py)."""
    answers = {}
    for query in ("version=%00", "version=a%0d%0aX:1", "version=%22", "version=1.0.0"):
        connection = http.client.HTTPConnection("127.0.0.1", gunicorn_port, timeout=30)
        connection.request("GET", f"/api/schema/?format=json&{query}")
        response = connection.getresponse()
        answers[query] = (response.status, response.getheader("Content-Disposition"), response.read())
        connection.close()

    refused = {"error": {"code": "validation_error", "message": "The request is invalid.",
                         "fields": {"version": [NOT_A_VERSION]}}}  # fmt: skip
    for query in ("version=%00", "version=a%0d%0aX:1", "version=%22"):
        status, disposition, body = answers[query]
        assert (status, disposition, json.loads(body)) == (400, None, refused), query
    status, disposition, body = answers["version=1.0.0"]
    assert status == 200 and json.loads(body)["openapi"]
    assert disposition == 'inline; filename="Bookings API (1.0.0).json"'


def test_a_worker_killed_leaves_its_counts_and_takes_its_live_gauges_with_it(tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = free_port()
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "tests.config.live_gauge_app:application",
         "--bind", f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket"],
        cwd=settings.BASE_DIR,  # gunicorn.conf.py, its hooks
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
             "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        pid = wait_until(lambda: _worker_pid(port, gunicorn), timeout_s=30, interval_s=0.1, what="gunicorn")
        assert _summed(metrics_dir) == {"test_requests_in_progress": 1.0, "test_requests_total": 1.0}

        os.kill(pid, signal.SIGKILL)
        # The master reaps it and starts another (whose own gauge starts at 0).
        wait_until(
            lambda: _summed(metrics_dir).get("test_requests_in_progress") == 0.0,
            timeout_s=10,
            what="the killed worker's live gauge to leave the metrics directory",
        )
        assert _summed(metrics_dir)["test_requests_total"] == 1.0  # its count stays
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)


def _worker_pid(port: int, gunicorn: subprocess.Popen) -> int | None:
    """The pid of the worker that answered a GET, or None while nothing listens yet."""
    assert gunicorn.poll() is None, gunicorn.stderr.read().decode()[-2000:]
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/")
        pid = int(connection.getresponse().read())
        connection.close()
    except OSError:
        return None
    return pid


def _summed(metrics_dir) -> dict[str, float]:
    """What a scrape of the directory sums, as prometheus_client reads it (no project code).

    A worker the master has just started creates its files empty and sizes them a moment later;
    prometheus_client cannot read a file in between, so those are left out, as the product's own
    scrape leaves them out (config/metrics/dead_processes.py)."""
    for _attempt in range(5):
        files = [str(path) for path in metrics_dir.glob("*.db") if _size(path) >= 8]
        try:
            families = MultiProcessCollector.merge(files, accumulate=True)
        except FileNotFoundError:  # the master removed a file between the listing and the read
            continue
        return {
            sample.name: sample.value
            for family in families
            for sample in family.samples
            if sample.name.startswith("test_requests")
        }
    raise AssertionError(f"{metrics_dir} kept changing under five reads")


def _size(path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # removed meanwhile: the master forgot a worker
        return 0
