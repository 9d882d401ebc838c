"""Every command with --json: an error is JSON on stdout too (the API's one error shape), with a
non-zero exit status, so a script that reads the JSON always has something to read
(`config.commands.JsonCommand`)."""

from __future__ import annotations

import argparse
import io
import json
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError
from django.utils import timezone

from config.commands import JsonCommand
from tests.factories import UserFactory

IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
OUR_APPS = {"bookings", "partners", "payments", "reconciliation", "sandbox", "bench", "chaos"}
LATER = (timezone.now().date() + timedelta(days=2)).isoformat()


def _takes_json(app: str, name: str) -> bool:
    parser = load_command_class(app, name).create_parser("manage.py", name)
    return any(
        "--json" in action.option_strings and isinstance(action, argparse._StoreTrueAction)
        for action in parser._actions
    )


def test_every_command_that_prints_json_says_its_errors_in_json():
    # A new command with --json that is not a JsonCommand would print its errors as text only.
    ours = {name: app for name, app in get_commands().items() if app in OUR_APPS}
    printing = sorted(name for name, app in ours.items() if _takes_json(app, name))

    assert {"reconcile_payments", "partner_upsert", "refund_payment", "replay_inbound_event"} <= set(printing)
    assert [n for n in printing if not isinstance(load_command_class(ours[n], n), JsonCommand)] == []


def run_failing(*args: str) -> tuple[CommandError, dict]:
    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command(*args, "--json", stdout=out, stderr=io.StringIO())
    return failed.value, json.loads(out.getvalue())


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param(["reconcile_payments", "--date", "20261206"], "validation_error", id="date-format"),
        pytest.param(["reconcile_payments", "--date", LATER], "validation_error", id="date-future"),
        pytest.param(["partner_health", "--minutes", "0"], "validation_error", id="partner-window"),
        pytest.param(["payment_health", "--no-probe", "--hours", "0"], "validation_error", id="horizon"),
        pytest.param(["booking_timeline", "BK-NOPE99"], "not_found", id="timeline"),
        pytest.param(["sync_booking", "BK-NOPE99"], "not_found", id="booking-action"),
        pytest.param(["cancel_booking", "BK-NOPE99", "--dry-run"], "not_found", id="booking-dry-run"),
        pytest.param(["refund_payment", "BK-NOPE99", "--amount", "5"], "not_found", id="payment-action"),
        pytest.param(["approve_refund", "999999"], "not_found", id="proposal-action"),
        pytest.param(["orphan_close", "999999", "--note", "gone"], "not_found", id="orphan-action"),
        pytest.param(["sync_booking", "BK-NOPE99", "--as", "nobody-h2"], "not_found", id="operator"),
        pytest.param(["replay_inbound_event", "999999"], "not_found", id="replay"),
        pytest.param(["replay_inbound_event", "99999999999999999999"], "not_found", id="replay-beyond-ids"),
        pytest.param(["reconcile", "--dry-run", "--partner", "nope"], "not_found", id="reconcile"),
        pytest.param(["orphans", "--partner", "nope"], "not_found", id="orphans"),
        pytest.param(["partner_health", "--partner", "nope"], "not_found", id="partner-health"),
        # an empty --date is a script's unset variable, never taken for the default (yesterday)
        pytest.param(["reconcile_payments", "--date", ""], "validation_error", id="date-empty"),
        pytest.param(["reconcile_payments", "--date", "  "], "validation_error", id="date-blank"),
        pytest.param(["sync_booking", "BK-NOPE99", "--note", "hi\x1b[2J"], "validation_error", id="note"),
        # an empty --as is a script's unset variable, never the trusted shell operator
        pytest.param(["sync_booking", "BK-NOPE99", "--as", ""], "validation_error", id="as-empty"),
        pytest.param(["sync_booking", "BK-NOPE99", "--as", "  "], "validation_error", id="as-blank"),
        # an option the action needs, left out, is an option refused
        pytest.param(["resolve_booking", "BK-NOPE99", "--note", "n"], "validation_error", id="no-outcome"),
        pytest.param(["orphan_close", "999999", "--yes"], "validation_error", id="no-note"),
        pytest.param(["refund_payment", "BK-NOPE99", "--yes"], "validation_error", id="no-amount"),
        pytest.param(
            ["record_outside_refund", "BK-NOPE99", "--amount", "5", "--note", "n"],
            "validation_error",
            id="no-method",
        ),
        pytest.param(
            [
                "partner_upsert",
                "--code=json-h2",
                "--adapter=reference",
                "--base-url=http://127.0.0.1:9",
                "--api-key=k",
                "--timeouts=slow",
            ],
            "validation_error",
            id="partner-upsert",
        ),
    ],
)
def test_an_error_with_json_is_json_on_stdout_in_the_one_error_shape(args, code):
    failed, printed = run_failing(*args)

    assert printed == {"error": {"code": code, "message": str(failed)}}
    # reconcile_payments' 1 means mismatches: an option it refuses has a status of its own.
    assert failed.returncode == (64 if args[0] == "reconcile_payments" else 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "permission"),
    [
        pytest.param(["sync_booking", "BK-NOPE99"], "bookings.sync_booking", id="booking-action"),
        pytest.param(["approve_refund", "999999"], "reconciliation.approve_refund", id="payment-action"),
        pytest.param(["replay_inbound_event", "999999"], "partners.replay_inboundevent", id="replay"),
    ],
)
def test_a_permission_the_operator_lacks_is_permission_denied_as_a_target_s_denial_is(args, permission):
    # Refused before any target (the reference is never looked up), by the same denial and code.
    nobody = UserFactory(is_staff=True)

    failed, printed = run_failing(*args, "--as", nobody.username)

    assert printed == {"error": {"code": "permission_denied", "message": str(failed)}}
    assert str(failed).endswith(f"as {nobody.username} lacks the permission {permission}.")
    assert failed.returncode == 1


