"""The support-only timeline endpoint: the same one timeline, for staff only."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from bookings.models import Actor
from bookings.services import apply_transition, lock_booking
from reconciliation.selectors.timeline import booking_timeline
from tests.factories import BookingFactory

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
