"""The bounds on a support note (its length, its characters), one rule for the console's forms and
the commands' `--note`.

A note says why an operator acted; it goes on the booking's timeline, the orphan case's history or
a refund proposal, and is shown on every console page that lists them. Unbounded, one paste of a
log could store 100,000 characters there; the actions' data kept only the first 2,000 anyway
(`once.correction_data`).
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

NOTE_MAX_CHARS = 2000
# Control characters but a line's end and a tab: typed by no one, they hide text from whoever
# reads the note later (an escape sequence repaints a terminal reading a command's output).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def note_problem(note: str) -> str:
    """Why the note cannot be taken ('' when it can)."""
    if len(note) > NOTE_MAX_CHARS:
        return (
            f"A note may be at most {NOTE_MAX_CHARS:,} characters; this one has {len(note):,}. "
            "Say why in short; link to anything longer."
        )
    if control := _CONTROL.search(note):
        return f"A note holds text, lines and tabs: not control characters such as {control.group()!r}."
    return ""


def validate_note(note: str) -> None:
    """The forms' validator."""
    if problem := note_problem(note):
        raise ValidationError(problem, code="note_refused")
