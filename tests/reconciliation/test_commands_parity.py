"""Ops parity: every support action that changes the partner's state or settles an outcome is a
command with the console's preview (`--dry-run`), its permission check (`--as USER`), its
confirmation (asked on a terminal, `--yes` otherwise) and its correction on the timeline."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.db import connections

from bookings.models import Booking
from bookings.states import BookingState
from reconciliation.services import support
from tests.factories import PartnerReservationFactory
from tests.reconciliation.conftest import calls

S = BookingState
pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Case:
    command: str
    permission: str
    before: str
    after: str
    kind: str
    title: str
    effect: str  # a line of the preview's effects
    reservation: str | None = None  # the partner's reservation for the booking, by status
    args: list[str] = field(default_factory=list)  # what acting needs beyond --yes
    queued: Callable[[Booking], list[tuple[str, list]]] = lambda booking: []


CASES = [
    Case(
        command="cancel_booking",
        permission="bookings.cancel_booking_support",
        before=S.CONFIRMED,
        after=S.CANCEL_REQUESTED,
        kind="support.cancel_requested",
        title="Cancel on the customer's behalf",
        effect="confirmed → cancel_requested",
        reservation="confirmed",
        queued=lambda booking: [("cancel_booking", [str(booking.pk)])],
    ),
    Case(
        command="resolve_booking",
        permission="bookings.resolve_booking",
        before=S.NEEDS_ATTENTION,
        after=S.FAILED,
        kind="support.resolved",
        title="Mark resolved",
        effect="needs_attention → the outcome you choose",
        args=["--outcome", "failed", "--note", "the partner confirmed on the phone it holds nothing"],
    ),
    Case(
        command="compensate_booking",
        permission="bookings.compensate_booking",
        before=S.PENDING_PARTNER,
        after=S.FAILED,
        kind="support.compensated",
        title="Compensate",
        effect="pending_partner → failed",
        reservation="pending",
        queued=lambda booking: [("compensate_reservation", [booking.partner_reservations.get().pk])],
    ),
]
BY_COMMAND = pytest.mark.parametrize("case", CASES, ids=[case.command for case in CASES])


class Terminal(io.StringIO):
    """Standard input as an operator's terminal, with their answer typed in."""

    def isatty(self) -> bool:
        return True


def run(*args: str, capture=None) -> str:
    out = io.StringIO()
    if capture is None:
        call_command(*args, stdout=out, stderr=io.StringIO())
    else:
        with capture(execute=True):
            call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def booking_for(make_booking) -> Callable[[Case], Booking]:
    def make(case: Case) -> Booking:
        booking = make_booking(status=case.before, attention_reason="partner_unreachable")
        if case.reservation:
            PartnerReservationFactory(booking=booking, status=case.reservation)
        return booking

    return make


def assert_unchanged(booking: Booking, before: str, broker, queue: str) -> None:
    booking.refresh_from_db()
    assert booking.status == before
    assert not booking.events.exists()
    assert calls(broker, queue) == []


@pytest.mark.parametrize("action", list(support.ACTIONS))
def test_every_support_action_of_the_console_has_a_command(action):
    name = f"{action}_booking"

    text = load_command_class("reconciliation", name).create_parser("manage.py", name).format_help()

    assert all(option in text for option in ("--dry-run", "--as USER", "--token", "--note", "--json"))


@BY_COMMAND
def test_dry_run_shows_the_preview_and_changes_nothing(case, booking_for, partner_queue, broker):
    booking = booking_for(case)

    text = run(case.command, booking.reference, "--dry-run", "--no-live")
    data = json.loads(run(case.command, booking.reference, "--dry-run", "--no-live", "--json"))

    assert f"{case.title}" in text and booking.reference in text and case.effect in text
    [preview] = data["previews"]
    assert data["dry_run"] is True and preview["allowed"] is True and preview["booking"] == booking.reference
    assert_unchanged(booking, case.before, broker, partner_queue)


