"""The WSGI entry point gunicorn serves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

from tests import production


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


def _server_entry_point(module: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    """Import a server's entry point in a fresh interpreter without DJANGO_SETTINGS_MODULE (nor an
    .env naming it), as a deploy that forgot the variable would; print the settings it runs."""
    environment = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
    (tmp_path / "empty.env").write_text("")
    environment["ENV_FILE"] = str(tmp_path / "empty.env")
    script = f"import {module}; from django.conf import settings as s; print(s.SETTINGS_MODULE, s.DEBUG)"
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi"])
def test_a_server_without_a_settings_module_runs_production(module, tmp_path):
    result = _server_entry_point(module, production.environment(), tmp_path)

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["config.settings.production", "False"]


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi"])
def test_a_server_without_a_settings_module_nor_production_settings_refuses_to_start(module, tmp_path):
    # Not DEBUG with the public development SECRET_KEY and an open /metrics: no start at all.
    unset = ("SECRET_KEY", *production.REQUIRED)
    result = _server_entry_point(module, {k: v for k, v in os.environ.items() if k not in unset}, tmp_path)

    assert result.returncode != 0, result.stdout
    assert "config.settings.production does not start on these values" in result.stderr
