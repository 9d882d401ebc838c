"""The support-only timeline endpoint: the same one timeline, for staff only."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Actor, Booking
from bookings.services import apply_transition, lock_booking
from payments.models import Payment, PaymentEvent
from reconciliation.selectors.timeline import booking_timeline
from tests.factories import BookingFactory, InboundEventFactory

pytestmark = pytest.mark.django_db

URL = "/api/v1/support/bookings/{}/timeline"


def _booking_with_history():
    booking = BookingFactory()
    from django.db import transaction

    with transaction.atomic():
        locked = lock_booking(booking.pk)
        apply_transition(locked, "start_submission", actor=Actor.WORKER, summary="Submitting")
    return booking


def test_support_staff_read_the_same_timeline_as_the_console(support_user):
    booking = _booking_with_history()
    client = APIClient()
    client.force_authenticate(support_user)

    response = client.get(URL.format(booking.reference))

    assert response.status_code == 200
    body = response.json()
    assert body["reference"] == booking.reference
    assert body["state"] == "submitting"
    assert [row["kind"] for row in body["timeline"]] == [row.kind for row in booking_timeline(booking)]
    assert body["timeline"][-1]["to_state"] == "submitting"


def test_customers_are_refused_even_for_their_own_booking():
    booking = _booking_with_history()
    client = APIClient()
    client.force_authenticate(booking.customer)

    response = client.get(URL.format(booking.reference))

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_anonymous_is_401_and_unknown_reference_is_404(support_user):
    client = APIClient()
    assert client.get(URL.format("BK-NOPE00")).status_code == 401
    client.force_authenticate(support_user)
    response = client.get(URL.format("BK-NOPE00"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    # a NUL names no booking either (the database cannot compare one: it was a 500)
    nul = client.get(URL.format("BK-NOPE00%00"))
    assert (nul.status_code, nul.json()["error"]["code"]) == (404, "not_found")


def test_a_reference_in_any_case_reads_the_booking_s_timeline(support_user):
    booking = _booking_with_history()
    client = APIClient()
    client.force_authenticate(support_user)

    response = client.get(URL.format(booking.reference.lower()))

    assert (response.status_code, response.json()["reference"]) == (200, booking.reference)


def test_a_stored_body_strict_json_cannot_carry_is_shown_as_its_text_never_a_500(support_user, client):
    # An authentic delivery is linked to the booking it names even when refused: a bare NaN (which
    # Python's JSON reader takes) or a lone surrogate escape in its body reached the renderers as a
    # float no JSON holds, or a string no UTF-8 answer can write.
    booking = _booking_with_history()
    partner_body = b'{"type": "reservation.updated", "extra": NaN, "data": {"reason": "R-\\ud800"}}'
    InboundEventFactory(partner=booking.partner, booking=booking, state="invalid", raw_body=partner_body)
    facts = PaymentFacts(state="authorizing", currency="EUR", amount=Decimal("360.00"))
    Booking.objects.filter(pk=booking.pk).update(customer_money=money_of(facts).as_json())
    payment = Payment.objects.create(
        booking=booking, amount=Decimal("360.00"), currency="EUR", payment_method="pm_card_visa"
    )
    provider_body = b'{"data": {"object": {"id": "pi_1", "status": "\\udfff", "amount": Infinity}}}'
    PaymentEvent.objects.create(
        event_id="evt_1", type="payment_intent.succeeded", body=provider_body, payment=payment, state="failed"
    )
    api = APIClient()
    api.force_authenticate(support_user)
    client.force_login(support_user)

    printed = io.StringIO()
    call_command("booking_timeline", booking.reference, "--json", stdout=printed)
    answers = [
        api.get(URL.format(booking.reference)),
        client.get(f"/admin/bookings/booking/{booking.pk}/timeline.json"),
        SimpleNamespace(status_code=200, content=printed.getvalue()),
    ]

    for answer in answers:
        assert answer.status_code == 200
        rows = json.loads(answer.content, parse_constant=_refuse_constant)["timeline"]
        shown = [row["data"] for row in rows if row["source"] in ("inbound", "payment_event")]
        assert partner_body.decode() in [data.get("body") for data in shown]
        assert {"unreadable": True} in [data.get("object") for data in shown]


def _refuse_constant(name: str):
    raise AssertionError(f"{name} is not JSON")


def test_the_timeline_answers_with_a_trailing_slash(support_user):
    booking = _booking_with_history()
    client = APIClient()
    client.force_authenticate(support_user)

    response = client.get(URL.format(booking.reference) + "/")

    assert response.status_code == 200
    assert response.json()["reference"] == booking.reference
