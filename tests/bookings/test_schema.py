"""The OpenAPI schema: generated with warnings as errors, valid, served, and documenting the
customer API's contract (errors, the Idempotency-Key header, the polling headers)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

ERROR_REF = {"$ref": "#/components/schemas/Error"}


def test_the_schema_generates_with_warnings_as_errors_and_validates(tmp_path):
    target = tmp_path / "schema.yml"

    call_command("spectacular", "--file", str(target), "--validate", "--fail-on-warn")

    schema = yaml.safe_load(target.read_text())
    assert schema["openapi"] == "3.0.3"
    assert {path for path in schema["paths"] if path.startswith("/api/v1/")} == {
        "/api/v1/bookings",
        "/api/v1/bookings/{reference}",
        "/api/v1/bookings/{reference}/cancel",
        "/api/v1/offers",
        "/api/v1/quotes",
        "/api/v1/support/bookings/{reference}/timeline",
    }


def test_the_schema_and_docs_are_served(db):
    client = APIClient()

    schema = client.get("/api/schema/", {"format": "json"})
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    assert docs.status_code == 200
    assert "swagger-ui" in docs.content.decode()


def test_the_docs_page_loads_nothing_but_files_of_our_own(db):
    """The docs run on our origin, where a customer's session cookie goes with each request: a
    script from anywhere else could act as them. Swagger UI's files are ours (the sidecar's,
    pinned), and so is the page's own script, served apart from it."""
    client = APIClient()

    page = client.get("/api/docs/").content.decode()
    loaded = re.findall(r'(?:src|href)="([^"]*)"', page)
    script = client.get("/api/docs/", {"script": ""})

    assert not re.search(r"(?:https?:)?//", page)  # nothing from another origin, pinned or not
    assert "<script>" not in page  # no inline script either: only files of ours run
    static = [url.removeprefix(settings.STATIC_URL) for url in loaded if url.startswith(settings.STATIC_URL)]
    assert {Path(name).name for name in static} == {
        "favicon-32x32.png",
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
    }
    assert all(finders.find(name) for name in static)  # collected with the rest
    assert set(loaded) - {settings.STATIC_URL + name for name in static} == {"/api/docs/?script="}
    assert (script.status_code, script["Content-Type"]) == (200, "application/javascript")
    assert not re.search(r"https?://", script.content.decode())


def operations(client) -> dict[str, dict]:
    schema = client.get("/api/schema/", {"format": "json"}).json()
    return {
        op["operationId"]: op
        for item in schema["paths"].values()
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }


def error_codes(operation: dict) -> set[str]:
    return {
        code
        for code, response in operation["responses"].items()
        if response.get("content", {}).get("application/json", {}).get("schema") == ERROR_REF
    }


def test_every_customer_operation_documents_its_errors_in_the_one_shape(db):
    ops = operations(APIClient())

    # The partners' and the payment provider's webhook receivers are no customer operations.
    customers = [name for name in ops if not name.startswith(("partner", "payment"))]
    assert {name: error_codes(ops[name]) for name in customers} == {
        "bookings_list": {"400", "401", "404", "429"},
        "support_booking_timeline": {"401", "403", "404", "429"},
        "bookings_create": {"400", "401", "413", "415", "422", "429"},
        "bookings_retrieve": {"401", "404", "429"},
        "bookings_cancel": {"400", "401", "404", "409", "415", "429"},
        "offers_list": {"400", "401", "404", "429"},
        "quotes_create": {"400", "401", "413", "415", "429"},
    }


def test_booking_create_documents_its_headers(db):
    create = operations(APIClient())["bookings_create"]

    assert [(p["name"], p["in"], p["required"]) for p in create["parameters"] if p["in"] == "header"] == [
        ("Idempotency-Key", "header", True)
    ]
    assert set(create["responses"]["202"]["headers"]) == {"Retry-After", "Location", "ETag"}
    assert set(create["requestBody"]["content"]) == {"application/json"}


def test_the_error_shape_is_a_component(db):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]

    assert components["Error"]["required"] == ["error"]
    assert components["ErrorDetail"]["required"] == ["code", "message"]
    assert set(components["ErrorDetail"]["properties"]) == {"code", "message", "fields"}


def test_a_booking_documents_every_status_and_its_version(db):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    booking = schema["components"]["schemas"]["BookingOutput"]
    status = booking["properties"]["status"]
    status_enum = schema["components"]["schemas"][status["allOf"][0]["$ref"].rsplit("/", 1)[1]]

    assert status_enum["enum"] == ["pending", "confirmed", "failed", "cancelling", "cancelled", "disrupted"]
    for value in status_enum["enum"]:
        assert f"- `{value}`: " in status["description"]
    assert "never `pending` again" in status["description"]
    assert booking["properties"]["status_version"] == {
        "type": "integer",
        "minimum": 1,
        "description": booking["properties"]["status_version"]["description"],
    }
    assert {"status_version", "message_code"} <= set(booking["required"])


