"""The ops commands' options: what an operator can mistype is refused with a clear CommandError
(never a traceback), and the refusal words the option as --help does."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.utils import timezone


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def help_of(command: str) -> str:
    from django.core.management import load_command_class

    return load_command_class("reconciliation", command).create_parser("manage.py", command).format_help()


def test_resolve_booking_refuses_an_unknown_outcome_in_the_words_of_its_help():
    with pytest.raises(CommandError) as error:
        run("resolve_booking", "BK-NOPE99", "--outcome", "bogus")

    assert (
        "invalid choice: 'bogus' (choose from 'confirmed', 'failed', 'cancelled', 'expired', 'rejected')"
        in str(error.value)
    )
    assert "{confirmed,failed,cancelled,expired,rejected}" in help_of("resolve_booking")


# Two days on, so a run across midnight (UTC) still asks for a day to come.
LATER = (timezone.now().date() + timedelta(days=2)).isoformat()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["partner_health", "--minutes", "0"], "--minutes must be more than 0", id="ph-zero"),
        pytest.param(
            ["partner_health", "--minutes", "-5"], "--minutes must be more than 0", id="ph-negative"
        ),
        pytest.param(
            ["partner_health", "--minutes", "99999999999"], "at most 43200 (30 days)", id="ph-overflow"
        ),
        pytest.param(["partner_health", "--minutes", "43201"], "at most 43200 (30 days)", id="ph-past-bound"),
        pytest.param(
            ["payment_health", "--minutes", "99999999999"], "--minutes must be more than 0", id="pay-minutes"
        ),
        pytest.param(
            ["payment_health", "--hours", "99999999999"], "at most 720 (30 days)", id="hours-overflow"
        ),
        pytest.param(["payment_health", "--hours", "720.5"], "at most 720 (30 days)", id="hours-past-bound"),
        pytest.param(["payment_health", "--hours", "nan"], "--hours must be more than 0", id="hours-nan"),
        pytest.param(["payment_health", "--hours", "inf"], "--hours must be more than 0", id="hours-inf"),
        pytest.param(["payment_health", "--hours", "-1"], "--hours must be more than 0", id="hours-negative"),
        pytest.param(["payment_health", "--hours", "0"], "--hours must be more than 0", id="hours-zero"),
        pytest.param(
            ["reconcile_payments", "--date", "0001-01-01"], "nothing before 1970-01-01", id="date-first"
        ),
        pytest.param(
            ["reconcile_payments", "--date", "1969-12-31"], "nothing before 1970-01-01", id="date-pre-epoch"
        ),
        pytest.param(["reconcile_payments", "--date", "9999-12-31"], "has not happened yet", id="date-last"),
        pytest.param(["reconcile_payments", "--date", LATER], "has not happened yet", id="date-future"),
    ],
)
def test_a_window_or_day_out_of_bounds_is_a_clear_command_error(args, message):
    # No database: each is refused before anything is read.
    with pytest.raises(CommandError, match=re.escape(message)):
        run(*args, "--json", *(["--no-probe"] if args[0] == "payment_health" else []))


@pytest.mark.parametrize(
    ("day", "why"),
    [
        pytest.param("20261206", "it is not written YYYY-MM-DD", id="basic-format"),
        pytest.param("2026-W49-7", "it is not written YYYY-MM-DD", id="week-date"),
        pytest.param("2026-12-06T00:00", "it is not written YYYY-MM-DD", id="a-time-too"),
        pytest.param("٢٠٢٦-١٢-٠٦", "it is not written YYYY-MM-DD", id="other-digits"),
        pytest.param("2026-02-30", "February 2026 has 28 days", id="not-in-the-calendar"),
    ],
)
def test_a_date_option_takes_the_product_s_one_date_rule(day, why):
    # The command says YYYY-MM-DD; date.fromisoformat also read the basic and week formats.
    with pytest.raises(CommandError) as error:
        run("reconcile_payments", "--date", day, "--json")

    assert str(error.value).startswith(f"--date {day!r} is not a day: ")
    assert why in str(error.value)


@pytest.mark.django_db
def test_the_bounds_themselves_are_accepted_and_hours_are_honoured():
    health = json.loads(run("payment_health", "--no-probe", "--json", "--minutes", "43200", "--hours", "720"))
    short = json.loads(run("payment_health", "--no-probe", "--json", "--hours", "0.5"))
    partners = json.loads(run("partner_health", "--json", "--minutes", "43200"))

    assert (health["window_minutes"], health["lapse_horizon_hours"]) == (43200, 720)
    assert short["lapse_horizon_hours"] == 0.5
    assert partners["window_minutes"] == 43200
    # the text says the horizon as a person would, not as a timedelta prints
    text = run("payment_health", "--no-probe", "--hours", "0.5")
    assert "holds lapsing within 30 minutes" in text and "0:30:00" not in text


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("partner_health", "at most 43200: 30 days"),
        ("payment_health", "at most 720: 30 days"),
        ("reconcile_payments", "from 1970-01-01 to today"),
    ],
)
def test_help_states_the_bounds(command, says):
    assert says in " ".join(help_of(command).split())


@pytest.mark.parametrize("interval", ["nan", "inf", "-inf", "-5", "0", "1e-09", "0.09", "2592001"])
def test_the_scheduler_refuses_an_interval_not_from_a_tenth_of_a_second_before_it_starts(capsys, interval):
    # nan and inf were a traceback, a negative or a tiny interval swept back to back under a lock
    # that expired at once, 0 meant the default without a word; each is refused before anything
    # runs (--once or not)
    command = load_command_class("reconciliation", "run_scheduler")

    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", "run_scheduler", f"--interval={interval}", "--once"])

    out, err = capsys.readouterr()
    assert (exited.value.code, out) == (1, "")
    bounds = "at least 0.1 and at most 2592000 (30 days)"
    assert err.strip() == f"CommandError: --interval must be {bounds}, not {float(interval)}."


@pytest.mark.parametrize("interval", [float("nan"), -5.0, 0.0, 0.01])
def test_the_scheduler_refuses_a_configured_interval_that_is_not_seconds_from_a_tenth(settings, interval):
    settings.RECONCILE_INTERVAL_S = interval

    with pytest.raises(CommandError, match=re.escape("RECONCILE_INTERVAL_S must be at least 0.1")):
        run("run_scheduler", "--once")


def test_the_scheduler_s_help_states_its_interval_s_bounds():
    assert "at least 0.1, at most 2592000: 30 days" in " ".join(help_of("run_scheduler").split())
