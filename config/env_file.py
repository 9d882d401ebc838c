"""The `.env` file, read into the process's environment before anything reads the environment.

Everything tunable comes from the environment or this file; a variable already in the
environment wins. The settings read it first (config/settings/base.py), and so do the entry
points that read a variable before Django's settings exist: gunicorn's configuration
(gunicorn.conf.py: LOG_FORMAT for its own lines, PROMETHEUS_MULTIPROC_DIR for its workers), the
events process (config/events.py: uvicorn's lines), manage.py and the WSGI and ASGI modules
(DJANGO_SETTINGS_MODULE) and `make run` (config/devstack.py). It imports nothing that needs
Django's settings: gunicorn's master runs it before any of the application is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
# Read as present or absent by a library, whatever their value: prometheus_client turns on its
# multiprocess mode when either is in the environment at all, and empty it writes each process's
# `<type>_<pid>.db` files into the working directory, never removed. Empty means unset, as the
# settings and config/metrics read it.
UNSET_WHEN_EMPTY = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def path() -> Path:
    """ENV_FILE (a file elsewhere, e.g. under /etc), or `.env` in the project's directory."""
    return Path(os.environ.get("ENV_FILE") or BASE_DIR / ".env")


def load() -> None:
    """Add the file's variables to os.environ, those not set already; no file, nothing to add.
    A file named by ENV_FILE must exist: a typo there would start the process on defaults. Those
    of UNSET_WHEN_EMPTY set empty (by the file or the environment) are removed."""
    file = path()
    if os.environ.get("ENV_FILE") and not file.is_file():
        raise FileNotFoundError(f"ENV_FILE names {file}, which is no file")
    if file.is_file():  # django-environ would log every process's start without one
        environ.Env.read_env(file, overwrite=False)
    for name in UNSET_WHEN_EMPTY:
        if name in os.environ and not os.environ[name].strip():
            del os.environ[name]