def test_a_quote_and_a_booking_document_how_to_tell_a_day_offers_days(db):
    """A client tells a one-day tour as one day: `units` in `offer.price_unit`, the `last_day`
    included and the pages' words; `nights` stays, and `end_date` is documented as exclusive."""
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]

    for name in ("QuoteOutput", "BookingOutput"):
        properties = schema[name]["properties"]
        assert {"nights", "units", "last_day", "dates_text"} <= set(schema[name]["required"])
        assert properties["units"]["type"] == "integer"
        assert (properties["last_day"]["type"], properties["last_day"]["format"]) == ("string", "date")
        assert properties["dates_text"]["type"] == "string"
        assert "1 April 2027 (1 day)" in properties["dates_text"]["description"]
        assert "day after" in properties["end_date"]["description"]
    for name in ("QuoteCreateInputRequest", "BookingCreateInputRequest"):
        assert "a one-day tour on 2027-04-01" in schema[name]["properties"]["end_date"]["description"]


def test_booking_retrieve_documents_its_conditional_poll(db):
    retrieve = operations(APIClient())["bookings_retrieve"]

    assert [p["name"] for p in retrieve["parameters"] if p["in"] == "header"] == ["If-None-Match"]
    assert set(retrieve["responses"]["200"]["headers"]) == {"ETag", "Retry-After"}
    assert set(retrieve["responses"]["304"]["headers"]) == {"ETag", "Retry-After"}
    assert "content" not in retrieve["responses"]["304"]


def test_a_cancel_documents_the_fee_it_may_send_back_and_needs_no_body(db):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    cancel = schema["paths"]["/api/v1/bookings/{reference}/cancel"]["post"]
    body = schema["components"]["schemas"]["BookingCancelInputRequest"]

    assert cancel["requestBody"].get("required", False) is False
    assert set(body["properties"]) == {"expected_fee"} and body["additionalProperties"] is False
    assert "required" not in body
    assert "`if_cancelled.fee`" in body["properties"]["expected_fee"]["description"]
    assert "cancellation_fee_changed" in cancel["responses"]["409"]["description"]


def test_a_booking_documents_what_cancelling_would_do_to_the_money(db):
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    if_cancelled = components["BookingOutput"]["properties"]["if_cancelled"]
    preview = components["IfCancelledOutput"]

    assert if_cancelled["nullable"] is True
    assert "Null when the booking cannot be cancelled" in if_cancelled["description"]
    assert "changes at `cut_off` without `status_version` moving" in if_cancelled["description"]
    assert set(preview["properties"]) == {
        "outcome",
        "message",
        "why",
        "currency",
        "fee",
        "refund",
        "released",
        "cut_off",
    }
    assert preview["properties"]["cut_off"]["nullable"] is True
    outcome = components[preview["properties"]["outcome"]["allOf"][0]["$ref"].rsplit("/", 1)[1]]
    assert outcome["enum"] == [
        "no_payment",
        "not_taken_yet",
        "release",
        "release_or_refund",
        "full_refund",
        "refund_less_fee",
        "nothing_to_refund",
        "refund_with_support",
    ]


def test_the_version_and_the_etag_say_news_of_the_money_alone_is_a_new_version(
    api_client, customer, django_capture_on_commit_callbacks
):
    """They said a version grows, and If-None-Match answers 304, with a change of `status` or
    `message` only; news of the money alone (a charge) adds one too, and answers 200."""
    from decimal import Decimal

    from bookings import customer_view
    from bookings.customer_money import PaymentFacts, money_of
    from bookings.models import Actor
    from bookings.services import lock_booking
    from tests.factories import BookingFactory

    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    version = schema["components"]["schemas"]["BookingOutput"]["properties"]["status_version"]
    etag = operations(api_client)["bookings_retrieve"]["responses"]["200"]["headers"]["ETag"]
    for description in (version["description"], etag["description"]):
        assert "`money`" in description, description

    # and so it is: a confirmed booking whose hold is charged, nothing else changing
    held = PaymentFacts("held", "EUR", Decimal("360.00"))
    booking = BookingFactory(
        customer=customer,
        status="confirmed",
        customer_status="confirmed",
        customer_message="confirmed",
        customer_money=money_of(held).as_json(),
    )
    url = f"/api/v1/bookings/{booking.reference}"
    before = api_client.get(url)["ETag"]
    with django_capture_on_commit_callbacks():
        customer_view.refresh(
            lock_booking(booking.pk),
            actor=Actor.WORKER,
            payment=PaymentFacts("charged", "EUR", Decimal("360.00"), Decimal("360.00")),
        )

    again = api_client.get(url, headers={"If-None-Match": before})
    assert again.status_code == 200 and again["ETag"] != before
    assert again.json()["status"] == "confirmed"
