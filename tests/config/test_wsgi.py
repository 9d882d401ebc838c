"""The WSGI entry point gunicorn serves."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings


def test_the_wsgi_application_loads_and_freezes_start_up_objects_out_of_the_collector():
    # In a fresh interpreter, as gunicorn loads it in each worker.
    script = (
        "import gc, config.wsgi as w; "
        "assert callable(w.application); "
        "assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr[-2000:]
