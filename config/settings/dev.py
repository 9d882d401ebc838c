"""Local development: DEBUG on, an insecure key is acceptable."""

from .base import *  # noqa: F403
from .base import SECRET_KEY, env

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = SECRET_KEY or "dev-insecure-0b3c1f7e9a6d4c2b8e5f1a7d3c9b6e2f"
# /metrics without a token, for the developer.
METRICS_OPEN = env.bool("METRICS_OPEN", default=True)

env.check(__name__)
