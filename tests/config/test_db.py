"""`config.db.insert_together`: rows that belong together go in all or none, in one statement
on PostgreSQL, against a really committing database and inside a caller's transaction."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from bookings.models import Booking, BookingEvent
from bookings.timeline import new_event
from config.db import insert_together
from tests.factories import BookingFactory, OfferFactory, UserFactory

ON_POSTGRESQL = connection.vendor == "postgresql"


def unsaved_booking_and_event(**event_fields) -> tuple[Booking, BookingEvent]:
    offer = OfferFactory()
    booking = BookingFactory.build(customer=UserFactory(), offer=offer, partner=offer.partner)
    fields = {"actor": "customer", "summary": "requested", **event_fields}
    return booking, new_event(booking, "booking.requested", **fields)


@pytest.mark.django_db(transaction=True)
def test_both_rows_are_written_by_one_statement_without_a_transaction_block():
    booking, event = unsaved_booking_and_event()

    with CaptureQueriesContext(connection) as captured:
        insert_together(booking, event)

    statements = [query["sql"] for query in captured.captured_queries]
    if ON_POSTGRESQL:
        assert len(statements) == 1, statements  # no BEGIN, no COMMIT, one round trip
        assert statements[0].startswith("WITH row0 AS (INSERT INTO")
    else:
        assert [sql.split()[0] for sql in statements] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    stored = BookingEvent.objects.select_related("booking").get()
    assert stored.booking == booking
    # What the database assigned is set on the instances, which now count as saved.
    assert event.pk == stored.pk
    assert isinstance(event.pk, int)
    assert not booking._state.adding and not event._state.adding
    assert booking._state.db == event._state.db == "default"
    assert Booking.objects.get(pk=booking.pk).created_at == booking.created_at


@pytest.mark.django_db(transaction=True)
def test_a_refused_row_leaves_no_other_row_behind():
    booking, event = unsaved_booking_and_event()
    event.kind = None  # NOT NULL: the database refuses this row

    with pytest.raises(IntegrityError):
        insert_together(booking, event)

    assert not Booking.objects.exists()
    assert not BookingEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_unique_violation_is_an_integrity_error_and_the_rows_can_be_inserted_again():
    first, _ = unsaved_booking_and_event()
    insert_together(first)
    booking, event = unsaved_booking_and_event()
    booking.reference = first.reference

    with pytest.raises(IntegrityError):
        insert_together(booking, event)

    booking.reference = "BK-OTHER1"
    insert_together(booking, event)
    assert Booking.objects.count() == 2
    assert BookingEvent.objects.get().booking_id == booking.pk


@pytest.mark.django_db
def test_inside_a_transaction_a_failure_does_not_abort_the_callers_transaction():
    booking, event = unsaved_booking_and_event()
    event.kind = None

    with transaction.atomic():
        with pytest.raises(IntegrityError):
            insert_together(booking, event)
        # The caller goes on in its transaction (a savepoint took the failure).
        assert Booking.objects.count() == 0
        event.kind = "booking.requested"
        insert_together(booking, event)
    assert BookingEvent.objects.get().booking_id == booking.pk


@pytest.mark.django_db
def test_rows_without_anything_returned_go_in_too():
    booking, _ = unsaved_booking_and_event()
    other, _ = unsaved_booking_and_event()

    insert_together(booking, other)

    assert set(Booking.objects.values_list("pk", flat=True)) == {booking.pk, other.pk}
