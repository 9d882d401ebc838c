"""Shared parts of the ops commands: options, the operator, previews as rich tables, JSON."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from config.commands import (
    COMMAND_ERROR,
    JsonCommand,
    command_error_body,
    option_error,
    unavailable,
    unavailable_error,
)
from config.errors import ApplicationError, error_body
from config.logging import one_line
from reconciliation.services import support
from reconciliation.services.support.notes import NOTE_MAX_CHARS, note_problem


def add_operator_arguments(parser: CommandParser) -> None:
    parser.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="Act as this console user (their permissions are checked); default: ops:<os user>.",
    )
    parser.add_argument("--json", action="store_true", help="Print machine-readable JSON only.")


def operator_from(options: dict[str, Any]) -> support.Operator:
    """The operator: `--as USER` (refused when empty or blank, before any target: a script's
    unset variable is no user, and taken for none it would act as the trusted shell), else
    `ops:<os user>`."""
    as_user = options.get("as_user")
    if as_user is not None and not as_user.strip():
        raise option_error(
            f"--as {as_user!r} names no console user: name one, or leave --as out to act as ops:<os user>."
        )
    try:
        return support.Operator.shell(as_user)
    except ApplicationError as exc:
        raise CommandError(exc.message) from exc


def require(operator: support.Operator, permission: str) -> None:
    """Refuses, before any target, an operator without the command's permission: the service's
    own denial (`permission_denied` in --json, as a target's denial is), exit status 1."""
    try:
        operator.require(permission)
    except ApplicationError as exc:
        raise CommandError(exc.message) from exc


def token_from(options: dict[str, Any]) -> str:
    """The run's action token: `--token` as the services take it (refused when empty, blank or
    too long, before any target: "" is no token to repeat a run by), else a new one."""
    if options.get("token") is None:
        return support.new_token()
    try:
        return support.clean_token(options["token"])
    except ApplicationError as exc:
        raise CommandError(exc.message) from exc


# The longest window or horizon the health commands look over: a month answers any question about
# "lately", and a bound keeps a mistyped number a clear refusal rather than a datetime overflow.
MOST_DAYS = 30


def most_of(unit: timedelta) -> int:
    """The longest window, counted in `unit` (43200 minutes, 720 hours), for --help and refusals."""
    return int(timedelta(days=MOST_DAYS) / unit)


def window_help(unit: timedelta) -> str:
    """The bound as --help says it: "at most 43200: 30 days"."""
    return f"at most {most_of(unit)}: {MOST_DAYS} days"


def window_option(option: str, value: float, unit: timedelta, *, least: float = 0.0) -> timedelta:
    """`value` units as a timedelta, refused (CommandError naming the option and its bounds) unless
    a finite number above 0 (at least `least`, when given) and at most MOST_DAYS days: nan, inf, 0
    and negatives never mean a window."""
    most = most_of(unit)
    if not (math.isfinite(value) and 0 < value <= most and value >= least):
        lower = f"at least {least:g}" if least > 0 else "more than 0"
        raise option_error(f"{option} must be {lower} and at most {most} ({MOST_DAYS} days), not {value}.")
    return value * unit


def _console(file: Any) -> Console:
    """A console that prints text as it is: what the commands print is mostly stored text (a
    partner's reference, a note, a message), where rich's markup would read `[hold]` as a style
    and `[/]` as an error, and its emoji codes `:x:` as a picture. Our own styling is a `style`
    or a `Text`, never markup in a string."""
    return Console(file=file, highlight=False, markup=False, emoji=False, width=160)


def console_for(command: BaseCommand) -> Console:
    return _console(command.stdout)


def err_console(command: BaseCommand) -> Console:
    return _console(command.stderr)


def mismatch_marked(text: str, mismatch: bool) -> Text:
    """A partner's side of a row, marked ≠ when it differs from ours."""
    return Text.assemble(text, (" ≠", "bold red") if mismatch else "")


def not_possible(refusal: str) -> Text:
    return Text.assemble(("Not possible now:", "bold red"), f" {refusal}")


def dump(command: JsonCommand, payload: Any) -> None:
    """The command's --json output (an error after it adds nothing: `JsonCommand`)."""
    command.write_json(payload)


@contextmanager
def progress_over(command: BaseCommand, items: list[Any], label: str) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr when there is more than one item (stdout stays clean for --json)."""
    if len(items) <= 1:
        yield lambda: None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console(command),
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=len(items))
        yield lambda: progress.advance(task)


def preview_table(shown: support.Preview) -> Table:
    booking = shown.booking
    table = Table(title=f"{shown.title}: {booking.reference}", show_lines=False)
    table.add_column("")
    table.add_column("ours")
    table.add_column(f"{booking.partner.code} ({'live' if shown.partner.live else 'last known'})")
    table.add_row("booking", f"{booking.status} (customer sees {booking.customer_status})", "")
    if booking.attention_reason:
        table.add_row("attention", booking.attention_reason, "")
    if shown.fenced:
        table.add_row("fence", "an earlier create's outcome is unknown", "")
    for pair in shown.pairs:
        version = f" v{pair.version_ours}" if pair.version_ours is not None else ""
        theirs_version = f" v{pair.version_theirs}" if pair.version_theirs is not None else ""
        table.add_row(
            pair.partner_ref,
            (pair.ours + version) if pair.ours else "(unknown to us)",
            mismatch_marked((pair.theirs + theirs_version) if pair.theirs else "(not listed)", pair.mismatch),
        )
    if not shown.pairs:
        table.add_row("reservations", "none", "none")
    if shown.partner.note:
        table.caption = shown.partner.note
    return table


def print_preview(console: Console, shown: support.Preview) -> None:
    console.print(preview_table(shown))
    if shown.allowed:
        for effect in shown.effects:
            console.print(f"  • {effect}")
        for value, label, why_not in shown.outcomes:
            console.print(f"  {value} ({label}): {why_not or 'possible'}")
    else:
        console.print(not_possible(shown.refusal))


NOT_CONFIRMED = "Not confirmed; nothing was done."
# The exit status of a command interrupted at its question (Ctrl-C), as `chaos` and shells say it.
INTERRUPTED = 130


def confirm(command: BaseCommand, question: str, options: dict[str, Any]) -> None:
    """Ask `question` on the operator's terminal (on stderr: stdout is the report, JSON with
    --json); anything but yes, Ctrl-D (no answer) or Ctrl-C does nothing, said in one line."""
    if options.get("yes"):
        return
    if not sys.stdin.isatty():
        raise CommandError(f"{question} Not confirmed: review the preview (--dry-run), then pass --yes.")
    plain = str  # not in stderr's error style: a question, not an error
    command.stderr.write(f"{question} [y/N] ", style_func=plain, ending="")
    command.stderr.flush()
    try:
        answer = input().strip().lower()
    except EOFError:
        command.stderr.write("", style_func=plain)  # the terminal's line ends before the refusal's
        raise CommandError(NOT_CONFIRMED) from None
    except KeyboardInterrupt:
        command.stderr.write("", style_func=plain)
        raise CommandError(NOT_CONFIRMED, returncode=INTERRUPTED) from None
    if answer not in ("y", "yes"):
        raise CommandError(NOT_CONFIRMED)


class ActionCommand(JsonCommand):
    """The shape every support action command shares: preview each target (our state beside the
    partner's), stop there on --dry-run, ask to confirm an action that changes the partner's
    state or settles an outcome, then run the action on each target once per token (one token for
    the run: its ask names every target, `key`).

    Exit status: 0 when every target was done (on --dry-run: when its preview allows every one),
    1 when any was refused (by its preview on --dry-run, by the action otherwise), after doing the
    others; --json carries each refusal either way (a preview's `refusal`, a result's `error`)."""

    action: str = ""
    confirm_question: str = ""  # what the action does, asked before it acts (the console's confirm)
    required_to_act: tuple[str, ...] = ()  # options a run needs and a dry run does not

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--note", default="", help=f"Why; it goes on the timeline (at most {NOTE_MAX_CHARS} characters)."
        )
        parser.add_argument(
            "--token",
            help="Action token: a repeated run with the same token does nothing extra (default: a new one).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only show what it would do (asks the partner); exits non-zero when it would be refused.",
        )
        parser.add_argument(
            "--no-live", action="store_true", help="Do not ask the partner; last known state."
        )
        if self.confirm_question:
            parser.add_argument("--yes", action="store_true", help="Do not ask for confirmation.")
        add_operator_arguments(parser)

    # --- what each kind of target supplies ---
    def permission(self) -> str | None:
        """The permission checked before any target; None when it depends on the target (the
        preview and the action check it on each)."""
        raise NotImplementedError

    def targets(self, options: dict[str, Any]) -> list[Any]:
        raise NotImplementedError

    def preview(self, target: Any, operator: support.Operator, options: dict[str, Any]) -> Any:
        raise NotImplementedError

    def print_preview(self, console: Console, shown: Any) -> None:
        raise NotImplementedError

    def perform(
        self, shown: Any, operator: support.Operator, token: str, options: dict[str, Any], batch: list[str]
    ) -> Any:
        raise NotImplementedError

    def key(self, shown: Any) -> str:
        """The target as the token's ask names it (`support.target_key`)."""
        raise NotImplementedError

    def question(self, allowed: list[Any]) -> str:
        """What is asked before acting on the targets the previews allow."""
        return self.confirm_question

    def label(self, shown: Any) -> str:
        raise NotImplementedError

    def handle(self, *args, **options) -> None:
        if problem := note_problem(options["note"] or ""):
            raise option_error(problem)
        missing = [f"--{name}" for name in self.required_to_act if not options[name]]
        if missing and not options["dry_run"]:
            raise option_error(f"{self.action} needs {' and '.join(missing)} (--dry-run shows the choices).")
        token = token_from(options)
        operator = operator_from(options)
        if (permission := self.permission()) is not None:
            require(operator, permission)
        try:
            targets = self.targets(options)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        console = console_for(self)
        previews = []
        with progress_over(self, targets, "previewing") as step:
            for target in targets:
                try:
                    previews.append(self.preview(target, operator, options))
                except ApplicationError as exc:
                    raise CommandError(exc.message) from exc
                step()
        if not options["json"]:
            for shown in previews:
                self.print_preview(console, shown)
        if options["dry_run"]:
            if options["json"]:
                dump(self, {"dry_run": True, "previews": [p.as_dict() for p in previews]})
            # As the run would exit: a script checking first with --dry-run reads the same answer.
            refused = sum(not p.allowed for p in previews)
            if refused and refused == len(previews):
                raise CommandError(
                    f"{self.action}: nothing would be done ({refused} refused); a dry run does nothing."
                )
            if refused:
                raise CommandError(
                    f"{self.action}: {refused} of {len(previews)} would be refused, the others possible; "
                    "a dry run does nothing."
                )
            return
        if self.confirm_question and any(p.allowed for p in previews):
            confirm(self, self.question([p for p in previews if p.allowed]), options)
        batch = [self.key(shown) for shown in previews]
        results: list[dict[str, Any]] = []
        failures = 0
        with progress_over(self, previews, self.action) as step:
            for number, shown in enumerate(previews):
                try:
                    result = self.perform(shown, operator, token, options, batch)
                except ApplicationError as exc:  # a target's own denial too: the run goes on
                    failures += 1
                    results.append(
                        {"preview": shown.as_dict(), "error": {"code": exc.code, "message": exc.message}}
                    )
                    if not options["json"]:
                        console.print(f"{self.label(shown)}: {exc.message}", style="red")
                except Exception as exc:  # an outage, or a bug: the run stops here
                    left = len(previews) - number - 1
                    outage = self.stopped(
                        exc, shown, left=left, token=token, results=results, json=options["json"]
                    )
                    if outage is None:
                        raise  # a bug, as it is
                    raise outage from exc
                else:
                    results.append({"preview": shown.as_dict(), "result": result.as_dict()})
                    if not options["json"]:
                        style = "green" if result.performed else "yellow"
                        moved = (
                            f" ({result.from_state} → {result.to_state})"
                            if result.from_state != result.to_state
                            else ""
                        )
                        console.print(f"{self.label(shown)}{moved}: {result.message}", style=style)
                step()
        if options["json"]:
            dump(self, {"token": token, "results": results})
        if failures and failures == len(previews):
            raise CommandError(f"{self.action}: nothing was done ({failures} refused).")
        if failures:  # a cron job must see it: the exit status, not only the lines or the JSON
            raise CommandError(f"{self.action}: {failures} of {len(previews)} refused, the others done.")

    def stopped(
        self,
        exc: Exception,
        shown: Any,
        *,
        left: int,
        token: str,
        results: list[dict[str, Any]],
        json: bool,
    ) -> CommandError | None:
        """What ends a run that `exc` stopped at `shown` (`run_stopped`)."""
        return run_stopped(
            self, exc, self.label(shown), left=left, report={"token": token, "results": results}, json=json
        )


def run_stopped(
    command: JsonCommand,
    exc: Exception,
    label: str,
    *,
    left: int,
    report: dict[str, Any],
    json: bool,
    recorded: str = "its timeline says what was recorded",
) -> CommandError | None:
    """What ends a run that `exc` stopped at the target `label` (`left` targets after it not
    tried), keeping what it did before: in --json, its `report` (the run's token, its results so
    far) beside the error. An outage (the database or our Redis not answering) is said in a line,
    `service_unavailable`, with the token to run it again by (what it did is not done twice);
    None for anything else, a bug, raised as it is after its JSON."""
    where = f"{label}: the run stopped here" + (f", {left} after it not tried" if left else "")
    where += f" ({recorded})"
    outage = unavailable_error(exc)
    error = None
    if outage is not None:
        again = f"Run the same command again with --token {report['token']}: what it did is not done twice."
        error = unavailable(f"{where}: {outage} {again}")
    if json:
        said = (
            command_error_body(error)
            if error is not None
            else error_body(COMMAND_ERROR, f"{where}: {one_line(exc)}")
        )
        dump(command, {**report, **said})
    return error


class BookingActionCommand(ActionCommand):
    """`<action>_booking REF [REF ...]`: preview each booking, then run the support action."""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "references", nargs="+", metavar="REF", help="Booking reference(s), e.g. BK-7F3K2Q."
        )
        super().add_arguments(parser)

    def permission(self) -> str:
        return support.ACTIONS[self.action]["permission"]

    def targets(self, options: dict[str, Any]) -> list[Any]:
        return [support.booking_by_reference(reference) for reference in options["references"]]

    def preview(self, target: Any, operator: support.Operator, options: dict[str, Any]) -> support.Preview:
        return support.preview(self.action, target, live=not options["no_live"])

    def print_preview(self, console: Console, shown: support.Preview) -> None:
        print_preview(console, shown)

    def perform(
        self,
        shown: support.Preview,
        operator: support.Operator,
        token: str,
        options: dict[str, Any],
        batch: list[str],
    ):
        return self.run_action(shown.booking, operator, token, options, batch=batch)

    def run_action(
        self, booking, operator: support.Operator, token: str, options: dict[str, Any], *, batch: list[str]
    ):
        return support.support_action_run(
            self.action,
            booking_id=booking.pk,
            operator=operator,
            token=token,
            note=options["note"],
            batch=batch,
        )

    def key(self, shown: support.Preview) -> str:
        return support.target_key(shown.booking)

    def label(self, shown: support.Preview) -> str:
        return shown.booking.reference


