"""Migration bookings/0021: a cancel that stood when `cancel_asked_at` came is kept on the booking
(still under way, or with support because it did not complete); no other booking gets one."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from tests.bookings.test_migration_customer_view import migrator  # noqa: F401 (a fixture)

BEFORE = ("bookings", "0020_cancel_asked_at")
AFTER = ("bookings", "0021_cancel_asked_backfill")


def test_cancels_standing_at_the_deploy_are_kept(migrator):  # noqa: F811
    apps = migrator(BEFORE)
    customer = apps.get_model("auth", "User").objects.create(username="asked-customer")
    partner = apps.get_model("partners", "Partner").objects.create(
        code="asked", name="A", adapter="reference", base_url="http://x.test"
    )
    offer = apps.get_model("bookings", "Offer").objects.create(
        partner=partner, product_id="p", unit_price=Decimal(10), currency="EUR", capacity=2
    )
    Booking = apps.get_model("bookings", "Booking")
    BookingEvent = apps.get_model("bookings", "BookingEvent")
    start = timezone.now().date() + timedelta(days=30)
    moved_at = timezone.now() - timedelta(minutes=5)
    # (status, its moves in order, shown confirmed) -> whether the cancel stands after the migration
    cases = {
        "cancelling": ("cancel_requested", [("pending_partner", "cancel_requested")], False, True),
        "cancel with support": (
            "needs_attention",
            [("pending_partner", "cancel_requested"), ("cancel_requested", "needs_attention")],
            False,
            True,
        ),
        "support for another reason": (
            "needs_attention",
            [
                ("pending_partner", "cancel_requested"),
                ("cancel_requested", "pending_partner"),
                ("pending_partner", "needs_attention"),
            ],
            False,
            False,
        ),
        "confirmed first (disrupted)": (
            "needs_attention",
            [("confirmed", "cancel_requested"), ("cancel_requested", "needs_attention")],
            True,
            False,
        ),
        "never cancelled": ("pending_partner", [("submitting", "pending_partner")], False, False),
    }
    made = {}
    for n, (name, (status, moves, confirmed_shown, _)) in enumerate(cases.items()):
        booking = Booking.objects.create(
            reference=f"BK-ASKED{n}",
            customer=customer,
            offer=offer,
            partner=partner,
            start_date=start,
            end_date=start + timedelta(days=2),
            guests=1,
            total_price=Decimal(360),
            currency="EUR",
            status=status,
            status_changed_at=moved_at,
            confirmed_shown_at=moved_at if confirmed_shown else None,
            deadline=timezone.now(),
        )
        for i, (source, target) in enumerate(moves):
            BookingEvent.objects.create(
                booking=booking,
                kind="booking.moved",
                actor="worker",
                from_state=source,
                to_state=target,
                occurred_at=moved_at - timedelta(seconds=len(moves) - i),
            )
        # A row of the view after the last move: not a move, so it does not hide which was last.
        BookingEvent.objects.create(booking=booking, kind="customer.view_changed", actor="worker")
        made[name] = booking.pk

    apps = migrator(AFTER)

    Booking = apps.get_model("bookings", "Booking")
    asked = {name: Booking.objects.get(pk=pk).cancel_asked_at for name, pk in made.items()}
    assert {name: at is not None for name, at in asked.items()} == {
        name: stands for name, (*_, stands) in cases.items()
    }
    assert asked["cancelling"] == moved_at
    assert asked["cancel with support"] == moved_at
