"""Production: refuses to start on a development default that is insecure or wrong as soon as
there are two machines (the secret key, the database, Redis, the payment provider's secrets, the
site's address), naming every one at once with what to set, with any malformed value
(config/env_values.py); HTTPS only, behind a TLS-terminating proxy that sets X-Forwarded-Proto.
`manage.py check --deploy` passes clean, but for the softer defaults it warns of (config/checks.py:
the payment provider's address, mail)."""

from urllib.parse import urlsplit

from config import embedded_redis
from config.checks import is_loopback_host
from config.metrics import exposition

from .base import *  # noqa: F403
from .base import (
    DATABASES,
    METRICS_TOKEN,
    PROMETHEUS_MULTIPROC_DIR,
    REDIS_URL,
    SANDBOX_STRIPE_API_KEY,
    SANDBOX_STRIPE_WEBHOOK_SECRET,
    SECRET_KEY,
    SITE_URL,
    STRIPE_API_KEY,
    STRIPE_WEBHOOK_SECRET,
    VAR_DIR,
    WORKER_METRICS_HOST,
    WORKER_METRICS_PORT,
    WORKER_METRICS_TOKEN,
    env,
)

DEBUG = False


def _refusals() -> list[str]:
    """What this process will not run on, each with what to set instead. A SQLite file or the
    embedded Redis makes each machine a system of its own, every one healthy by its own account;
    the sandbox's payment secrets are in the repository, so anyone could sign a payment webhook."""
    refused = []
    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith(("dev-", "django-insecure")) or len(set(SECRET_KEY)) < 5:
        refused.append(
            "SECRET_KEY must be set to a random value of at least 50 characters in production "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')."
        )
    # /metrics: behind a bearer token of at least 32 characters, or not served at all.
    if METRICS_TOKEN and (len(METRICS_TOKEN) < 32 or len(set(METRICS_TOKEN)) < 5):
        refused.append("METRICS_TOKEN must be a random value of at least 32 characters.")
    # The workers' port is plain HTTP: a token of its own, never the one that reads every web
    # machine's /metrics, and one at all wherever another machine can reach the port.
    if WORKER_METRICS_TOKEN and WORKER_METRICS_TOKEN == METRICS_TOKEN:
        refused.append(
            "WORKER_METRICS_TOKEN must not be METRICS_TOKEN: the workers' port is plain HTTP, where "
            "the token that reads every web machine's /metrics would cross in clear."
        )
    elif WORKER_METRICS_TOKEN and (len(WORKER_METRICS_TOKEN) < 32 or len(set(WORKER_METRICS_TOKEN)) < 5):
        refused.append("WORKER_METRICS_TOKEN must be a random value of at least 32 characters.")
    elif WORKER_METRICS_PORT and not WORKER_METRICS_TOKEN and not exposition.loopback(WORKER_METRICS_HOST):
        refused.append(
            f"WORKER_METRICS_TOKEN must be set where WORKER_METRICS_HOST ({WORKER_METRICS_HOST}) is "
            "not a loopback address: a random value of at least 32 characters, not METRICS_TOKEN."
        )
    # A machine's processes (gunicorn's workers, Dramatiq's, the scheduler) count into one
    # directory that a scrape sums; without it /metrics shows the answering gunicorn worker's own
    # counts only, never the workers' or the scheduler's, and the workers' port does not open.
    serving = {"METRICS_TOKEN": METRICS_TOKEN, "WORKER_METRICS_PORT": WORKER_METRICS_PORT}
    served = " and ".join(name for name, value in serving.items() if value)
    if served and not PROMETHEUS_MULTIPROC_DIR:
        refused.append(
            f"PROMETHEUS_MULTIPROC_DIR must be set where {served} {'are' if ' and ' in served else 'is'} "
            "set: one directory per machine, in every process's environment, emptied only while "
            'none of them runs (README, "Deploying"); without it each process counts on its own and '
            "/metrics shows one gunicorn worker's counts, none of the Dramatiq workers' or the "
            "scheduler's."
        )
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        refused.append(
            "DATABASE_URL must name the PostgreSQL database every machine shares "
            "(postgres://USER:PASSWORD@HOST:5432/NAME), not a SQLite file (the default)."
        )
    if REDIS_URL == embedded_redis.url(VAR_DIR):  # noqa: SIM300 - the setting against its default
        refused.append(
            "REDIS_URL must name the Redis server every machine shares (redis://HOST:6379/0), "
            "not the embedded development server (the default)."
        )
    if STRIPE_API_KEY in ("", SANDBOX_STRIPE_API_KEY):
        refused.append(
            "STRIPE_API_KEY must be the payment provider's secret key (sk_live_...), not the sandbox's."
        )
    if STRIPE_WEBHOOK_SECRET in ("", SANDBOX_STRIPE_WEBHOOK_SECRET):
        refused.append(
            "STRIPE_WEBHOOK_SECRET must be the signing secret of the provider's webhook endpoint "
            "for /payments/webhooks/ (whsec_...), not the sandbox's, which is public."
        )
    if not _public_url(SITE_URL):
        refused.append(
            "SITE_URL must be the customer site's public address, e.g. https://bookings.example.com "
            "(the default is a loopback one): booking mails link to it."
        )
    return refused


def _public_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(host) and not is_loopback_host(host)


# Named with the values at fault in what this module and base read, at once, by env.check at the end.
for _refusal in _refusals():
    env.refuse(_refusal)

# /metrics: production has a token (above) or serves no metrics page.
METRICS_OPEN = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Plain-HTTP requests are redirected to HTTPS, except the probes (load balancers and Kubernetes
# probe them over HTTP).
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^(livez|readyz|healthz)$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Lets the domain be submitted to the browsers' preload list; only a submission puts it there.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
# The proxy appends the client's address to X-Forwarded-For (rate limits, login lockouts).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=1)
# Deployment checks a deployment keeps on purpose (e.g. bookings.W003, a mail relay on every
# machine): `check --deploy` then passes without them.
SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", default=[])

# Every value at fault and every development default above, at once (config/env_values.py).
env.check(__name__)
