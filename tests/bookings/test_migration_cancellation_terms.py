"""Migration bookings/0015: quotes and bookings keep cancellation terms; those made before it get
their offer's, and a process still on the code before it (a rolling deploy) can still insert."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from tests.bookings.test_migration_customer_view import migrator  # noqa: F401 (a fixture)

BEFORE = ("bookings", "0014_offer_currency_iso4217")
AFTER = ("bookings", "0015_stay_keeps_its_cancellation_terms")


def test_existing_bookings_keep_their_offer_s_terms_and_old_inserts_still_work(migrator):  # noqa: F811
    apps = migrator(BEFORE)
    customer = apps.get_model("auth", "User").objects.create(username="terms-customer")
    partner = apps.get_model("partners", "Partner").objects.create(
        code="terms", name="T", adapter="reference", base_url="http://x.test"
    )
    offer = apps.get_model("bookings", "Offer").objects.create(
        partner=partner,
        product_id="p",
        unit_price=Decimal(10),
        currency="EUR",
        capacity=2,
        free_cancellation_hours=72,
        cancellation_fee_percent=Decimal("30"),
    )
    start = timezone.now().date() + timedelta(days=30)
    booking = apps.get_model("bookings", "Booking").objects.create(
        reference="BK-TERMS1",
        customer=customer,
        offer=offer,
        partner=partner,
        start_date=start,
        end_date=start + timedelta(days=2),
        guests=1,
        total_price=Decimal(20),
        currency="EUR",
        status="confirmed",
        deadline=timezone.now(),
    )

    apps = migrator(AFTER)

    kept = apps.get_model("bookings", "Booking").objects.get(pk=booking.pk)
    assert (kept.free_cancellation_hours, kept.cancellation_fee_percent) == (72, Decimal("30.00"))
    now = timezone.now()
    with connection.cursor() as cursor:  # an insert that names no terms, as the code before did
        cursor.execute(
            "INSERT INTO bookings_quote (id, customer_id, offer_id, start_date, end_date, guests,"
            " total_price, currency, expires_at, created_at)"
            " VALUES (%s, %s, %s, %s, %s, 1, 20, 'EUR', %s, %s)",
            ["0a4d6e6c4c2e4b0e9d1f3a5b7c9e1f20", customer.pk, offer.pk, start, start, now, now],
        )
    quote = apps.get_model("bookings", "Quote").objects.get()
    assert (quote.free_cancellation_hours, quote.cancellation_fee_percent) == (24, Decimal("0.00"))
