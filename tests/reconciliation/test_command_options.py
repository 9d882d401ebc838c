"""The ops commands' options: what an operator can mistype is refused with a clear CommandError
(never a traceback), and the refusal words the option as --help does."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError


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

    assert "invalid choice: 'bogus' (choose from 'confirmed', 'failed', 'cancelled')" in str(error.value)
    assert "{confirmed,failed,cancelled}" in help_of("resolve_booking")
