"""Production settings pass Django's deployment checks with no warning (and the project's own
warn of the development defaults production still starts on), and behave as they say:
HTTPS only behind the proxy's X-Forwarded-Proto (HSTS, redirect, secure cookies; a machine
client's write over plain HTTP refused, not redirected), /healthz exempt from the redirect so that
a load balancer can probe it over plain HTTP, and both probes answering whatever name they are
asked by."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests import production

ROOT = Path(__file__).resolve().parents[2]

# Requests through Django's test client under the production settings, reported as JSON.
PROBE = """
import json, django
django.setup()
from django.conf import settings
from django.test import Client

def seen(response):
    return {"status": response.status_code, "location": response.get("Location"),
            "hsts": response.get("Strict-Transport-Security")}

def error_code(response):
    return [response.status_code, response.json()["error"]["code"]]

client = Client(HTTP_HOST="127.0.0.1")
print(json.dumps({
    "http_api": seen(client.get("/api/v1/offers")),
    "http_api_write": error_code(client.post("/api/v1/bookings", "{}", "application/json")),
    "http_healthz": seen(client.get("/healthz")),
    "https_api": seen(client.get("/api/v1/offers", HTTP_X_FORWARDED_PROTO="https")),
    "cookies_secure": [settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE],
}))
"""


# A deployment's own values where the development defaults get a deployment check's warning.
DEPLOYED = {
    "STRIPE_API_BASE": "https://api.stripe.com",
    "EMAIL_URL": "smtp+tls://bookings:secret@mail.example.com:587",
    "DEFAULT_FROM_EMAIL": "Bookings <bookings@example.com>",
    "ALLOWED_HOSTS": "bookings.example.com",
}


def run(argv: list[str], **overrides: str) -> subprocess.CompletedProcess:
    env = production.environment(API_THROTTLE_NAMESPACE=f"throttle-{uuid.uuid4().hex}", **overrides)
    return subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True)


def check_deploy(**overrides: str) -> subprocess.CompletedProcess:
    return run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **overrides)


def test_check_deploy_passes_with_no_warning_on_the_production_settings():
    result = check_deploy(**DEPLOYED)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


def test_check_deploy_warns_of_each_development_default_production_still_starts_on():
    result = check_deploy(
        **{
            **DEPLOYED,
            "STRIPE_API_BASE": "http://127.0.0.1:8103",
            "SITE_URL": "http://shop.example.com",
            "EMAIL_URL": "smtp://127.0.0.1:8025",
            "DEFAULT_FROM_EMAIL": "Bookings <bookings@localhost>",
            "TRUSTED_PROXY_COUNT": "0",
        }
    )

    assert result.returncode == 1
    warned = dict(re.findall(r"^\?: \((bookings\.W\d+)\) (.*)$", result.stderr, re.M))
    assert sorted(warned) == [f"bookings.W00{n}" for n in range(1, 7)]
    assert warned["bookings.W001"].startswith("STRIPE_API_BASE is http://127.0.0.1:8103, not Stripe's API")
    assert warned["bookings.W002"].startswith("SITE_URL is http://shop.example.com: the links in booking")
    assert warned["bookings.W005"].startswith("SITE_URL's host shop.example.com is not in ALLOWED_HOSTS")
    assert warned["bookings.W003"].startswith("EMAIL_URL sends mail to 127.0.0.1:8025, this machine")
    assert warned["bookings.W004"].startswith("DEFAULT_FROM_EMAIL is Bookings <bookings@localhost>")
    assert warned["bookings.W006"].startswith(
        "TRUSTED_PROXY_COUNT is 0: X-Forwarded-For is ignored, so behind a proxy every request counts "
        "as the proxy's address: one rate limit for the whole site, and 5 wrong passwords lock"
    )
    assert "add bookings.W006 to SILENCED_SYSTEM_CHECKS" in result.stderr


@pytest.mark.parametrize(
    ("kept", "silenced"),
    [
        ({"EMAIL_URL": "smtp://localhost:25"}, "bookings.W003"),  # a mail relay on every machine
        ({"TRUSTED_PROXY_COUNT": "0"}, "bookings.W006"),  # a web server facing the clients
    ],
    ids=["local-mail-relay", "no-proxy"],
)
def test_a_deployment_silences_the_warning_it_means(kept, silenced):
    result = check_deploy(**{**DEPLOYED, **kept}, SILENCED_SYSTEM_CHECKS=silenced)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (1 silenced)."


def test_production_redirects_plain_http_to_https_except_the_health_check_and_sends_hsts():
    result = run(["-c", PROBE])
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["http_api"] == {"status": 301, "location": "https://127.0.0.1/api/v1/offers", "hsts": None}
    assert seen["http_api_write"] == [403, "https_required"]
    # Answered, not redirected: 200, or 503 on a run without PostgreSQL (production's database is
    # then an unreachable stand-in, tests/production.py).
    healthy = 200 if production.environment()["DATABASE_URL"] == os.environ.get("DATABASE_URL") else 503
    assert seen["http_healthz"] == {"status": healthy, "location": None, "hsts": None}
    assert seen["https_api"] == {
        "status": 401,
        "location": None,
        "hsts": "max-age=31536000; includeSubDomains; preload",
    }
    assert seen["cookies_secure"] == [True, True]


def test_the_https_settings_come_from_the_environment():
    result = run(
        ["-c", PROBE],
        SECURE_SSL_REDIRECT="false",
        SECURE_HSTS_SECONDS="600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="false",
        SECURE_HSTS_PRELOAD="false",
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["http_api"]["status"] == 401
    assert seen["http_api_write"] == [401, "not_authenticated"]
    assert seen["https_api"]["hsts"] == "max-age=600"


# The QA round's probes (docs/design.md, "Metrics"): a load balancer by the instance's address over
# plain HTTP, Prometheus by the machine's name over HTTPS, with ALLOWED_HOSTS the site's name only.
PROBES = """
import json, os, django
django.setup()
from django.test import Client

https = {"HTTP_X_FORWARDED_PROTO": "https"}
token = {"HTTP_AUTHORIZATION": "Bearer " + os.environ["METRICS_TOKEN"]}
healthz = Client(HTTP_HOST="10.1.2.3:8000").get("/healthz")
livez = Client(HTTP_HOST="10.1.2.3:8000").get("/livez")
readyz = Client(HTTP_HOST="10.1.2.3:8000").get("/readyz")
metrics = Client(HTTP_HOST="web-1.internal").get("/metrics", **https, **token)
page = Client(HTTP_HOST="web-1.internal").get("/", **https)
print(json.dumps({
    "healthz": [healthz.status_code, healthz["Content-Type"]],
    "livez": [livez.status_code, livez["Content-Type"]],
    "readyz": [readyz.status_code, readyz["Content-Type"]],
    "metrics": [metrics.status_code, metrics["Content-Type"].split(";")[0]],
    "page": page.status_code,
}))
"""


def test_production_answers_the_probes_whatever_name_they_are_asked_by(tmp_path):
    token = secrets.token_urlsafe(32)
    result = run(
        ["-c", PROBES],
        ALLOWED_HOSTS="shop.example",
        METRICS_TOKEN=token,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    # 503 (answered, saying the database is down) on a run without PostgreSQL: tests/production.py
    healthy = 200 if production.environment()["DATABASE_URL"] == os.environ.get("DATABASE_URL") else 503
    assert seen == {
        "healthz": [healthy, "application/json"],
        "livez": [200, "application/json"],  # asks no dependency: answered over plain HTTP, by any name
        "readyz": [healthy, "application/json"],
        "metrics": [200, "text/plain"],
        "page": 400,
    }
