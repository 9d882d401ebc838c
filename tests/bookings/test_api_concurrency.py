"""The customer API under concurrent requests: threads, each with its own client and database
connection, against a really committing database (no test transaction).

These run on both databases: on PostgreSQL the racers truly overlap (the losers hit the unique
constraint on the Idempotency-Key, or wait on the booking's row lock); on SQLite, whose
IMMEDIATE transactions serialize writers, the same guarantees must hold too."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from bookings.models import Booking, BookingEvent
from bookings.states import BookingState
from tests.bookings.conftest import (
    BOOKINGS_URL,
    run_concurrently,
    stay_body,
)
from tests.factories import BookingFactory
from tests.helpers import queued_messages

S = BookingState
THREADS = 8


def client_for(customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=customer).key}")
    return client


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_make_one_booking(
    api_client, customer, offer, broker, partner_queue
):
    # given the same request, with the same Idempotency-Key, sent by many threads at once
    body = stay_body(offer)

    def book():
        return client_for(customer).post(
            BOOKINGS_URL, body, format="json", headers={"Idempotency-Key": "race"}
        )

    # when they all arrive together
    responses = run_concurrently(*[book] * THREADS)

    # then every one gets 202 with the same booking, and only one booking was made and sent
    booking = Booking.objects.get()
    assert [getattr(r, "status_code", r) for r in responses] == [202] * THREADS
    assert {r.json()["reference"] for r in responses} == {booking.reference}
    assert {r.headers["Location"] for r in responses} == {
        f"http://testserver{BOOKINGS_URL}/{booking.reference}"
    }
    assert Booking.objects.exclude(idempotency_key="").count() == 1
    assert list(BookingEvent.objects.values_list("booking", "kind")) == [(booking.pk, "booking.requested")]
    messages = queued_messages(broker, partner_queue)
    assert [(m.actor_name, m.args) for m in messages] == [("submit_booking", (str(booking.pk),))]


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_different_keys_make_one_booking_each(
    api_client, customer, offer, broker, partner_queue
):
    body = stay_body(offer)

    def book(key: str):
        return lambda: client_for(customer).post(
            BOOKINGS_URL, body, format="json", headers={"Idempotency-Key": key}
        )

    responses = run_concurrently(*[book(f"key-{i}") for i in range(4)])

    assert [getattr(r, "status_code", r) for r in responses] == [202] * 4
    assert len({r.json()["reference"] for r in responses}) == 4
    assert Booking.objects.exclude(idempotency_key="").count() == 4
    assert len(queued_messages(broker, partner_queue)) == 4


@pytest.mark.django_db(transaction=True)
def test_concurrent_cancels_make_one_cancellation(api_client, customer, offer, broker, partner_queue):
    # given a confirmed booking, and several cancels of it at once
    booking = BookingFactory(customer=customer, offer=offer, status=S.CONFIRMED)

    def cancel():
        return client_for(customer).post(f"{BOOKINGS_URL}/{booking.reference}/cancel")

    responses = run_concurrently(*[cancel] * 4)

    # then all are accepted, and the booking was moved, recorded and sent once
    assert [getattr(r, "status_code", r) for r in responses] == [202] * 4
    assert {r.json()["status"] for r in responses} == {"cancelling"}
    booking.refresh_from_db()
    assert booking.status == S.CANCEL_REQUESTED
    assert list(booking.events.values_list("kind", flat=True)) == ["booking.cancel_requested"]
    messages = queued_messages(broker, partner_queue)
    assert [(m.actor_name, m.args) for m in messages] == [("cancel_booking", (str(booking.pk),))]
