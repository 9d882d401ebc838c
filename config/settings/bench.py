"""Benchmark settings (`python -m bench`): the production stack plus the baseline endpoint.

Only the benchmark runner uses this module: the baseline app and its route never reach the
production URLs (`config.urls`). Database and Redis come from the environment, as everywhere.
"""

from .base import *  # noqa: F403
from .base import ALLOWED_HOSTS, API_THROTTLE_PATHS, INSTALLED_APPS, env

DEBUG = False
SECRET_KEY = "bench-only-secret-key-never-used-in-production-7d1e4c9a2b5f8e3d6c0a9b4f1e7d2c5a"
INSTALLED_APPS = [*INSTALLED_APPS, "bench.baseline"]
ROOT_URLCONF = "config.urls_bench"
# The admin page timing uses Django's test Client, which sends `Host: testserver`.
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]
# The baseline pays for the rate limit as the API does; one address sends the whole load.
API_THROTTLE_PATHS = (*API_THROTTLE_PATHS, "/bench/")
API_THROTTLE_ADDRESS_RATE = "100000000/min"

env.check(__name__)
