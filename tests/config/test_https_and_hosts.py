"""The HTTP edge as production sets it (DEBUG off, ALLOWED_HOSTS the site's name, HTTPS behind
the proxy's X-Forwarded-Proto): the probes answer whatever name they are asked by, every other
path keeps Django's host validation (in the one error shape on the API's paths), and a machine
client's write over plain HTTP is refused in the one error shape, not redirected into a GET.

The same under config.settings.production itself: tests/config/test_deploy_check.py.
"""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from tests.config.test_limits import assert_error_shape

TOKEN = "probe-test-token-0123456789abcdefghijklmnopqrstuvwxyz"
SITE = "shop.example"
HTTPS = {"HTTP_X_FORWARDED_PROTO": "https"}


@pytest.fixture
def production_edge(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = [SITE]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^(livez|readyz|healthz)$"]  # production's
    settings.METRICS_OPEN, settings.METRICS_TOKEN = False, TOKEN
    return settings


def client(host: str) -> Client:
    # after the settings: the client's handler reads the middleware settings at its first request
    return Client(HTTP_HOST=host, raise_request_exception=False)


# --- the probes ------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("https", [False, True], ids=["http", "https"])
def test_healthz_answers_a_probe_by_the_instance_s_address(production_edge, broker, https):
    # a load balancer or a Kubernetes probe: the instance's address as Host, often plain HTTP
    response = client("10.1.2.3:8000").get("/healthz", **(HTTPS if https else {}))

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": True, "broker": True}}


@pytest.mark.django_db
@pytest.mark.parametrize(("path", "body"), [("/livez", {"status": "ok"}), ("/readyz", None)])
def test_livez_and_readyz_answer_a_probe_by_the_instance_s_address_over_plain_http(
    production_edge, broker, path, body
):
    response = client("10.1.2.3:8000").get(path)

    assert response.status_code == 200, response
    assert response.json() == (body or {"status": "ok", "checks": {"database": True, "broker": True}})


@pytest.mark.django_db
def test_metrics_answer_a_scrape_by_the_machine_s_name_behind_their_token(production_edge):
    # README's prometheus.yml: each machine scraped by its own name, over HTTPS
    scraper = client("web-1.internal")

    scraped = scraper.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **HTTPS)
    refused = scraper.get("/metrics", HTTP_AUTHORIZATION="Bearer not-the-token", **HTTPS)

    assert scraped.status_code == 200
    assert "bookings_by_state" in scraped.content.decode()
    assert_error_shape(refused, 401, "unauthorized")
    assert refused["WWW-Authenticate"] == 'Bearer realm="metrics"'


@pytest.mark.django_db
def test_metrics_without_a_token_stay_absent_whatever_the_name(production_edge):
    production_edge.METRICS_TOKEN = ""

    response = client("web-1.internal").get("/metrics", **HTTPS)

    assert response.status_code == 404


@pytest.mark.django_db
def test_metrics_over_plain_http_are_refused_not_redirected(production_edge):
    # the token has crossed the network in clear: refused, so the scrape's URL gets fixed
    response = client("web-1.internal").get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    error = assert_error_shape(response, 403, "https_required")
    assert error["message"] == "The metrics are served over HTTPS only."


# --- every other path keeps the host check ---------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/offers"),
        ("POST", "/api/v1/bookings"),
        ("POST", "/partners/acme/webhooks/"),
        ("POST", "/payments/webhooks/"),
    ],
)
def test_a_name_not_allowed_is_a_400_in_the_one_error_shape_on_the_api_s_paths(production_edge, method, path):
    response = client("10.1.2.3:8000").generic(method, path, "{}", "application/json", **HTTPS)

    assert_error_shape(response, 400, "bad_request")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/account/login/", "/healthz/", "/metrics/x", "/admin/"])
def test_a_name_not_allowed_is_refused_on_the_pages_with_the_site_s_page(production_edge, path):
    response = client("10.1.2.3:8000").get(path, **HTTPS)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
    assert "<h1>Sorry, we could not understand this request</h1>" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/api/v1/offers"])
def test_a_name_not_allowed_logs_one_warning_without_a_traceback(production_edge, caplog, path):
    # scanners ask by every name and address all day: the client's error, not an error of ours
    # (Django logs it at ERROR with a traceback, which alerting on error lines pages someone for)
    with caplog.at_level(logging.INFO):
        client("scanner.example").get(path, **HTTPS)

    refused = [record for record in caplog.records if record.name == "django.security.DisallowedHost"]
    assert [(record.levelname, record.exc_info, record.exc_text) for record in refused] == [
        ("WARNING", None, None)
    ]
    assert "Invalid HTTP_HOST header: 'scanner.example'" in refused[0].getMessage()
    assert [record.name for record in caplog.records if record.levelno >= logging.ERROR] == []


# --- plain HTTP ------------------------------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/api/v1/bookings", "/partners/acme/webhooks/", "/payments/webhooks/"])
def test_a_machine_write_over_plain_http_is_refused_in_the_one_shape_not_redirected(
    production_edge, method, path
):
    # SecurityMiddleware's 301 turned the POST into a GET: the write was lost, silently
    response = client(SITE).generic(method, f"{path}?x=1", "{}", "application/json")

    error = assert_error_shape(response, 403, "https_required")
    assert error["message"] == (
        f"A write is taken over HTTPS only; nothing was done. Send it to https://{SITE}{path}?x=1"
    )
    assert not response.has_header("Location")


@pytest.mark.django_db
def test_a_machine_write_over_plain_http_by_a_name_not_allowed_is_a_400(production_edge):
    response = client("10.1.2.3").post("/api/v1/bookings", data="{}", content_type="application/json")

    assert_error_shape(response, 400, "bad_request")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/api/v1/offers"), ("head", "/api/v1/offers"), ("post", "/account/login/"), ("get", "/")],
)
def test_reads_and_the_pages_keep_the_redirect_to_https(production_edge, method, path):
    response = getattr(client(SITE), method)(path)

    assert response.status_code == 301
    assert response["Location"] == f"https://{SITE}{path}"


@pytest.mark.django_db
def test_without_the_redirect_plain_http_writes_go_through(production_edge):
    production_edge.SECURE_SSL_REDIRECT = False

    response = client(SITE).post("/api/v1/bookings", data="{}", content_type="application/json")

    assert_error_shape(response, 401, "not_authenticated")
