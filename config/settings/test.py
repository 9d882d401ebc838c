"""Test settings: the same stack as production (a real database and Redis), plain static files.

Each test run gets its own test database, Redis namespace and (without REDIS_URL) its own
embedded Redis, keyed by TEST_RUN_ID (default: the process id), so that two runs on one
machine never wipe each other's data, nor two pytest-xdist workers of one run. Processes a test
starts inherit TEST_RUN_ID and REDIS_URL.
"""

import os

from config import embedded_redis

from .base import *  # noqa: F403
from .base import (
    CACHES,
    DATABASES,
    DRAMATIQ_BROKER,
    REDIS_SOCKET_TIMEOUT_S,
    REDIS_URL,
    STORAGES,
    VAR_DIR,
    env,
)

TEST_RUN_ID = os.environ.get("TEST_RUN_ID") or str(os.getpid())
# Under pytest-xdist each worker is a run of its own (its database, namespaces and, embedded, its
# Redis); the processes a worker starts inherit both variables and keep its id.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _XDIST_WORKER and not TEST_RUN_ID.endswith(f"-{_XDIST_WORKER}"):
    TEST_RUN_ID = f"{TEST_RUN_ID}-{_XDIST_WORKER}"

DEBUG = False
SECRET_KEY = "test-only-secret-key-not-for-production-3b7c9e1f5a2d4b6c8e0f1a3c5e7b9d1f"
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Rate limits out of the way, unless a test (or the process it starts) sets them.
API_THROTTLE_RATE = env.rate("API_THROTTLE_RATE", default="100000/min")
API_THROTTLE_ADDRESS_RATE = env.rate("API_THROTTLE_ADDRESS_RATE", default="100000/min")
PAGE_THROTTLE_RATE = env.rate("PAGE_THROTTLE_RATE", default="100000/min")
PAGE_THROTTLE_ADDRESS_RATE = env.rate("PAGE_THROTTLE_ADDRESS_RATE", default="100000/min")
ACCOUNT_THROTTLE_RATE = env.rate("ACCOUNT_THROTTLE_RATE", default="100000/min")
PASSWORD_RESET_EMAIL_RATE = env.rate("PASSWORD_RESET_EMAIL_RATE", default="100000/min")
WEBHOOK_REFUSED_PARTNER_RATE = env.rate("WEBHOOK_REFUSED_PARTNER_RATE", default="100000/min")
WEBHOOK_REFUSED_SOURCE_RATE = env.rate("WEBHOOK_REFUSED_SOURCE_RATE", default="100000/min")
WEBHOOK_DUPLICATE_PARTNER_RATE = env.rate("WEBHOOK_DUPLICATE_PARTNER_RATE", default="100000/min")

# Without REDIS_URL: an embedded server of this run's own (tests/conftest.py starts and stops it).
EMBEDDED_REDIS_DIR = None
if not env.str("REDIS_URL", default=""):
    EMBEDDED_REDIS_DIR = VAR_DIR / "test-runs" / TEST_RUN_ID
    REDIS_URL = embedded_redis.url(EMBEDDED_REDIS_DIR)
    DRAMATIQ_BROKER["OPTIONS"]["url"] = embedded_redis.with_socket_timeouts(REDIS_URL, REDIS_SOCKET_TIMEOUT_S)
    CACHES["default"]["LOCATION"] = embedded_redis.with_socket_timeouts(REDIS_URL, REDIS_SOCKET_TIMEOUT_S)
DRAMATIQ_BROKER["OPTIONS"]["namespace"] = f"dramatiq-test-{TEST_RUN_ID}"
CACHES["default"]["KEY_PREFIX"] = f"test-{TEST_RUN_ID}"
PARTNER_GUARD_NAMESPACE = f"partner-guard-test-{TEST_RUN_ID}"
LIVE_CHANNEL_PREFIX = f"bk-test-{TEST_RUN_ID}"
API_THROTTLE_REDIS_URL = env.str("API_THROTTLE_REDIS_URL", default="") or REDIS_URL
API_THROTTLE_NAMESPACE = env.str("API_THROTTLE_NAMESPACE", default=f"throttle-test-{TEST_RUN_ID}")

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file database: worker threads share it (an in-memory one gives "table is locked").
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{TEST_RUN_ID}.sqlite3")}
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{TEST_RUN_ID}"}

# WhiteNoise warns on every request while STATIC_ROOT is missing; tests never collect static.
STATIC_ROOT = VAR_DIR / "test-static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)

# Tests run Dramatiq workers inside the pytest process: it must not lower its own priority.
WORKER_NICE = 0

env.check(__name__)