def test_resolve_dry_run_shows_which_outcomes_are_possible(booking_for, partner_queue, broker):
    booking = booking_for(CASES[1])

    text = run("resolve_booking", booking.reference, "--dry-run", "--no-live")

    assert "failed (Failed): possible" in text
    assert "confirmed (Confirmed): We hold no confirmed reservation from the partner" in text
    # the outcome asked for decides the exit status, as it would for the run
    run("resolve_booking", booking.reference, "--outcome", "failed", "--dry-run", "--no-live")
    with pytest.raises(CommandError, match="resolve: nothing would be done"):
        run("resolve_booking", booking.reference, "--outcome", "confirmed", "--dry-run", "--no-live")
    assert_unchanged(booking, S.NEEDS_ATTENTION, broker, partner_queue)


@BY_COMMAND
def test_a_console_user_without_the_permission_is_refused(
    case, booking_for, support_user, partner_queue, broker
):
    booking = booking_for(case)

    with pytest.raises(CommandError, match=f"{support_user.username} lacks the permission {case.permission}"):
        run(case.command, booking.reference, *case.args, "--yes", "--as", support_user.username)

    assert_unchanged(booking, case.before, broker, partner_queue)


@BY_COMMAND
def test_without_yes_and_no_terminal_it_refuses(case, booking_for, ops_user, partner_queue, broker):
    booking = booking_for(case)

    with pytest.raises(CommandError, match="Not confirmed: review the preview"):
        run(case.command, booking.reference, *case.args, "--no-live", "--as", ops_user.username)

    assert_unchanged(booking, case.before, broker, partner_queue)


@BY_COMMAND
def test_on_a_terminal_it_asks_and_a_no_does_nothing(
    case, booking_for, ops_user, partner_queue, broker, monkeypatch
):
    booking = booking_for(case)
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))

    out, err = io.StringIO(), io.StringIO()

    with pytest.raises(CommandError, match="Not confirmed; nothing was done"):
        call_command(
            case.command,
            booking.reference,
            *case.args,
            "--no-live",
            "--as",
            ops_user.username,
            stdout=out,
            stderr=err,
        )

    assert "[y/N]" in err.getvalue() and "[y/N]" not in out.getvalue()  # stdout is the report's
    assert_unchanged(booking, case.before, broker, partner_queue)


@BY_COMMAND
@pytest.mark.parametrize(
    ("key", "status"),
    [pytest.param(EOFError, 1, id="ctrl-d"), pytest.param(KeyboardInterrupt, 130, id="ctrl-c")],
)
def test_on_a_terminal_ctrl_d_or_ctrl_c_at_the_question_does_nothing_in_one_line(
    case, booking_for, ops_user, partner_queue, broker, monkeypatch, capsys, key, status
):
    booking = booking_for(case)
    monkeypatch.setattr("sys.stdin", Terminal(""))

    def pressed(*args: object) -> str:
        raise key

    monkeypatch.setattr("builtins.input", pressed)
    monkeypatch.setattr(connections, "close_all", lambda: None)  # run_from_argv's, the test's connection
    command = load_command_class("reconciliation", case.command)
    argv = ["manage.py", case.command, booking.reference, *case.args, "--no-live", "--as", ops_user.username]

    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(argv)

    out, err = capsys.readouterr()
    assert exited.value.code == status  # 130 for Ctrl-C, as `chaos` and shells say an interrupt
    assert err.endswith("[y/N] \nCommandError: Not confirmed; nothing was done.\n")  # no traceback
    assert "[y/N]" not in out  # the question is on stderr: stdout is the report's
    assert_unchanged(booking, case.before, broker, partner_queue)


@BY_COMMAND
def test_with_json_on_a_terminal_stdout_holds_only_the_json(
    case, booking_for, ops_user, partner_queue, broker, monkeypatch, capsys
):
    booking = booking_for(case)
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))

    with pytest.raises(CommandError, match="Not confirmed; nothing was done"):
        call_command(
            case.command, booking.reference, *case.args, "--no-live", "--json", "--as", ops_user.username
        )

    out, err = capsys.readouterr()
    assert json.loads(out)["error"]["message"] == "Not confirmed; nothing was done."
    assert "[y/N]" in err
    assert_unchanged(booking, case.before, broker, partner_queue)


