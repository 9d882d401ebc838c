"""The settings refuse a malformed or meaningless value at start, naming every one at once
(config/env_values.py), where it was a 500 on every request it touched, a traceback naming no
variable, or a value silently other than the one set."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from config.rates import Rate
from tests import production

ROOT = Path(__file__).resolve().parents[2]
RATES = [
    "API_THROTTLE_RATE",
    "API_THROTTLE_ADDRESS_RATE",
    "PAGE_THROTTLE_RATE",
    "PAGE_THROTTLE_ADDRESS_RATE",
    "ACCOUNT_THROTTLE_RATE",
    "PASSWORD_RESET_EMAIL_RATE",
    "WEBHOOK_REFUSED_PARTNER_RATE",
    "WEBHOOK_REFUSED_SOURCE_RATE",
    "WEBHOOK_DUPLICATE_PARTNER_RATE",
]


def _start(code: str = "print('started')", *, module: str = "config.settings.production", **env: str):
    return production.start_django(code, **production.environment(**env, DJANGO_SETTINGS_MODULE=module))


def _refused(result: subprocess.CompletedProcess, module: str = "config.settings.production") -> list[str]:
    """The names the refusal lists, one line each."""
    assert result.returncode != 0, result.stdout
    assert f"ImproperlyConfigured: {module} does not start on these values" in result.stderr, result.stderr
    return re.findall(r"^- ([A-Z_]+) must ", result.stderr, re.M)


@pytest.mark.parametrize("name", RATES)
def test_each_rate_setting_is_refused_at_start_when_malformed(name):
    # It was read by the first request it limits: every API request, page form or duplicate
    # webhook a 500 (a ValueError, a KeyError), while the process started and check --deploy passed.
    result = _start(**{name: "lots"})

    assert _refused(result) == [name]
    assert f"{name} must be a rate" in result.stderr


@pytest.mark.parametrize("text", ["lots", "600 per min", "10/w", "", "0/min", "10/", "/min", "-5/min"])
def test_a_malformed_rate_is_refused_whatever_its_fault(text):
    assert _refused(_start(API_THROTTLE_RATE=text)) == ["API_THROTTLE_RATE"]


@pytest.mark.parametrize(
    ("text", "limit", "period_s"),
    [
        ("600/min", 600, 60),
        ("20/s", 20, 1),
        ("5000/hour", 5000, 3600),
        ("1/day", 1, 86400),
        ("3/minutes", 3, 60),
    ],
)
def test_rates_in_drfs_notation_are_read(text, limit, period_s):
    assert Rate.parse(text) == Rate(limit=limit, period_ms=period_s * 1000)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DB_CONN_MAX_AGE", "abc"),
        ("RECONCILE_BATCH_SIZE", "ten"),
        ("RECONCILE_BATCH_SIZE", "0"),  # a sweep that takes nothing
        ("RECONCILE_INTERVAL_S", "nan"),
        ("RECONCILE_INTERVAL_S", "inf"),
        ("LIVE_HEARTBEAT_S", "0"),  # the live hub's heartbeat spun, reconnecting pub/sub endlessly
        ("REDIS_SOCKET_TIMEOUT_S", "0"),  # a non-blocking socket
        ("TRUSTED_PROXY_COUNT", "-1"),  # an index out of range: a 500 with X-Forwarded-For
        ("PAYMENTS_READ_TIMEOUT_S", "30s"),  # django-environ read it as 30.0
        ("DATABASE_URL", "garbage"),  # a KeyError 'ENGINE'
        ("DATABASE_URL", "mysql://bookings@db.internal/bookings"),  # no engine we run on
        ("WORKER_METRICS_PORT", "70000"),
        ("BOOKING_SERVICE_FEE", "abc"),  # every quote a 500
    ],
)
def test_a_malformed_or_meaningless_number_is_refused_naming_its_variable(name, value):
    result = _start(**{name: value})

    assert _refused(result) == [name]
    assert f"{name} must be " in result.stderr and repr(value) in result.stderr


def test_every_fault_is_named_at_once_with_productions_own_refusals():
    result = _start(
        SECRET_KEY="short",
        DB_CONN_MAX_AGE="abc",
        LIVE_HEARTBEAT_S="0",
        API_THROTTLE_RATE="lots",
        WEBHOOK_DUPLICATE_PARTNER_RATE="10/w",
    )

    assert _refused(result) == [
        "DB_CONN_MAX_AGE",
        "API_THROTTLE_RATE",
        "LIVE_HEARTBEAT_S",
        "WEBHOOK_DUPLICATE_PARTNER_RATE",
        "SECRET_KEY",
    ]


@pytest.mark.parametrize("name", ["production", "dev", "test", "bench"])
def test_every_settings_module_refuses_a_malformed_value(name):
    module = f"config.settings.{name}"
    result = _start(module=module, RECONCILE_BATCH_SIZE="ten", PAGE_THROTTLE_RATE="600 per min")

    assert _refused(result, module) == ["PAGE_THROTTLE_RATE", "RECONCILE_BATCH_SIZE"]


def test_numbers_are_read_as_written():
    # django-environ's float strips letters first: 1e1 was 11.0.
    names = [
        "PAYMENTS_READ_TIMEOUT_S",
        "PAYMENTS_CONNECT_TIMEOUT_S",
        "RECONCILE_BATCH_SIZE",
        "TRUSTED_PROXY_COUNT",
    ]
    code = f"from django.conf import settings as s; print([getattr(s, n) for n in {names}])"
    result = _start(
        code,
        PAYMENTS_READ_TIMEOUT_S="1e1",
        PAYMENTS_CONNECT_TIMEOUT_S=" 2.5 ",
        RECONCILE_BATCH_SIZE="500",
        TRUSTED_PROXY_COUNT="2",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[10.0, 2.5, 500, 2]"


@pytest.mark.parametrize("module", ["config.settings.base", "config.settings.test"])
def test_the_refund_approval_settings_join_the_one_refusal(module):
    """Read by their own parsers (config/refund_approval.py), they are named beside every other
    value at fault, at once, by any settings module, base itself included."""
    result = _start(module=module, PAYMENTS_REFUND_APPROVAL_CURRENCY="XYZ", LIVE_HEARTBEAT_S="0")

    assert _refused(result, module) == ["LIVE_HEARTBEAT_S", "PAYMENTS_REFUND_APPROVAL_CURRENCY"]
