"""Whether a process with a metrics file's pid still runs (the files name their process's pid)."""

from __future__ import annotations

import os


def running(pid: int) -> bool:
    """A process with this pid exists: a zombie too, until its parent reaps it (gunicorn's master
    at once, Dramatiq's main process within a second), and a process the pid went to since (its
    files then wait for that one's end)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
