"""Every operation of the live OpenAPI schema (`/api/schema/`), fuzzed in process by schemathesis:
valid and invalid requests alike never get a 5xx, and every answer is one the schema documents
(status, content type, headers and body)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.utils import timezone
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.factories import BookingFactory, OfferFactory, PartnerFactory, TokenFactory, UserFactory

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@dataclass(frozen=True)
class Demo:
    """What the demo data gives: a customer with a token and a booking, a partner's offer it can
    book, and a support user for the support API."""

    customer_token: str
    support_token: str
    offer_id: int
    reference: str
    partner_code: str


@pytest.fixture
def demo(db, groups) -> Demo:
    customer = UserFactory()
    support_user = UserFactory(is_staff=True)
    support_user.groups.set([groups["support"]])
    offer = OfferFactory(partner=PartnerFactory(code="demo-reference"))
    return Demo(
        customer_token=TokenFactory(user=customer).key,
        support_token=TokenFactory(user=support_user).key,
        offer_id=offer.pk,
        reference=BookingFactory(customer=customer, offer=offer).reference,
        partner_code=offer.partner.code,
    )


@pytest.fixture(autouse=True)
def _requests_keep_the_test_connection():
    """Operations run in this process, inside the test's transaction: as in Django's test
    client, the end of a request must not close the database connection."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# The schema the app serves, fetched from it; its operations are called in this process.
schema = schemathesis.openapi.from_wsgi("/api/schema/", application)


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_schema(case, demo: Demo) -> None:
    _point_at_the_demo_data(case, demo)
    token = demo.support_token if case.operation.path.startswith("/api/v1/support/") else demo.customer_token
    case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)


def _point_at_the_demo_data(case, demo: Demo) -> None:
    """Valid requests name the demo's booking, partner and offer (with bookable dates), so that
    the success paths answer too; invalid ones stay as generated."""
    if case.meta is not None and case.meta.generation.mode.is_negative:
        return
    if "reference" in (case.path_parameters or {}):
        case.path_parameters["reference"] = demo.reference
    if "code" in (case.path_parameters or {}):
        case.path_parameters["code"] = demo.partner_code
    if isinstance(case.body, dict) and "offer" in case.body:
        start = timezone.now().date() + timedelta(days=30)
        end = start + timedelta(days=3)
        case.body = {"offer": demo.offer_id, "start_date": str(start), "end_date": str(end), "guests": 2}
