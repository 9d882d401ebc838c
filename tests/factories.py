"""factory-boy factories. They may set any state directly (fixtures only, never production)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token

from bookings.cancelling import money_words
from bookings.customer_money import Money
from bookings.customer_view import Facts, View, derive
from bookings.models import Booking, Notification, NotificationKind, Offer, Quote
from bookings.states import TERMINAL_STATES, BookingState, CustomerMessage
from partners.models import (
    InboundEvent,
    InboundState,
    Operation,
    Outcome,
    Partner,
    PartnerAttempt,
    PartnerReservation,
    ReservationStatus,
    Source,
)

PASSWORD = "pw-customer-123"  # every user's, to log in with


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"customer{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password(PASSWORD)


class TokenFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Token

    user = factory.SubFactory(UserFactory)


class PartnerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Partner
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"partner-{n}")
    name = factory.LazyAttribute(lambda p: p.code.title())
    adapter = "reference"
    base_url = "http://127.0.0.1:9"
    api_key = "test-key"
    capabilities = factory.LazyFunction(
        lambda: ["idempotency_keys", "lookup_by_reference", "webhooks", "async_confirmation"]
    )
    webhook_secret = "whsec_dGVzdC1zZWNyZXQtMDEyMzQ1Njc4OWFiY2RlZg=="
    connect_timeout_s = 1.0
    read_timeout_s = 2.0


class OfferFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Offer

    partner = factory.SubFactory(PartnerFactory)
    product_id = factory.Sequence(lambda n: f"hotel-{n}-dbl")
    name = factory.LazyAttribute(lambda o: f"Room {o.product_id}")
    unit_price = Decimal("120.00")
    currency = "EUR"
    capacity = 4


def _shown(booking) -> View:
    with_support = booking.status == BookingState.NEEDS_ATTENTION
    facts = Facts(
        confirmed_shown=booking.confirmed_shown_at is not None,
        attention_reason=booking.attention_reason,
        ended_as=booking.attention_from if with_support and booking.attention_from in TERMINAL_STATES else "",
    )
    return derive(booking.status, facts)


class BookingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Booking

    customer = factory.SubFactory(UserFactory)
    offer = factory.SubFactory(OfferFactory)
    partner = factory.LazyAttribute(lambda b: b.offer.partner)
    start_date = factory.LazyFunction(lambda: timezone.now().date() + timedelta(days=30))
    end_date = factory.LazyAttribute(lambda b: b.start_date + timedelta(days=3))
    guests = 2
    total_price = Decimal("360.00")
    currency = "EUR"
    # Kept from the offer, as booking_create keeps them.
    free_cancellation_hours = factory.LazyAttribute(lambda b: b.offer.free_cancellation_hours)
    cancellation_fee_percent = factory.LazyAttribute(lambda b: b.offer.cancellation_fee_percent)
    status = BookingState.REQUESTED
    deadline = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=30))
    attention_reason = ""
    attention_from = ""
    # Shown as the contract derives it for the state, with nothing held at the partner.
    confirmed_shown_at = factory.LazyAttribute(
        lambda b: timezone.now() if b.status == BookingState.CONFIRMED else None
    )
    customer_status = factory.LazyAttribute(lambda b: _shown(b).status)
    customer_message = factory.LazyAttribute(lambda b: _shown(b).message)


class QuoteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Quote

    customer = factory.SubFactory(UserFactory)
    offer = factory.SubFactory(OfferFactory)
    start_date = factory.LazyFunction(lambda: timezone.now().date() + timedelta(days=30))
    end_date = factory.LazyAttribute(lambda q: q.start_date + timedelta(days=3))
    guests = 2
    total_price = Decimal("300.00")
    currency = "EUR"
    free_cancellation_hours = factory.LazyAttribute(lambda q: q.offer.free_cancellation_hours)
    cancellation_fee_percent = factory.LazyAttribute(lambda q: q.offer.cancellation_fee_percent)
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=15))


class NotificationFactory(factory.django.DjangoModelFactory):
    """A mail owed about a booking's current version (its message not queued anywhere)."""

    class Meta:
        model = Notification

    booking = factory.SubFactory(BookingFactory, status=BookingState.CONFIRMED)
    status_version = factory.LazyAttribute(lambda n: n.booking.status_version)
    kind = NotificationKind.CONFIRMED
    message = CustomerMessage.CONFIRMED
    money = factory.LazyFunction(dict)
    # The money's words as `customer_view.save_row` keeps them: as the booking's page says them.
    money_words = factory.LazyAttribute(
        lambda n: money_words(n.booking, Money.from_json(n.money)) if n.money else ""
    )


class PartnerReservationFactory(factory.django.DjangoModelFactory):
    """A reservation the partner holds for a booking (an orphan: `booking=None` and a partner)."""

    class Meta:
        model = PartnerReservation

    booking = factory.SubFactory(BookingFactory)
    partner = factory.LazyAttribute(lambda r: r.booking.partner)
    partner_ref = factory.Sequence(lambda n: f"R-{n:06d}")
    client_reference = factory.LazyAttribute(lambda r: r.booking.reference if r.booking else "")
    status = ReservationStatus.CONFIRMED
    version = 1
    learned_from = Source.RESPONSE


class PartnerAttemptFactory(factory.django.DjangoModelFactory):
    """A finished call to the partner for a booking; `fence=True`: an ambiguous create nobody has
    resolved, started `age` ago (ten minutes unless told), which fences the booking."""

    class Meta:
        model = PartnerAttempt

    class Params:
        age = timedelta(0)
        fence = factory.Trait(outcome=Outcome.AMBIGUOUS, age=timedelta(minutes=10))

    booking = factory.SubFactory(BookingFactory)
    partner = factory.LazyAttribute(lambda a: a.booking.partner)
    operation = Operation.CREATE
    outcome = Outcome.OK
    idempotency_key = factory.LazyAttribute(lambda a: a.booking.partner_key)
    started_at = factory.LazyAttribute(lambda a: timezone.now() - a.age)


class InboundEventFactory(factory.django.DjangoModelFactory):
    """A verified webhook delivery, processed unless told otherwise."""

    class Meta:
        model = InboundEvent

    partner = factory.SubFactory(PartnerFactory)
    event_id = factory.Sequence(lambda n: f"msg_{n:010d}")
    raw_body = b'{"type": "reservation.updated"}'
    headers = factory.LazyAttribute(lambda e: {"webhook-id": e.event_id})
    signature_valid = True
    state = InboundState.PROCESSED
