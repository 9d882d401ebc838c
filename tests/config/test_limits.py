"""The API's edge: every error under /api/ (and the webhook receiver) in the one JSON shape, debug
pages never shown to API clients, bodies bounded in size and in nesting."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import path
from standardwebhooks.webhooks import Webhook

from config.urls import urlpatterns as project_urlpatterns
from partners.models import InboundEvent, InboundState
from tests.factories import OfferFactory, PartnerFactory

# What a browser asks for.
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
# A body Python's JSON decoder cannot read without running out of recursion depth.
DEEP_JSON = "[" * 100_000 + "]" * 100_000


def explode(request):
    raise RuntimeError("a bug in a view")


# This module is also the URLconf of the tests marked `urls`: the project's routes plus a view
# that fails the way a bug does.
urlpatterns = [
    *project_urlpatterns,
    path("api/v1/explode", explode),
    # Routes of machine clients' kind that exist only with a trailing slash.
    path("api/v1/slashed/", explode),
    path("partners/slashed/", explode),
    path("payments/slashed/", explode),
]


def assert_error_shape(response, status: int, code: str) -> dict:
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


# --- errors Django answers itself ----------------------------------------------------------------
@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_api_path_is_a_json_404_with_or_without_debug(db, settings, debug):
    settings.DEBUG = debug

    response = Client().get("/api/v1/no-such-thing", HTTP_ACCEPT=BROWSER_ACCEPT)

    assert_error_shape(response, 404, "not_found")


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.urls(__name__)
def test_a_failing_api_view_is_a_json_500_without_the_debug_page(db, settings, debug):
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)

    response = client.get("/api/v1/explode", HTTP_ACCEPT=BROWSER_ACCEPT)

    error = assert_error_shape(response, 500, "internal_server_error")
    assert "Traceback" not in response.content.decode()
    assert "RuntimeError" not in error["message"]


def test_an_unknown_webhook_path_is_a_json_404(db):
    response = Client().post("/partners/acme/not-webhooks/", data="{}", content_type="application/json")

    assert_error_shape(response, 404, "not_found")


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("method", ["post", "delete"])
@pytest.mark.parametrize("url", ["/api/schema", "/api/v1/slashed", "/partners/slashed", "/payments/slashed"])
@pytest.mark.urls(__name__)
def test_a_write_to_a_path_missing_its_trailing_slash_is_a_json_404_never_a_redirect(
    db, settings, debug, method, url
):
    # Django's APPEND_SLASH answers such a write with an empty 301 (a 500 RuntimeError under
    # DEBUG); machine clients (webhook senders above all) do not follow a redirect for a POST.
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)

    response = getattr(client, method)(url, data="{}", content_type="application/json")

    error = assert_error_shape(response, 404, "not_found")
    assert f"{url}/" in error["message"]


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_a_page_s_form_posted_without_its_trailing_slash_is_sent_on_with_its_body(db, settings, debug):
    # A 301 (or DEBUG's 500) lost the write: a browser asks again with a GET. A 308 keeps the
    # method and the body, so the form's POST reaches the page it was meant for.
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)

    response = client.post("/account/login?next=/bookings/", {"username": "u", "password": "p"})

    assert response.status_code == 308
    assert response["Location"] == "/account/login/?next=/bookings/"
    followed = client.post("/account/login?next=/bookings/", {"username": "u", "password": "p"}, follow=True)
    assert followed.redirect_chain == [("/account/login/?next=/bookings/", 308)]
    assert followed.request["REQUEST_METHOD"] == "POST"


def test_a_read_missing_its_trailing_slash_is_still_redirected(db):
    # A person opening the API's docs in a browser is helped by the redirect.
    response = Client().get("/api/docs")

    assert (response.status_code, response["Location"]) == (301, "/api/docs/")


def test_pages_outside_the_api_keep_django_s_own_errors(db):
    response = Client().get("/no-such-page")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_nul_in_a_page_s_query_or_form_is_the_site_s_400_page(db, customer):
    # The database cannot compare a NUL; no view of the pages or the console gets one to try.
    client = Client()
    client.force_login(customer)
    offer = OfferFactory()

    read = client.get("/bookings/?page=%00")
    posted = client.post(f"/offers/{offer.pk}/", {"start_date": "2027-03-01\x00", "guests": "1"})

    for response in (read, posted):
        assert response.status_code == 400
        assert "Sorry, we could not understand this request" in response.content.decode()


def test_the_api_names_the_parameter_holding_a_nul_itself(api_client):
    # Its own fields refuse a NUL with the parameter named, in the one shape.
    error = assert_error_shape(api_client.get("/api/v1/bookings?status=%00"), 400, "validation_error")

    assert set(error["fields"]) == {"status"}


# --- errors DRF answers, for a client that prefers HTML -------------------------------------------
def test_a_browser_gets_json_errors_from_the_api_not_the_browsable_api(api_client):
    unauthenticated = Client().get("/api/v1/offers", HTTP_ACCEPT=BROWSER_ACCEPT)
    not_allowed = api_client.delete("/api/v1/offers", HTTP_ACCEPT=BROWSER_ACCEPT)
    not_json = api_client.post(
        "/api/v1/quotes", data="offer=1", content_type="text/plain", HTTP_ACCEPT=BROWSER_ACCEPT
    )
    html_only = api_client.get("/api/v1/offers", HTTP_ACCEPT="text/html")

    assert_error_shape(unauthenticated, 401, "not_authenticated")
    assert_error_shape(not_allowed, 405, "method_not_allowed")
    assert not_allowed["Allow"] == "GET, HEAD, OPTIONS"
    assert_error_shape(not_json, 415, "unsupported_media_type")
    assert_error_shape(html_only, 406, "not_acceptable")


# --- body size ----------------------------------------------------------------------------------
def test_a_body_over_the_default_limit_of_one_mebibyte_is_refused_with_413(api_client):
    body = json.dumps({"offer": 1, "padding": "x" * (1024 * 1024)})

    response = api_client.post("/api/v1/quotes", data=body, content_type="application/json")

    error = assert_error_shape(response, 413, "payload_too_large")
    assert error["message"] == "The request body is larger than 1048576 bytes."


def test_the_body_limit_is_configurable_and_a_body_at_the_limit_is_read(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 200
    at_limit = json.dumps({"offer": "x" * 187})
    over = json.dumps({"offer": "x" * 188})
    assert (len(at_limit), len(over)) == (200, 201)

    read = api_client.post("/api/v1/quotes", data=at_limit, content_type="application/json")
    refused = api_client.post("/api/v1/quotes", data=over, content_type="application/json")

    assert_error_shape(read, 400, "validation_error")
    assert_error_shape(refused, 413, "payload_too_large")


def test_a_body_without_authentication_is_refused_by_size_first(db):
    response = Client().post(
        "/api/v1/bookings", data="x" * (1024 * 1024 + 1), content_type="application/json"
    )

    assert_error_shape(response, 413, "payload_too_large")


# --- nesting --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/api/v1/bookings", "/api/v1/quotes"])
def test_a_deeply_nested_body_is_a_400_parse_error(api_client, url):
    response = api_client.post(
        url, data=DEEP_JSON, content_type="application/json", HTTP_IDEMPOTENCY_KEY="deep-1"
    )

    error = assert_error_shape(response, 400, "parse_error")
    assert error["message"] == "The body is not valid JSON: it is nested too deeply."


def test_a_signed_webhook_with_a_deeply_nested_body_is_a_quarantined_400(db):
    secret = "whsec_" + "bGltaXRzLXRlc3RzLXdlYmhvb2stc2VjcmV0"
    partner = PartnerFactory(code=f"deep-{uuid.uuid4().hex[:8]}", webhook_secret=secret)
    OfferFactory(partner=partner)
    event_id = f"msg_{uuid.uuid4().hex}"
    at = datetime.now(UTC) - timedelta(seconds=1)

    response = Client().post(
        f"/partners/{partner.code}/webhooks/",
        data=DEEP_JSON,
        content_type="application/json",
        HTTP_WEBHOOK_ID=event_id,
        HTTP_WEBHOOK_TIMESTAMP=str(int(at.timestamp())),
        HTTP_WEBHOOK_SIGNATURE=Webhook(secret).sign(event_id, at, DEEP_JSON),
    )

    assert_error_shape(response, 400, "malformed_body")
    event = InboundEvent.objects.get(partner=partner)
    assert (event.event_id, event.state, event.signature_valid) == (event_id, InboundState.INVALID, True)
