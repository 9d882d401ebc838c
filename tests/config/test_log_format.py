"""LOG_FORMAT=json: one JSON object per line (time, level, logger, message, the context, the
record's fields), in the formatter and in a real process of the project."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from config import events
from config.logging import ContextFilter, JsonFormatter, log_context
from tests.helpers import wait_until
from tests.sandbox_process import free_port

ROOT = Path(__file__).resolve().parents[2]


def _record(message: str, *args: object, level: int = logging.INFO, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("partners.services.calls", level, __file__, 1, message, args, None)
    record.__dict__.update(fields)
    return record


def test_a_json_line_carries_time_level_logger_message_the_context_and_the_fields():
    record = _record("partner call to %s", "acme", http_status=504, latency_ms=1200, error="timeout")
    with log_context(booking="BK-7F3K2Q", partner_key="bk-abc"):
        ContextFilter().filter(record)

    line = JsonFormatter().format(record)

    assert "\n" not in line
    fields = json.loads(line)
    assert list(fields)[:4] == ["time", "level", "logger", "message"]
    assert fields == {
        "time": fields["time"],
        "level": "info",
        "logger": "partners.services.calls",
        "message": "partner call to acme",
        "booking": "BK-7F3K2Q",
        "partner_key": "bk-abc",
        "http_status": 504,
        "latency_ms": 1200,
        "error": "timeout",
    }
    assert fields["time"].endswith("+00:00") and "T" in fields["time"]


def test_an_exception_is_one_field_of_the_same_line():
    try:
        raise ValueError("bad answer\nover two lines")
    except ValueError:
        record = _record("sweep failed", level=logging.ERROR, exc_info=sys.exc_info())
    ContextFilter().filter(record)

    line = JsonFormatter().format(record)

    assert "\n" not in line
    fields = json.loads(line)
    assert fields["level"] == "error"
    assert fields["exc"].startswith("Traceback (most recent call last):")
    assert fields["exc"].endswith("ValueError: bad answer\nover two lines")


def test_gunicorns_access_line_carries_the_requests_fields():
    atoms = {
        "h": "10.0.0.7",
        "m": "GET",
        "U": "/healthz",
        "q": "",
        "s": "200",
        "B": 60,
        "M": 3,
        "a": "curl/8",
    }
    record = logging.LogRecord(
        "gunicorn.access", logging.INFO, __file__, 1, '%(h)s "%(U)s" %(s)s', (atoms,), None
    )

    fields = json.loads(JsonFormatter().format(record))

    assert fields["message"] == '10.0.0.7 "/healthz" 200'
    assert {
        k: fields[k] for k in ("remote", "method", "path", "status", "bytes", "duration_ms", "user_agent")
    } == {
        "remote": "10.0.0.7",
        "method": "GET",
        "path": "/healthz",
        "status": 200,
        "bytes": 60,
        "duration_ms": 3,
        "user_agent": "curl/8",
    }
    assert "query" not in fields  # an empty atom is left out


def _database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.mark.integration
def test_the_scheduler_process_logs_json_lines(transactional_db):
    done = subprocess.run(
        [sys.executable, "manage.py", "run_scheduler", "--once"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": _database_url(),
            "LOG_FORMAT": "json",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    # every line is one object, on either stream (a log shipper reads both): its start line too
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines()]
    started = next(line for line in lines if line["message"].startswith("scheduler: sweeping every"))
    assert started["logger"] == "reconciliation.management.commands.run_scheduler"
    assert started["interval_s"] == 15
    finished = next(line for line in lines if line["message"] == "sweep finished")
    assert finished["logger"] == "reconciliation.services.sweeper"
    assert finished["level"] == "info"
    assert finished["dry_run"] is False  # the report's own fields, typed


def test_an_unknown_log_format_is_refused_at_start():
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "LOG_FORMAT": "yaml",
            "LIVE_HEARTBEAT_S": "0",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert "LOG_FORMAT must be kv or json, not 'yaml'" in done.stderr
    # In the one refusal, with the settings' other faults (config/env_values.py).
    assert "- LIVE_HEARTBEAT_S must be a number above 0" in done.stderr


# --- LOG_FORMAT from the .env file: gunicorn's and uvicorn's own lines too ----------------------
def _env_file_process(argv: list[str], tmp_path: Path) -> subprocess.Popen:
    """A process of the project whose LOG_FORMAT=json is in its .env file only (ENV_FILE names
    this test's file, as it would /etc/bookings.env), not in its environment."""
    env_file = tmp_path / "bookings.env"
    env_file.write_text("LOG_FORMAT=json\n")
    environment = {k: v for k, v in os.environ.items() if k != "LOG_FORMAT"}
    environment.update(DJANGO_SETTINGS_MODULE="config.settings.test", ENV_FILE=str(env_file))
    return subprocess.Popen(
        argv, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("w")
    )


def _answered(port: int, request: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            return bool(sock.recv(1024))
    except OSError:
        return False  # not listening yet


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def test_gunicorns_access_lines_follow_log_format_from_the_env_file(tmp_path):
    port = free_port()
    access_log = tmp_path / "access.log"
    gunicorn = _env_file_process(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--access-logfile", str(access_log), "--no-control-socket"],
        tmp_path,
    )  # fmt: skip
    try:
        get = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        wait_until(lambda: _answered(port, get), timeout_s=30, interval_s=0.2, what="gunicorn to answer")
        wait_until(lambda: access_log.exists() and access_log.read_text(), what="the access log line")
    finally:
        _stop(gunicorn)

    line = json.loads(access_log.read_text().splitlines()[0])  # not `127.0.0.1 [...] "GET ..."`
    assert (line["logger"], line["method"], line["path"]) == ("gunicorn.access", "GET", "/healthz")


def test_the_events_process_uvicorn_lines_follow_log_format_from_the_env_file(tmp_path):
    port = free_port()
    events_process = _env_file_process(events.command(port=port), tmp_path)
    try:
        get = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        wait_until(lambda: _answered(port, get), timeout_s=30, interval_s=0.2, what="uvicorn to answer")
        _answered(port, b"NOT HTTP AT ALL\r\n\r\n")  # uvicorn's own warning: "Invalid HTTP request"
        stderr = tmp_path / "stderr"
        wait_until(lambda: "Invalid HTTP request" in stderr.read_text(), what="uvicorn's warning")
    finally:
        _stop(events_process)

    warning = next(line for line in stderr.read_text().splitlines() if "Invalid HTTP request" in line)
    fields = json.loads(warning)  # not `WARNING:  Invalid HTTP request received.`
    assert (fields["logger"], fields["level"]) == ("uvicorn.error", "warning")
