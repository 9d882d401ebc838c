"""Services of the booking core: create (with idempotency), cancel, quote, apply_transition, and
the rule that work is queued for the partner side only after commit (docs/design.md, invariant
3), checked against the real Redis broker."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from bookings.models import Actor, Booking, BookingEvent, Quote
from bookings.services import (
    BookingRequest,
    apply_transition,
    booking_create,
    booking_request_cancel,
    lock_booking,
    quote_create,
)
from bookings.states import BookingState
from bookings.timeline import new_event
from config.errors import InvalidTransition, Unprocessable, ValidationFailed
from tests.bookings.conftest import queue_length, today
from tests.factories import BookingFactory
from tests.helpers import queued_messages

S = BookingState


def a_request(offer, **overrides) -> BookingRequest:
    start = today() + timedelta(days=30)
    values = {
        "offer_id": offer.pk,
        "start_date": start,
        "end_date": start + timedelta(days=3),
        "guests": 2,
    }
    values.update(overrides)
    return BookingRequest(**values)


# --- booking_create -------------------------------------------------------------------------
def test_booking_create_stores_a_priced_requested_booking(customer, offer):
    before = timezone.now()

    result = booking_create(customer=customer, request=a_request(offer), idempotency_key="k1")

    booking = Booking.objects.get()
    assert (result.booking, result.created) == (booking, True)
    assert (booking.customer, booking.offer, booking.partner) == (customer, offer, offer.partner)
    assert (booking.status, booking.guests, booking.nights) == (S.REQUESTED, 2, 3)
    assert (booking.total_price, booking.currency) == (Decimal("360.00"), "EUR")
    assert booking.quote is None
    # the stay is a month away: the confirmation window sets the deadline, not the lead time
    window = settings.BOOKING_CONFIRMATION_WINDOW
    assert before + window <= booking.deadline <= timezone.now() + window
    assert booking.next_check_at - booking.deadline == (
        settings.BOOKING_SUBMIT_GRACE - settings.BOOKING_CONFIRMATION_WINDOW
    )
    event = BookingEvent.objects.get()
    assert (event.booking, event.kind, event.actor, event.actor_label, event.to_state) == (
        booking,
        "booking.requested",
        Actor.CUSTOMER,
        customer.username,
        S.REQUESTED,
    )
    assert event.data == {
        "price": {
            "unit_price": "120.00",
            "nights": 3,
            "fee": "0.00",
            "total": "360.00",
            "currency": "EUR",
        },
        "quote": None,
        "deadline": booking.deadline.isoformat(),
    }


def test_booking_create_is_a_short_fixed_number_of_queries(customer, offer, django_assert_num_queries):
    # offer with partner, then (inside the test's transaction) savepoint, the booking (with its
    # key) and its timeline row, release: one statement for both rows on PostgreSQL, one each
    # elsewhere. A new key needs no lookup: a used one makes the insert fail.
    with django_assert_num_queries(4 if connection.vendor == "postgresql" else 5):
        booking_create(customer=customer, request=a_request(offer), idempotency_key="q")


def test_booking_create_replays_the_same_key_and_request(customer, offer):
    first = booking_create(customer=customer, request=a_request(offer), idempotency_key="same")

    replay = booking_create(customer=customer, request=a_request(offer), idempotency_key="same")

    assert (replay.booking, replay.created) == (first.booking, False)
    assert Booking.objects.count() == 1
    assert Booking.objects.exclude(idempotency_key="").count() == 1
    assert BookingEvent.objects.count() == 1


def test_booking_create_refuses_the_same_key_for_another_request(customer, offer):
    booking_create(customer=customer, request=a_request(offer), idempotency_key="same")

    with pytest.raises(Unprocessable) as error:
        booking_create(customer=customer, request=a_request(offer, guests=1), idempotency_key="same")

    assert error.value.code == "idempotency_key_reused"
    assert Booking.objects.count() == 1
    assert BookingEvent.objects.count() == 1


def test_booking_create_replays_a_key_even_when_its_offer_was_withdrawn_since(customer, offer):
    first = booking_create(customer=customer, request=a_request(offer), idempotency_key="retry")
    offer.is_active = False
    offer.save(update_fields=["is_active"])

    replay = booking_create(customer=customer, request=a_request(offer), idempotency_key="retry")

    assert (replay.booking, replay.created) == (first.booking, False)
    assert Booking.objects.count() == 1


def test_booking_create_refuses_a_reused_key_before_validating_the_new_body(customer, offer):
    booking_create(customer=customer, request=a_request(offer), idempotency_key="same")
    offer.is_active = False
    offer.save(update_fields=["is_active"])

    with pytest.raises(Unprocessable) as error:
        booking_create(customer=customer, request=a_request(offer, guests=1), idempotency_key="same")

    assert error.value.code == "idempotency_key_reused"


def test_booking_create_without_a_stored_key_reports_the_validation_error(customer, offer):
    offer.is_active = False
    offer.save(update_fields=["is_active"])

    with pytest.raises(ValidationFailed) as error:
        booking_create(customer=customer, request=a_request(offer), idempotency_key="new")

    assert "offer" in error.value.fields
    assert not Booking.objects.exists()


def test_booking_create_with_a_quote_takes_the_quoted_price(customer, offer):
    request = a_request(offer)
    quote = quote_create(
        customer=customer,
        offer_id=offer.pk,
        start_date=request.start_date,
        end_date=request.end_date,
        guests=request.guests,
    )
    offer.unit_price = Decimal("1.00")
    offer.save(update_fields=["unit_price"])

    result = booking_create(
        customer=customer,
        request=a_request(offer, quote_id=quote.pk),
        idempotency_key="quoted",
    )

    assert (result.booking.quote, result.booking.total_price) == (quote, Decimal("360.00"))
    assert BookingEvent.objects.get().data["quote"] == str(quote.pk)


def test_a_quote_is_booked_once_whatever_key_books_it(customer, offer):
    request = a_request(offer)
    quote = quote_create(customer=customer, offer_id=offer.pk, **_stay(request))
    first = booking_create(
        customer=customer, request=a_request(offer, quote_id=quote.pk), idempotency_key="tab-1"
    )

    again = booking_create(
        customer=customer, request=a_request(offer, quote_id=quote.pk), idempotency_key="tab-2"
    )

    assert (again.booking, again.created) == (first.booking, False)
    assert list(Booking.objects.values_list("idempotency_key", flat=True)) == ["tab-1"]
    assert BookingEvent.objects.count() == 1


def test_a_booked_quote_answers_another_key_with_its_booking_after_it_expired(customer, offer):
    request = a_request(offer)
    quote = quote_create(customer=customer, offer_id=offer.pk, **_stay(request))
    first = booking_create(
        customer=customer, request=a_request(offer, quote_id=quote.pk), idempotency_key="tab-1"
    )
    Quote.objects.filter(pk=quote.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    again = booking_create(
        customer=customer, request=a_request(offer, quote_id=quote.pk), idempotency_key="tab-2"
    )

    assert (again.booking, again.created) == (first.booking, False)


def _stay(request: BookingRequest) -> dict:
    return {"start_date": request.start_date, "end_date": request.end_date, "guests": request.guests}


def test_the_request_fingerprint_covers_every_field(offer):
    base = a_request(offer)
    variants = [
        a_request(offer, offer_id=offer.pk + 1),
        a_request(offer, start_date=base.start_date - timedelta(days=1)),
        a_request(offer, end_date=base.end_date + timedelta(days=1)),
        a_request(offer, guests=3),
        a_request(offer, quote_id="00000000-0000-4000-8000-000000000000"),
    ]

    assert base.fingerprint() == a_request(offer).fingerprint()
    assert len({base.fingerprint(), *(variant.fingerprint() for variant in variants)}) == 6


# --- enqueue after commit, on the real broker ----------------------------------------------
def test_nothing_is_sent_to_the_broker_before_commit(
    customer, offer, broker, partner_queue, django_capture_on_commit_callbacks
):
    # when a booking is created but its transaction has not committed yet
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        result = booking_create(customer=customer, request=a_request(offer), idempotency_key="k")

        # then nothing is on the partner's queue
        assert queue_length(broker, partner_queue) == 0
    assert queue_length(broker, partner_queue) == 0
    assert len(callbacks) == 2  # its first view's publish, then its submission

    # and once it commits, the submission is sent
    for callback in callbacks:
        callback()
    messages = queued_messages(broker, partner_queue)
    assert [(m.actor_name, m.args) for m in messages] == [("submit_booking", (str(result.booking.pk),))]


@pytest.mark.django_db(transaction=True)
def test_nothing_is_sent_when_the_transaction_rolls_back(customer, offer, broker, partner_queue):
    # when the booking is created inside a transaction that then rolls back
    with pytest.raises(RuntimeError, match="roll back"), transaction.atomic():
        booking_create(customer=customer, request=a_request(offer), idempotency_key="k")
        raise RuntimeError("roll back")

    # then no booking exists and nothing was sent
    assert Booking.objects.count() == 0
    assert queue_length(broker, partner_queue) == 0
    assert queue_length(broker, f"{partner_queue}.DQ") == 0


@pytest.mark.django_db(transaction=True)
def test_a_committed_booking_sends_exactly_one_submission(customer, offer, broker, partner_queue):
    # when the booking commits (no test transaction around it)
    result = booking_create(customer=customer, request=a_request(offer), idempotency_key="k")

    # then exactly one submit_booking for it waits on its partner's queue
    messages = queued_messages(broker, partner_queue)
    assert [(m.actor_name, m.args, m.queue_name) for m in messages] == [
        ("submit_booking", (str(result.booking.pk),), partner_queue)
    ]

    # and a replay sends nothing more
    booking_create(customer=customer, request=a_request(offer), idempotency_key="k")
    assert queue_length(broker, partner_queue) == 1


# --- booking_request_cancel ---------------------------------------------------------------
def test_cancel_moves_to_cancel_requested_and_queues_the_cancellation(
    customer, offer, broker, partner_queue, django_capture_on_commit_callbacks
):
    booking = BookingFactory(customer=customer, offer=offer, status=S.PENDING_PARTNER)
    requested_from = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
        cancelled = booking_request_cancel(
            booking_id=booking.pk, actor=Actor.CUSTOMER, actor_label=customer.username
        )

    booking.refresh_from_db()
    assert cancelled.status == booking.status == S.CANCEL_REQUESTED
    grace = settings.BOOKING_SUBMIT_GRACE  # the sweeper's next look, should the cancel stall
    assert requested_from + grace <= booking.next_check_at <= timezone.now() + grace
    assert list(booking.events.values_list("kind", "from_state", "to_state")) == [
        ("booking.cancel_requested", S.PENDING_PARTNER, S.CANCEL_REQUESTED)
    ]
    messages = queued_messages(broker, partner_queue)
    assert [(m.actor_name, m.args) for m in messages] == [("cancel_booking", (str(booking.pk),))]


@pytest.mark.parametrize("state", [S.CANCEL_REQUESTED, S.CANCELLED])
def test_cancel_is_idempotent_once_asked(customer, state, django_capture_on_commit_callbacks):
    booking = BookingFactory(customer=customer, status=state)

    with django_capture_on_commit_callbacks() as callbacks:
        result = booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)

    assert result.status == state
    assert booking.events.count() == 0
    assert callbacks == []


@pytest.mark.parametrize("state", [S.REJECTED, S.FAILED, S.EXPIRED])
def test_cancel_refuses_a_finished_booking(customer, state):
    booking = BookingFactory(customer=customer, status=state)

    with pytest.raises(InvalidTransition) as error:
        booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)

    assert (error.value.code, error.value.http_status) == ("not_cancellable", 409)
    booking.refresh_from_db()
    assert booking.status == state
    assert booking.events.count() == 0


# --- apply_transition ----------------------------------------------------------------------
def test_apply_transition_saves_and_records_the_move(db):
    booking = BookingFactory(status=S.REQUESTED)

    with transaction.atomic():
        apply_transition(lock_booking(booking.pk), "start_submission", actor=Actor.WORKER)

    booking.refresh_from_db()
    assert (booking.status, booking.submission_count) == (S.SUBMITTING, 1)
    assert list(booking.events.values_list("kind", "actor", "from_state", "to_state")) == [
        ("booking.submitting", Actor.WORKER, S.REQUESTED, S.SUBMITTING)
    ]


def test_apply_transition_refuses_a_forbidden_move_and_writes_nothing(db):
    booking = BookingFactory(status=S.CANCELLED)

    with pytest.raises(InvalidTransition) as error, transaction.atomic():
        apply_transition(lock_booking(booking.pk), "confirm", actor=Actor.WORKER)

    assert error.value.fields == {"status": [S.CANCELLED]}
    booking.refresh_from_db()
    assert booking.status == S.CANCELLED
    assert booking.events.count() == 0


def test_apply_transition_turns_a_lost_race_into_an_invalid_transition(db):
    # given a copy of the booking that another writer has since moved on
    booking = BookingFactory(status=S.REQUESTED)
    stale = Booking.objects.get(pk=booking.pk)
    with transaction.atomic():
        apply_transition(lock_booking(booking.pk), "start_submission", actor=Actor.WORKER)

    # when the stale copy is transitioned
    with pytest.raises(InvalidTransition), transaction.atomic():
        apply_transition(stale, "request_cancel", actor=Actor.CUSTOMER)

    # then the newer state stands and only the first move is on the timeline
    booking.refresh_from_db()
    assert booking.status == S.SUBMITTING
    assert list(booking.events.values_list("kind", flat=True)) == ["booking.submitting"]


# --- quote_create ---------------------------------------------------------------------------
def test_quote_create_prices_and_locks_the_stay(customer, offer):
    start = today() + timedelta(days=5)
    before = timezone.now()

    quote = quote_create(
        customer=customer,
        offer_id=offer.pk,
        start_date=start,
        end_date=start + timedelta(days=2),
        guests=4,
    )

    assert Quote.objects.get() == quote
    assert (quote.customer, quote.offer, quote.guests) == (customer, offer, 4)
    assert (quote.total_price, quote.currency) == (Decimal("240.00"), "EUR")
    assert before + settings.QUOTE_TTL <= quote.expires_at <= timezone.now() + settings.QUOTE_TTL


def test_quote_create_validates_the_stay(customer, offer):
    with pytest.raises(ValidationFailed) as error:
        quote_create(
            customer=customer,
            offer_id=offer.pk,
            start_date=today(),
            end_date=today() + timedelta(days=1),
            guests=1,
        )

    assert error.value.fields == {"start_date": ["The start date must be in the future."]}
    assert Quote.objects.count() == 0


def test_booking_create_draws_another_reference_when_the_random_one_is_taken(customer, offer, monkeypatch):
    taken = booking_create(customer=customer, request=a_request(offer), idempotency_key="first").booking
    draws = iter([taken.reference, "BK-FRESH1"])
    monkeypatch.setattr("bookings.services.new_reference", lambda: next(draws))

    result = booking_create(customer=customer, request=a_request(offer), idempotency_key="second")

    assert result.booking.reference == "BK-FRESH1"
    assert Booking.objects.count() == 2


def test_booking_create_reraises_an_integrity_error_that_is_not_a_reference_collision(
    customer, offer, monkeypatch
):
    def refused_event(booking, kind, **fields):
        event = new_event(booking, kind, **fields)
        event.kind = None  # the database refuses the timeline row: NOT NULL
        return event

    monkeypatch.setattr("bookings.services.new_event", refused_event)

    with pytest.raises(IntegrityError):
        booking_create(customer=customer, request=a_request(offer), idempotency_key="k")
    # All or none: the booking went with its refused timeline row.
    assert Booking.objects.count() == 0
    assert BookingEvent.objects.count() == 0
