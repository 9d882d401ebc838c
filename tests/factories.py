"""factory-boy factories. They may set any state directly (fixtures only, never production)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.authtoken.models import Token

from bookings.models import Booking, Offer
from bookings.states import BookingState
from partners.models import Partner


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"customer{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("pw-customer-123")


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
    status = BookingState.REQUESTED
    deadline = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=30))
