import gc
import os

from django.core.wsgi import get_wsgi_application

from config import env_file

env_file.load()  # DJANGO_SETTINGS_MODULE, and REDIS_SOCKET_TIMEOUT_S below, may come from .env
# Unset, a server runs production's settings, which refuse to start on the development defaults:
# a deploy that forgets the variable must not serve DEBUG pages under the public dev SECRET_KEY.
# `make run` (config/devstack.py), the tests, the benchmarks and the chaos run name theirs.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
# A request process waits on Redis briefly: nothing it sends there may hold an answer
# (settings: REDIS_SOCKET_TIMEOUT_S).
os.environ.setdefault("REDIS_SOCKET_TIMEOUT_S", "1")
django_application = get_wsgi_application()

from config.request_bodies import RequestBodyMiddleware  # noqa: E402 - after the settings are named

# A chunked request body reaches Django with its length; one left unread is dropped before the
# connection closes, so the client reads the answer (config/request_bodies.py).
application = RequestBodyMiddleware(django_application)

# What start-up built (modules, URL patterns, model metadata) lives as long as the process. Moved
# out of the collector's generations, it is no longer scanned by every full collection, which
# otherwise cost a request tens of milliseconds now and then (the 1,000-row console timeline).
gc.collect()
gc.freeze()