@pytest.mark.django_db
def test_a_refusal_in_production_is_json_too(settings):
    settings.DEBUG = False

    failed, printed = run_failing("create_demo_data")

    assert printed["error"]["message"] == str(failed) and "--allow-production" in str(failed)


def test_without_json_an_error_is_only_the_line_it_always_was():
    out = io.StringIO()
    with pytest.raises(CommandError, match="not written YYYY-MM-DD"):
        call_command("reconcile_payments", "--date", "20261206", stdout=out, stderr=io.StringIO())

    assert out.getvalue() == ""


PARSER, COMMAND = "usage: ", "CommandError: "  # how stderr's line begins: argparse's, or the command's


@pytest.mark.parametrize(
    ("argv", "status", "code", "said"),
    [
        # argparse refuses it before the command runs
        pytest.param(["partner_health", "--minutes", "abc"], 2, "validation_error", PARSER, id="argparse"),
        pytest.param(["partner_health", "--minutes", "0"], 1, "validation_error", COMMAND, id="command"),
        # reconcile_payments says 1 for mismatches and 2 for a provider it could not read: used
        # wrongly, it exits 64 (EX_USAGE), whoever refused the argument.
        pytest.param(["reconcile_payments", "--date"], 64, "validation_error", PARSER, id="settle-argparse"),
        pytest.param(
            ["reconcile_payments", "--dte", "x"], 64, "validation_error", PARSER, id="settle-unknown"
        ),
        pytest.param(
            ["reconcile_payments", "--date", "2026-02-30"], 64, "validation_error", COMMAND, id="settle-day"
        ),
    ],
)
def test_from_the_shell_stdout_holds_the_json_error_and_stderr_the_line(capsys, argv, status, code, said):
    command = load_command_class("reconciliation", argv[0])

    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", *argv, "--json"])

    out, err = capsys.readouterr()
    assert exited.value.code == status
    assert json.loads(out)["error"]["code"] == code
    assert json.loads(out)["error"]["message"].split(": ")[-1] in err
    assert err.startswith(said)  # the line it always was


