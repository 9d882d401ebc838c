"""A process under `config.settings.production` in a test: the environment production requires
(it refuses the development defaults, config/settings/production.py), with stand-ins where the
test's own servers are not wanted. The database and Redis are this run's when it has them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What production refuses to start without, beside SECRET_KEY; a test drops one to see it refused.
REQUIRED = {
    # Unreachable stand-ins (port 1 refuses at once), for a run on the embedded defaults.
    "DATABASE_URL": "postgres://bookings@127.0.0.1:1/bookings",
    "REDIS_URL": "redis://127.0.0.1:1/0",
    "STRIPE_API_KEY": "sk_test_stand_in_for_a_real_key",
    "STRIPE_WEBHOOK_SECRET": "whsec_stand_in_for_a_real_secret",
    "SITE_URL": "https://bookings.example.com",
}


def environment(**overrides: str) -> dict[str, str]:
    """os.environ under the production settings, everything they require set: the run's own
    PostgreSQL and Redis when it has them, stand-ins for the rest."""
    environ = {
        **os.environ,
        **REQUIRED,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
    }
    if os.environ.get("DATABASE_URL", "").startswith("postgres"):
        environ["DATABASE_URL"] = os.environ["DATABASE_URL"]
    if os.environ.get("REDIS_URL"):
        environ["REDIS_URL"] = os.environ["REDIS_URL"]
    return {**environ, **overrides}


def start_django(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a new process after `django.setup()` with `env` (its settings module
    included): how a test sees settings start, or refuse to."""
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
