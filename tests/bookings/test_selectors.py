"""Customer-safe reads: a booking's progress as its customer sees it, and how long a partner
usually takes to confirm (our own figures, cached)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from bookings import selectors
from bookings.models import Actor, Booking
from bookings.states import BookingState
from bookings.timeline import new_event, record_event
from config.errors import NotFound
from tests.factories import BookingFactory, OfferFactory, PartnerFactory, UserFactory
from tests.helpers import unique_code

S = BookingState


@pytest.fixture
def partner(db):
    partner = PartnerFactory(code=unique_code("sel"))
    cache.delete(selectors.confirmation_times_cache_key(partner.pk))
    yield partner
    cache.delete(selectors.confirmation_times_cache_key(partner.pk))


def moved(booking: Booking, *states: str) -> None:
    previous = booking.events.exclude(to_state="").values_list("to_state", flat=True).last() or ""
    for state in states:
        record_event(booking, f"booking.{state}", actor=Actor.WORKER, from_state=previous, to_state=state)
        previous = state


# --- progress -------------------------------------------------------------------------------------
def test_steps_follow_the_moves_in_the_customers_words(partner):
    booking = BookingFactory(offer=OfferFactory(partner=partner))
    # a submission that never left (back to requested), a timeout, a lookup that found nothing
    moved(booking, S.REQUESTED, S.SUBMITTING, S.REQUESTED, S.SUBMITTING, S.UNKNOWN, S.REQUESTED)
    moved(booking, S.SUBMITTING, S.PENDING_PARTNER, S.CONFIRMED)
    record_event(booking, "webhook.duplicate", actor=Actor.WEBHOOK, summary="R-1 v2 again")

    progress = selectors.customer_booking_progress(customer=booking.customer, reference=booking.reference)

    assert [step.label for step in progress.steps] == [
        "Booking received",
        "Sent to the partner",
        "Checking with the partner",
        "Sent to the partner",
        "The partner is confirming",
        "Confirmed by the partner",
    ]
    first_move = booking.events.order_by("occurred_at", "id").first()
    assert progress.steps[0].at == first_move.occurred_at


@pytest.mark.parametrize(
    ("moves", "last_step", "awaiting"),
    [
        ([S.REQUESTED, S.SUBMITTING, S.REJECTED], "Not confirmed: the partner declined", False),
        ([S.REQUESTED, S.EXPIRED], "Not confirmed in time", False),
        ([S.REQUESTED, S.SUBMITTING, S.NEEDS_ATTENTION], "Passed to our support team", True),
        ([S.REQUESTED, S.CONFIRMED, S.CANCEL_REQUESTED], "Cancellation requested", True),
        ([S.REQUESTED, S.CONFIRMED, S.CANCEL_REQUESTED, S.CANCELLED], "Cancelled", False),
    ],
)
def test_the_last_step_and_whether_news_is_awaited(partner, moves, last_step, awaiting):
    booking = BookingFactory(offer=OfferFactory(partner=partner), status=moves[-1])
    moved(booking, *moves)

    progress = selectors.customer_booking_progress(customer=booking.customer, reference=booking.reference)

    assert progress.steps[-1].label == last_step
    assert progress.awaiting_news is awaiting


@pytest.mark.parametrize(
    ("end", "last_step"),
    [
        ([S.CANCEL_REQUESTED, S.CANCELLED], "Cancelled"),
        ([S.REJECTED], "Not confirmed: the partner declined"),
        ([S.EXPIRED], "Not confirmed in time"),
    ],
)
def test_support_taking_up_an_ended_booking_adds_no_step(partner, end, last_step):
    # given a booking that ended, shown so
    booking = BookingFactory(offer=OfferFactory(partner=partner), status=end[-1], submission_count=1)
    moved(booking, S.REQUESTED, S.SUBMITTING, S.PENDING_PARTNER, *end)
    before = selectors.customer_booking_progress(customer=booking.customer, reference=booking.reference)

    # when support takes it up for a reservation the partner would not release
    moved(booking, S.NEEDS_ATTENTION)
    progress = selectors.customer_booking_progress(customer=booking.customer, reference=booking.reference)

    # then its customer's steps end as they did: the page is unchanged
    assert progress.steps == before.steps and progress.steps[-1].label == last_step
    assert progress.version == before.version


def test_the_version_changes_exactly_when_what_the_customer_sees_changes(partner):
    booking = BookingFactory(offer=OfferFactory(partner=partner), status=S.SUBMITTING)
    moved(booking, S.REQUESTED, S.SUBMITTING)

    def version() -> str:
        return selectors.customer_booking_progress(
            customer=booking.customer, reference=booking.reference
        ).version

    before = version()
    record_event(booking, "partner.attempt.started", actor=Actor.WORKER)  # nothing the customer sees
    assert version() == before
    moved(booking, S.PENDING_PARTNER)
    Booking.objects.filter(pk=booking.pk).update(status=S.PENDING_PARTNER)
    assert version() != before


def test_progress_is_the_customers_own(partner):
    booking = BookingFactory(offer=OfferFactory(partner=partner))

    with pytest.raises(NotFound):
        selectors.customer_booking_progress(customer=UserFactory(), reference=booking.reference)


def test_confirm_by_is_the_deadline_while_it_is_ahead(partner):
    ahead = BookingFactory(offer=OfferFactory(partner=partner))
    passed = BookingFactory(offer=ahead.offer, deadline=timezone.now() - timedelta(seconds=1))

    assert selectors.BookingProgress(booking=ahead, steps=()).confirm_by == ahead.deadline
    assert selectors.BookingProgress(booking=passed, steps=()).confirm_by is None


@pytest.mark.parametrize(
    ("status", "message", "money", "awaits"),
    [
        ("pending", "received", "", True),
        ("pending", "partner_confirming", "held", True),
        ("pending", "taking_longer", "", True),
        ("pending", "with_support", "", False),  # support settles it, no deadline expires it
        ("pending", "releasing", "", False),
        ("pending", "checking_payment", "authorizing", False),
        ("confirmed", "confirmed", "held", False),
        ("cancelling", "cancelling", "", False),
    ],
)
def test_only_a_booking_waiting_for_the_partner_to_confirm_awaits_its_confirmation(
    partner, status, message, money, awaits
):
    told = {"code": money, "currency": "EUR", "amount": "1", "charged": "0", "refunded": "0"} if money else {}
    booking = BookingFactory.build(customer_status=status, customer_message=message, customer_money=told)

    assert selectors.BookingProgress(booking=booking, steps=()).awaits_partner_confirmation is awaits


# --- how long the partner usually takes -----------------------------------------------------------
def confirmed_after(partner, seconds: float, *, days_ago: int = 0) -> Booking:
    """A booking of the partner's, confirmed `seconds` after it was requested, `days_ago`."""
    booking = BookingFactory(offer=OfferFactory(partner=partner), status=S.CONFIRMED)
    confirmed_at = timezone.now() - timedelta(days=days_ago)
    Booking.objects.filter(pk=booking.pk).update(created_at=confirmed_at - timedelta(seconds=seconds))
    event = new_event(booking, "booking.confirmed", actor=Actor.WEBHOOK, to_state=S.CONFIRMED)
    event.occurred_at = confirmed_at
    event.save(force_insert=True)
    return booking


