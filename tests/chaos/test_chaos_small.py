"""The small chaos configuration, as CI runs it: real processes on PostgreSQL and Redis.

`manage.py chaos` starts gunicorn, the events process, three Dramatiq workers, the scheduler,
both sandbox partners and an SMTP sink, books 60 times through the HTTP API with every partner
fault on while the customers follow their bookings (streams and polls), SIGKILLs workers,
restarts Redis, drops the database connections, and checks every invariant. This test asserts
that it ran as asked and found nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.solo,  # its timeliness checks measure the whole machine
    pytest.mark.skipif(
        not IS_POSTGRES,
        reason="the chaos run needs PostgreSQL: many processes write at once, and it drops their "
        "connections (set DATABASE_URL=postgres://...)",
    ),
]

SMALL = [
    "--bookings=60",
    "--concurrency=8",
    "--duration=15",
    "--kill-interval=5",
    "--confirmation-window=70",
    "--settle-timeout=60",
    "--own-database",
    "--seed=20270101",
    "--no-live",
]


@pytest.mark.timeout(235)
def test_the_small_chaos_run_holds_every_invariant(tmp_path: Path):
    # Given the whole system under faults, kills, a Redis restart and a connection drop
    report = tmp_path / "chaos.json"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.dev"}
    command = [sys.executable, "manage.py", "chaos", *SMALL, f"--json={report}", f"--run-dir={tmp_path}"]

    # When the small configuration runs
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=230)

    # Then it ran as asked and found no violation
    output = f"{completed.stdout[-6000:]}\n{completed.stderr[-3000:]}"
    assert report.exists(), output
    data = json.loads(report.read_text())
    assert (completed.returncode, data["violations"], data["harness_errors"]) == (0, 0, []), output
    assert data["clients"]["accepted"] == 60
    disruptions = {event["kind"] for event in data["disruptions"]}
    assert {"worker_kill", "worker_restart", "redis_restart", "db_drop"} <= disruptions
    faults = {name for partner in data["partners"].values() for name in partner["stats"]["faults"]}
    assert {"async_confirm", "webhook_delay", "latency"} <= faults
    assert [check["name"] for check in data["checks"]] == [
        "no_booking_lost",
        "partner_reservations",
        "orphan_cases",
        "confirmed_matches_partner",
        "partner_disagreements",
        "timelines",
        "observations_monotonic",
        "everything_ends",
        "tries_bounded",
        "customer_confirmed_after_partner",
        "customer_ended_when_released",
        "customer_never_backwards",
        "customer_last_shown_final",
        "customer_one_mail_per_change",
        "partner_to_us_latency",
        "money_captured_only_when_confirmed",
        "money_owed",
        "money_one_authorization",
        "money_nothing_held",
        "money_no_refund_twice",
    ]
    # and the customers' side was observed: every booking followed, shown, and mailed about
    checks = {check["name"]: check for check in data["checks"]}
    followed = checks["customer_last_shown_final"]["figures"]
    assert (followed["bookings_followed"], followed["followers_customer-stream"]) == (60, 60)
    assert data["watchers"]["catch_up"]["caught_up"] is True
    shown_confirmed = checks["customer_confirmed_after_partner"]["figures"]["bookings_shown_confirmed"]
    assert shown_confirmed >= 1
    mail = checks["customer_one_mail_per_change"]["figures"]
    assert mail["changes_owing_mail"] >= shown_confirmed and mail["mails"] >= 1
    # and money moved under the provider's faults: bookings paid, each judged against its truth
    money = checks["money_owed"]["figures"]
    assert money["judged"] >= 1 and checks["money_one_authorization"]["figures"]["intents"] >= 1
    assert data["partners"]["payments"]["stats"]["faults"]
