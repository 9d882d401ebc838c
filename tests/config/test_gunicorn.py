"""gunicorn as the Procfile runs it: its access log says how long each request took, and what it
refuses before the application sees it is answered in the one error shape."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys

import pytest
from django.conf import settings

from tests.helpers import wait_until
from tests.sandbox_process import free_port


def test_the_access_log_line_of_a_request_carries_its_duration(tmp_path):
    port = free_port()
    log = tmp_path / "access.log"
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--access-logfile", str(log), "--no-control-socket"],
        cwd=settings.BASE_DIR,  # where gunicorn finds gunicorn.conf.py
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        status = wait_until(
            lambda: _health_status(port, gunicorn), timeout_s=30, interval_s=0.2, what="gunicorn to answer"
        )
        wait_until(lambda: log.exists() and "/healthz" in log.read_text(), what="the access log line")
    finally:
        gunicorn.terminate()
        gunicorn.wait(timeout=30)

    line = next(line for line in log.read_text().splitlines() if "/healthz" in line)
    # address [time] "request line" status bytes duration "user agent" (http.client sends none)
    pattern = rf'127\.0\.0\.1 \[[^]]+\] "GET /healthz HTTP/1\.1" {status} \d+ \d+ms "-"'
    assert re.fullmatch(pattern, line), line


def _health_status(port: int, gunicorn: subprocess.Popen) -> int | None:
    """The status of GET /healthz, or None while nothing listens yet."""
    assert gunicorn.poll() is None, gunicorn.stderr.read().decode()[-2000:]
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/healthz")
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
