"""What the pipeline's two common steps say to the database, against a real sandbox partner.

Every statement is a round trip that wakes a database backend on the cores the customer path
shares (docs/benchmarks.md, benchmark 2), so the common path keeps the ones it needs: one lock
of the booking per transaction and no savepoint that guards nothing.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from bookings.models import Notification
from bookings.states import BookingState
from partners.models import InboundEvent, InboundResult, InboundState
from partners.services.submission import submission_run
from partners.services.webhooks import inbound_event_process
from tests.helpers import wait_until
from tests.partners.conftest import book

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def _statements(captured: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in captured.captured_queries]


def _count(statements: list[str], prefix: str) -> int:
    return sum(1 for sql in statements if sql.startswith(prefix))


def test_a_confirmed_submission_and_its_webhook_lock_the_booking_once_a_transaction(harness):
    h = harness("reference")  # confirms in the create's response, then sends the webhook
    booking = book(h)

    with CaptureQueriesContext(connection) as submission:
        submission_run(booking.pk)

    booking.refresh_from_db()
    assert booking.status == BookingState.CONFIRMED
    statements = _statements(submission)
    # two transactions (the claim, then the outcome), the booking read once in each
    assert _count(statements, 'SELECT "bookings_booking"') == 2
    # the attempt is closed once; with no fence left there is no resolving UPDATE after it
    assert _count(statements, 'UPDATE "partners_partnerattempt"') == 1
    # the one savepoint left is get_or_create's own, around the reservation's INSERT
    assert _count(statements, "SAVEPOINT") == 1
    # what the customer is shown rides on each move's own UPDATE and timeline row, and the
    # confirmation's notification on the same statement as that row (on PostgreSQL: SQLite has
    # no round trip to spare and inserts them one by one, config.db.insert_together)
    assert _count(statements, 'UPDATE "bookings_booking"') == 2
    assert _count(statements, 'INSERT INTO "bookings_bookingevent"') + _count(statements, "WITH") == 4
    one_statement = connection.vendor == "postgresql"
    assert _count(statements, 'INSERT INTO "bookings_notification"') == (0 if one_statement else 1)
    assert (booking.customer_status, booking.status_version) == ("confirmed", 3)
    assert list(Notification.objects.filter(booking=booking).values_list("status_version", "kind")) == [
        (3, "confirmed")
    ]

    event = wait_until(
        lambda: InboundEvent.objects.filter(partner=h.partner, state=InboundState.RECEIVED).first(),
        what="the partner's webhook stored",
    )
    with CaptureQueriesContext(connection) as processing:
        inbound_event_process(event.pk)

    event.refresh_from_db()
    assert (event.state, event.result) == (InboundState.PROCESSED, InboundResult.DUPLICATE)
    statements = _statements(processing)
    assert _count(statements, 'SELECT "bookings_booking"') == 1
    assert _count(statements, "SAVEPOINT") == 0