@BY_COMMAND
def test_on_a_terminal_a_yes_acts(
    case, booking_for, ops_user, partner_queue, broker, monkeypatch, django_capture_on_commit_callbacks
):
    booking = booking_for(case)
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))

    run(
        case.command,
        booking.reference,
        *case.args,
        "--no-live",
        "--as",
        ops_user.username,
        capture=django_capture_on_commit_callbacks,
    )

    booking.refresh_from_db()
    assert booking.status == case.after


@BY_COMMAND
def test_with_yes_it_acts_and_the_timeline_has_the_correction(
    case, booking_for, ops_user, partner_queue, broker, django_capture_on_commit_callbacks, typed_by
):
    typed_by("olga")
    booking = booking_for(case)

    data = json.loads(
        run(
            case.command,
            booking.reference,
            *case.args,
            "--yes",
            "--json",
            "--no-live",
            "--token",
            "ops-parity-1",
            "--as",
            ops_user.username,
            capture=django_capture_on_commit_callbacks,
        )
    )

    booking.refresh_from_db()
    assert booking.status == case.after
    [result] = data["results"]
    assert result["result"]["performed"] is True and result["result"]["to_state"] == case.after
    row = booking.events.get(kind=case.kind)
    assert (row.actor, row.actor_label) == ("support", f"ops:olga as {ops_user.username}")
    assert (row.from_state, row.to_state) == (case.before, case.after)
    assert row.data["action_token"] == "ops-parity-1"
    assert calls(broker, partner_queue) == case.queued(booking)


def test_resolve_needs_an_outcome_and_a_note_to_act(booking_for, ops_user, partner_queue, broker):
    booking = booking_for(CASES[1])

    with pytest.raises(CommandError, match="resolve needs --outcome and --note"):
        run("resolve_booking", booking.reference, "--yes", "--as", ops_user.username)
    with pytest.raises(CommandError, match="resolve needs --note"):
        run("resolve_booking", booking.reference, "--outcome", "failed", "--yes", "--as", ops_user.username)

    assert_unchanged(booking, S.NEEDS_ATTENTION, broker, partner_queue)


def test_a_note_over_2000_characters_is_refused_before_anything_is_asked(
    booking_for, ops_user, partner_queue, broker
):
    booking = booking_for(CASES[1])
    action = ("--outcome", "failed", "--yes", "--as", ops_user.username)

    with pytest.raises(CommandError, match="at most 2,000 characters; this one has 2,001"):
        run("resolve_booking", booking.reference, *action, "--note", "x" * 2001)
    with pytest.raises(CommandError, match="at most 2,000 characters; this one has 100,000"):
        call_command("resolve_booking", booking.reference, *action, note="x" * 100_000, stdout=io.StringIO())

    assert_unchanged(booking, S.NEEDS_ATTENTION, broker, partner_queue)


def test_a_note_with_control_characters_is_refused_before_anything_is_asked(
    booking_for, ops_user, partner_queue, broker
):
    booking = booking_for(CASES[1])
    action = ("--outcome", "failed", "--yes", "--as", ops_user.username)

    with pytest.raises(CommandError, match=re.escape("not control characters such as '\\x1b'")):
        run("resolve_booking", booking.reference, *action, "--note", "partner \x1b[2Jcalled")

    assert_unchanged(booking, S.NEEDS_ATTENTION, broker, partner_queue)


def test_resolve_refuses_an_outcome_the_partner_contradicts(booking_for, ops_user, partner_queue, broker):
    booking = booking_for(CASES[1])
    PartnerReservationFactory(booking=booking, status="confirmed")

    with pytest.raises(CommandError, match="nothing was done"):
        run(
            "resolve_booking",
            booking.reference,
            "--outcome",
            "failed",
            "--note",
            "wrong",
            "--yes",
            "--as",
            ops_user.username,
        )

    booking.refresh_from_db()
    assert booking.status == S.NEEDS_ATTENTION
    assert not booking.events.filter(kind="support.resolved").exists()
