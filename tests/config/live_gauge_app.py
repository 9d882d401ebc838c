"""A WSGI application for gunicorn's `child_exit` test (tests/config/test_gunicorn.py): none of
the project's web figures is a live gauge, so this one raises one, as a message in progress raises
Dramatiq's, and counts its requests, in its worker's files of PROMETHEUS_MULTIPROC_DIR. It answers
its worker's pid."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Gauge

IN_PROGRESS = Gauge("test_requests_in_progress", "Requests begun.", multiprocess_mode="livesum")
REQUESTS = Counter("test_requests", "Requests answered.")


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    IN_PROGRESS.inc()  # never lowered: the worker dies "in" the request
    REQUESTS.inc()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
