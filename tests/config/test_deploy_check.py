"""Production settings pass Django's deployment checks with no warning, and behave as they say:
HTTPS only behind the proxy's X-Forwarded-Proto (HSTS, redirect, secure cookies; a machine
client's write over plain HTTP refused, not redirected), /healthz exempt from the redirect so that
a load balancer can probe it over plain HTTP, and both probes answering whatever name they are
asked by."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

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


def production_env(**overrides: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "API_THROTTLE_NAMESPACE": f"throttle-{uuid.uuid4().hex}",
        **overrides,
    }


def run(argv: list[str], **overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=production_env(**overrides), capture_output=True, text=True
    )


def test_check_deploy_passes_with_no_warning_on_the_production_settings():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"])

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "System check identified no issues (0 silenced)."


def test_production_redirects_plain_http_to_https_except_the_health_check_and_sends_hsts():
    result = run(["-c", PROBE])
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen["http_api"] == {"status": 301, "location": "https://127.0.0.1/api/v1/offers", "hsts": None}
    assert seen["http_api_write"] == [403, "https_required"]
    assert seen["http_healthz"] == {"status": 200, "location": None, "hsts": None}
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
metrics = Client(HTTP_HOST="web-1.internal").get("/metrics", **https, **token)
page = Client(HTTP_HOST="web-1.internal").get("/", **https)
print(json.dumps({
    "healthz": [healthz.status_code, healthz["Content-Type"]],
    "metrics": [metrics.status_code, metrics["Content-Type"].split(";")[0]],
    "page": page.status_code,
}))
"""


def test_production_answers_the_probes_whatever_name_they_are_asked_by():
    token = secrets.token_urlsafe(32)
    result = run(["-c", PROBES], ALLOWED_HOSTS="shop.example", METRICS_TOKEN=token)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])

    assert seen == {"healthz": [200, "application/json"], "metrics": [200, "text/plain"], "page": 400}
