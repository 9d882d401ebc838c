"""LOG_FORMAT=json: one JSON object per line (time, level, logger, message, the context, the
record's fields), in the formatter and in a real process of the project."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from config.logging import ContextFilter, JsonFormatter, log_context

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
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is one object
    finished = next(line for line in lines if line["message"] == "sweep finished")
    assert finished["logger"] == "reconciliation.services.sweeper"
    assert finished["level"] == "info"
    assert finished["dry_run"] is False  # the report's own fields, typed


def test_an_unknown_log_format_is_refused_at_start():
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test", "LOG_FORMAT": "yaml"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert "LOG_FORMAT must be kv or json, not 'yaml'" in done.stderr