def test_median_and_90th_percentile_over_the_partners_recent_confirmations(partner):
    for seconds in (5, 10, 15, 20, 25, 30, 35, 40, 45, 300):
        confirmed_after(partner, seconds)
    confirmed_after(PartnerFactory(code=unique_code("sel")), 9999)  # another partner's

    times = selectors.partner_confirmation_times(partner_id=partner.pk)

    assert times.enough_data
    assert times.samples == 10
    assert round(times.median.total_seconds()) == 28  # (25 + 30) / 2
    assert round(times.p90.total_seconds()) == 45  # the 9th of 10
    assert times.window == timedelta(days=7)


def test_too_few_confirmations_are_not_enough_data(partner):
    for seconds in range(1, selectors.CONFIRMATION_TIMES_MIN_SAMPLES):
        confirmed_after(partner, seconds)

    times = selectors.partner_confirmation_times(partner_id=partner.pk)

    assert times.samples == selectors.CONFIRMATION_TIMES_MIN_SAMPLES - 1
    assert not times.enough_data and times.median is None and times.p90 is None


def test_only_the_last_seven_days_count(partner):
    for seconds in range(1, selectors.CONFIRMATION_TIMES_MIN_SAMPLES):
        confirmed_after(partner, seconds)
    confirmed_after(partner, 60, days_ago=8)

    assert selectors.partner_confirmation_times(partner_id=partner.pk).samples == (
        selectors.CONFIRMATION_TIMES_MIN_SAMPLES - 1
    )


def test_a_booking_confirmed_twice_counts_once(partner):
    twice = confirmed_after(partner, 10)
    record_event(twice, "booking.confirmed", actor=Actor.SUPPORT, to_state=S.CONFIRMED)
    for seconds in range(1, selectors.CONFIRMATION_TIMES_MIN_SAMPLES - 1):
        confirmed_after(partner, seconds)

    times = selectors.partner_confirmation_times(partner_id=partner.pk)

    assert times.samples == selectors.CONFIRMATION_TIMES_MIN_SAMPLES - 1


def test_figures_are_cached_for_every_process(partner, django_assert_num_queries):
    confirmed_after(partner, 10)
    first = selectors.partner_confirmation_times(partner_id=partner.pk)
    confirmed_after(partner, 20)

    with django_assert_num_queries(0):
        again = selectors.partner_confirmation_times(partner_id=partner.pk)

    assert again == first and again.samples == 1


# --- a reference, however typed ---------------------------------------------------------------
def test_a_reference_is_one_case_only_so_any_case_names_one_booking(db):
    # Booking.objects.with_reference reads a reference in any case; were references ever made
    # with lower-case letters too, two bookings could differ by case alone.
    from bookings.models import REFERENCE_ALPHABET, new_reference

    assert not any(c.islower() for c in REFERENCE_ALPHABET)
    booking = BookingFactory()
    assert booking.reference == booking.reference.upper() and new_reference().isupper()
    assert Booking.objects.with_reference(f" {booking.reference.lower()} ").get() == booking


def test_a_reference_the_database_cannot_hold_names_no_booking(db):
    # A NUL (`%00` in a URL) or a lone surrogate: PostgreSQL's text holds neither, and comparing
    # one with a reference was a DataError (a 500 on the API, its streams and the pages). It names
    # no booking, as any other unknown reference.
    booking = BookingFactory()

    for typed in (f"{booking.reference}\x00", "\x00", f"{booking.reference}\ud800"):
        assert list(Booking.objects.with_reference(typed)) == []
        with pytest.raises(NotFound):
            selectors.customer_booking(customer=booking.customer, reference=typed)
