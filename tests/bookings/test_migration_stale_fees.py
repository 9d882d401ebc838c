"""Migration bookings/0018: a fee fixed by a cancel that did not complete, left on a booking that
was confirmed again (or failed), is dropped; a fee on the cancel's road is kept."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from tests.bookings.test_migration_customer_view import migrator  # noqa: F401 (a fixture)

BEFORE = ("bookings", "0017_offer_price_unit")
AFTER = ("bookings", "0018_cancellation_fee_only_on_its_cancels_road")


def test_fees_left_off_the_cancel_s_road_are_dropped(migrator):  # noqa: F811
    apps = migrator(BEFORE)
    customer = apps.get_model("auth", "User").objects.create(username="fees-customer")
    partner = apps.get_model("partners", "Partner").objects.create(
        code="fees", name="F", adapter="reference", base_url="http://x.test"
    )
    offer = apps.get_model("bookings", "Offer").objects.create(
        partner=partner, product_id="p", unit_price=Decimal(10), currency="EUR", capacity=2
    )
    Booking = apps.get_model("bookings", "Booking")
    start = timezone.now().date() + timedelta(days=30)
    cases = {
        ("confirmed", ""): None,
        ("failed", ""): None,
        ("needs_attention", "partner_cancelled_confirmed"): None,
        ("needs_attention", "compensation_failed"): Decimal("90.00"),
        ("cancel_requested", ""): Decimal("90.00"),
        ("cancelled", ""): Decimal("90.00"),
    }
    made = {}
    for n, (status, reason) in enumerate(cases):
        made[status, reason] = Booking.objects.create(
            reference=f"BK-FEES{n}",
            customer=customer,
            offer=offer,
            partner=partner,
            start_date=start,
            end_date=start + timedelta(days=2),
            guests=1,
            total_price=Decimal(360),
            currency="EUR",
            status=status,
            attention_reason=reason,
            cancellation_fee=Decimal("90.00"),
            deadline=timezone.now(),
        ).pk

    apps = migrator(AFTER)

    Booking = apps.get_model("bookings", "Booking")
    kept = {case: Booking.objects.get(pk=pk).cancellation_fee for case, pk in made.items()}
    assert kept == cases