def orphan_preview_table(shown: support.OrphanPreview) -> Table:
    case, reservation = shown.case, shown.reservation
    table = Table(title=f"{shown.title}: orphan case #{case.pk}", show_lines=False)
    table.add_column("")
    table.add_column("ours")
    table.add_column(f"{reservation.partner.code} ({'live' if shown.partner.live else 'last known'})")
    table.add_row("case", f"{case.state}, {case.get_automation_display().lower()}", "")
    table.add_row("client reference", reservation.client_reference or "(none)", "")
    for pair in shown.pairs:
        version = f" v{pair.version_ours}" if pair.version_ours is not None else ""
        theirs_version = f" v{pair.version_theirs}" if pair.version_theirs is not None else ""
        table.add_row(
            pair.partner_ref,
            (pair.ours + version) if pair.ours else "(unknown to us)",
            mismatch_marked((pair.theirs + theirs_version) if pair.theirs else "(not listed)", pair.mismatch),
        )
    if shown.booking is not None:
        live = ", ".join(shown.booking_live) or "nothing"
        table.add_row("booking", f"{shown.booking.reference} {shown.booking.status}, holds {live} live", "")
    if shown.partner.note:
        table.caption = shown.partner.note
    return table


class OrphanActionCommand(ActionCommand):
    """`orphan_<action> CASE [CASE ...]`: preview each orphan case, then run the action on it."""

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "cases", nargs="+", metavar="CASE", help="Orphan case number(s), as `orphans` lists them."
        )
        super().add_arguments(parser)

    def permission(self) -> str:
        return support.ORPHAN_ACTIONS[self.action]["permission"]

    def targets(self, options: dict[str, Any]) -> list[Any]:
        return [support.orphan_case_by_id(case) for case in options["cases"]]

    def preview(
        self, target: Any, operator: support.Operator, options: dict[str, Any]
    ) -> support.OrphanPreview:
        return support.orphan_preview(
            self.action,
            target,
            operator=operator,
            booking_reference=options.get("booking") or "",
            note=options["note"] or "",
            live=not options["no_live"],
        )

    def print_preview(self, console: Console, shown: support.OrphanPreview) -> None:
        console.print(orphan_preview_table(shown))
        if shown.allowed:
            for effect in shown.effects:
                console.print(f"  • {effect}")
        else:
            console.print(not_possible(shown.refusal))

    def perform(
        self,
        shown: support.OrphanPreview,
        operator: support.Operator,
        token: str,
        options: dict[str, Any],
        batch: list[str],
    ):
        return support.support_orphan_action_run(
            self.action,
            case_id=shown.case.pk,
            operator=operator,
            token=token,
            note=options["note"],
            booking_reference=shown.booking.reference if shown.booking else "",
            expected_live=shown.booking_live,
            batch=batch,
        )

    def key(self, shown: support.OrphanPreview) -> str:
        return support.target_key(shown.case)

    def label(self, shown: support.OrphanPreview) -> str:
        return f"orphan case #{shown.case.pk} ({shown.reservation.partner_ref})"


def rows_table(title: str, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    return table