def test_without_json_a_settlement_used_wrongly_exits_with_its_own_status_too(capsys):
    command = load_command_class("reconciliation", "reconcile_payments")

    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", "reconcile_payments", "--dte", "x"])

    out, err = capsys.readouterr()
    assert (exited.value.code, out) == (64, "")
    assert err.startswith("usage: ") and "error: unrecognized arguments: --dte x" in err


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("argv", "status"),
    [
        pytest.param(["booking_timeline", "BK-\udcff"], 2, id="reference"),
        pytest.param(["sync_booking", "BK-NOPE99", "--yes", "--note", "a\udcffb"], 2, id="note"),
        pytest.param(["reconcile_payments", "--date", "2026-12-0\udcff"], 64, id="settlement"),
    ],
)
def test_an_argument_that_is_not_utf8_is_refused_as_usage_not_a_traceback(capsys, monkeypatch, argv, status):
    # A shell passes bytes; Python keeps those that are not UTF-8 as lone surrogates, which the
    # database cannot take (UnicodeEncodeError in psycopg, a traceback).
    from django.db import connections

    monkeypatch.setattr(connections, "close_all", lambda: None)  # run_from_argv's; the test's connection
    command = load_command_class("reconciliation", argv[0])

    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", *argv, "--json"])

    out, err = capsys.readouterr()
    assert exited.value.code == status
    assert json.loads(out) == {
        "error": {"code": "validation_error", "message": f"argument {argv[-1]!r} is not UTF-8 text"}
    }
    assert err.startswith("usage: ") and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["payment_health", "--no-probe"], id="payment-health"),
        pytest.param(["sync_booking", "BK-AAAAAA", "--dry-run"], id="booking-action"),
        pytest.param(["orphans"], id="orphans"),
    ],
)
def test_a_database_that_does_not_answer_is_one_line_and_json_not_a_traceback(argv):
    # A cron job reading --json during a database outage gets the error to parse, and ops a line;
    # its exit status is the outage's own (EX_TEMPFAIL), never a refusal's (reconcile_payments':
    # test_payment_provider.py, where a provider answers it).
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere"}

    ran = subprocess.run(
        [sys.executable, "manage.py", *argv, "--json"], cwd=root, env=env, capture_output=True, text=True
    )

    assert ran.returncode == 75, ran.stderr
    assert json.loads(ran.stdout)["error"]["code"] == "service_unavailable"
    assert "Traceback" not in ran.stderr
    assert ran.stderr.startswith("CommandError: The database is not answering (OperationalError:")


# --- what an outage is called: its cause, not always "not answering" ------------------------------
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not IS_POSTGRES, reason="a statement timeout is PostgreSQL's (SQLite has none)")
def test_a_statement_the_database_timed_out_is_said_busy_not_unreachable():
    from django.db import DatabaseError, connection, transaction

    from config.commands import unavailable_error

    # SET LOCAL: the timeout ends with the transaction, not with this test's connection.
    with pytest.raises(DatabaseError) as raised, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 50")
        cursor.execute("SELECT pg_sleep(2)")

    error = unavailable_error(raised.value)
    assert error is not None and error.code == "service_unavailable"
    assert str(error).startswith("The database is busy (a lock or a timeout under load) (OperationalError:")


def test_a_redis_that_takes_no_writes_is_one_line_not_a_traceback(tmp_path):
    import redis

    from config.commands import unavailable_error
    from tests.own_servers import own_redis

    server = own_redis(tmp_path / "redis")
    try:
        client = redis.Redis.from_url(server.url)
        client.execute_command("REPLICAOF", "127.0.0.1", "1")  # a replica of nobody: read-only
        with pytest.raises(redis.ReadOnlyError) as raised:
            client.set("probe", "1")
    finally:
        server.stop()

    error = unavailable_error(raised.value)
    assert error is not None and error.code == "service_unavailable"
    said = "Our queue (Redis) refuses writes (it is a read-only replica) (ReadOnlyError:"
    assert str(error).startswith(said)
