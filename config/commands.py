"""Management commands that print JSON (`--json`): stdout is JSON whatever happens.

A script reads a command's `--json` output and its exit status; an error said only as text on
stderr leaves it nothing to parse. `JsonCommand` is the one place that keeps the promise: whatever
the command refuses with (an option it cannot read, a refusal, a failure: a `CommandError`, or an
`ApplicationError` a service raised, the database or our Redis not answering; a bug too, its
traceback still on stderr) is also written to stdout in the API's one error shape
(`config.errors.error_body`: `{"error": {"code": ..., "message": ...}}`), and the exit status
stays non-zero, with the same line on stderr as without `--json`: 75 (`OUTAGE_STATUS`) for an
outage, whatever the command, so that a cron job retries it rather than alerting. A command that
wrote its JSON report before failing (a batch with refusals, a settlement with mismatches) wrote it with
`write_json`, which carries its outcome: nothing is added after it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from config import database_errors
from config.errors import ApplicationError, error_body
from config.logging import one_line

# The code of a command's refusal that no service's ApplicationError names.
COMMAND_ERROR = "command_error"
# An option the command cannot take, as the API answers a field it refuses.
OPTION_REFUSED = "validation_error"
# A store the command needs is not answering, as the API answers its 503.
UNAVAILABLE = "service_unavailable"
# The exit status of a command an outage stopped (sysexits' EX_TEMPFAIL: try again later), so that
# a cron job tells it from what a command's 1 says (a refusal, reconcile_payments' mismatches).
OUTAGE_STATUS = 75


def _coded(message: str, code: str) -> CommandError:
    """A CommandError as any other (stderr says "CommandError: …"), coded for --json."""
    error = CommandError(message)
    error.code = code  # type: ignore[attr-defined]
    return error


def option_error(message: str) -> CommandError:
    """The refusal of an option the command cannot take (a day that is not one, a window out of
    bounds)."""
    return _coded(message, OPTION_REFUSED)


def unavailable(message: str) -> CommandError:
    """The refusal for a store the command found not answering before it began (a probe), as
    `unavailable_error` says one it ran into: a script tells an outage from a refusal by its code."""
    return _coded(message, UNAVAILABLE)


# What a command says of the database's refusal, by its cause (`database_errors.cause_of`), and
# when to try again: "not answering" is the outage; a lock or a timeout under load and a refused
# write are not.
_DATABASE_WORDS = {
    database_errors.BUSY: ("The database is busy (a lock or a timeout under load)", "Try again shortly."),
    database_errors.READ_ONLY: (
        "The database refuses writes (it is read-only)",
        "Try again once it takes writes.",
    ),
    database_errors.DISK_FULL: (
        "The database refuses writes (its disk is full)",
        "Try again once it takes writes.",
    ),
    database_errors.IO_ERROR: (
        "The database refuses writes (its storage is failing)",
        "Try again once it takes writes.",
    ),
}
_NOT_ANSWERING = "Try again once it answers."


def unavailable_error(exc: Exception) -> CommandError | None:
    """The refusal for an outage a command ran into (the database or our Redis not answering,
    busy, or refusing writes): one line saying which and why, where it was a traceback that named
    neither plainly. None for any other error, which stays the bug it is."""
    if isinstance(exc, DatabaseError) and database_errors.is_unavailable(exc):
        words, then = _DATABASE_WORDS.get(
            database_errors.cause_of(exc), ("The database is not answering", _NOT_ANSWERING)
        )
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError | redis.BusyLoadingError):
        words, then = "Our queue (Redis) is not answering", _NOT_ANSWERING
    elif isinstance(exc, redis.ReadOnlyError):  # a replica, or a primary a failover demoted
        words, then = (
            "Our queue (Redis) refuses writes (it is a read-only replica)",
            "Try again once it takes writes.",
        )
    else:
        return None
    return unavailable(f"{words} ({one_line(exc)}). {then}")


def command_error_body(exc: CommandError) -> dict[str, Any]:
    """The error's JSON: the code of the refusal (the service's, when one refused), its words."""
    cause = exc.__cause__
    if isinstance(cause, ApplicationError):
        return error_body(cause.code, str(exc), cause.fields)
    return error_body(getattr(exc, "code", COMMAND_ERROR), str(exc))


def _is_text(argument: str) -> bool:
    """Is a shell's argument text? Bytes that are not UTF-8 reach Python as lone surrogates, which
    nothing downstream can encode (the database's driver fails on them, a traceback)."""
    try:
        argument.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class JsonCommand(BaseCommand):
    """A command with `--json`: its errors are JSON on stdout too (module docstring)."""

    # The exit status of a command used wrongly: arguments the parser refuses and an option the
    # command refuses (`option_error`). None: argparse's 2 and CommandError's 1, as for any Django
    # command. A command whose statuses say more (reconcile_payments: 1 mismatches, 2 the provider
    # could not be read) gives its own, so that a cron job tells a typo from those.
    usage_status: int | None = None
    _json_written = False
    _json_in_argv = False

    def write_json(self, payload: Any) -> None:
        """The command's JSON output: once written, an error after it adds nothing to stdout."""
        self.stdout.write(json.dumps(payload, default=str, indent=2))
        self._json_written = True

    def execute(self, *args: Any, **options: Any) -> str | None:
        self._json_written = False
        try:
            try:
                return super().execute(*args, **options)
            except ApplicationError as exc:  # a service's refusal: a line, never a traceback
                raise CommandError(exc.message) from exc
            except (DatabaseError, redis.RedisError) as exc:  # an outage: a line too
                if (outage := unavailable_error(exc)) is None:
                    raise
                raise outage from exc
        except CommandError as exc:
            if self.usage_status is not None and getattr(exc, "code", None) == OPTION_REFUSED:
                exc.returncode = self.usage_status
            if getattr(exc, "code", None) == UNAVAILABLE:
                exc.returncode = OUTAGE_STATUS
            if options.get("json") and not self._json_written:
                self.write_json(command_error_body(exc))
            raise
        except Exception as exc:  # a bug: its traceback on stderr as ever, and JSON to parse on stdout
            if options.get("json") and not self._json_written:
                self.write_json(error_body(COMMAND_ERROR, one_line(exc)))
            raise

    def run_from_argv(self, argv: list[str]) -> None:
        # Arguments argparse refuses never reach `execute`: the parser says them (below).
        self._json_in_argv = "--json" in argv[2:]
        for argument in argv[2:]:
            if not _is_text(argument):  # refused as usage, as the parser refuses any other
                self._called_from_command_line = True  # as BaseCommand's: the parser exits, says usage
                self.create_parser(argv[0], argv[1]).error(f"argument {argument!r} is not UTF-8 text")
        super().run_from_argv(argv)

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        refuse = parser.error

        def error(message: str) -> None:
            if self._json_in_argv and parser.called_from_command_line:
                self.write_json(error_body(OPTION_REFUSED, message))
            if self.usage_status is not None and parser.called_from_command_line:
                parser.print_usage(sys.stderr)  # as argparse says it, with the command's own status
                parser.exit(self.usage_status, f"{parser.prog}: error: {message}\n")
            refuse(message)  # usage and the message on stderr, exit status 2

        parser.error = error  # type: ignore[method-assign]
        return parser
