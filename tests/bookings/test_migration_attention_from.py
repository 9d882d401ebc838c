"""Migration bookings/0023: a booking with support when `attention_from` came gets the state its
latest move into `needs_attention` came from; no other row is written."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.db import connection
from django.utils import timezone

from tests.bookings.test_migration_customer_view import migrator  # noqa: F401 (a fixture)

BEFORE = ("bookings", "0022_attention_from")
AFTER = ("bookings", "0023_attention_from_backfill")


def row_version(pk) -> int | None:
    """The row's xmin: it changes with every UPDATE of the row, whatever the UPDATE wrote. SQLite
    keeps no such version (None): the PostgreSQL run proves which rows were written."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT xmin::text::bigint FROM bookings_booking WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_bookings_with_support_at_the_deploy_get_where_support_got_them(migrator):  # noqa: F811
    apps = migrator(BEFORE)
    customer = apps.get_model("auth", "User").objects.create(username="attention-customer")
    partner = apps.get_model("partners", "Partner").objects.create(
        code="attention", name="A", adapter="reference", base_url="http://x.test"
    )
    offer = apps.get_model("bookings", "Offer").objects.create(
        partner=partner, product_id="p", unit_price=Decimal(10), currency="EUR", capacity=2
    )
    Booking = apps.get_model("bookings", "Booking")
    BookingEvent = apps.get_model("bookings", "BookingEvent")
    start = timezone.now().date() + timedelta(days=30)
    moved_at = timezone.now() - timedelta(minutes=5)
    # (status, its moves in order) -> attention_from after the migration
    cases = {
        "cancelled, then support": (
            "needs_attention",
            [
                ("confirmed", "cancel_requested"),
                ("cancel_requested", "cancelled"),
                ("cancelled", "needs_attention"),
            ],
            "cancelled",
        ),
        "expired, then support": (
            "needs_attention",
            [("pending_partner", "expired"), ("expired", "needs_attention")],
            "expired",
        ),
        "support from pending": (
            "needs_attention",
            [("submitting", "pending_partner"), ("pending_partner", "needs_attention")],
            "pending_partner",
        ),
        "support twice, the latest counts": (
            "needs_attention",
            [
                ("pending_partner", "needs_attention"),
                ("needs_attention", "rejected"),
                ("rejected", "needs_attention"),
            ],
            "rejected",
        ),
        "no move to support on its timeline": ("needs_attention", [], ""),
        "left support": (
            "cancelled",
            [("cancelled", "needs_attention"), ("needs_attention", "cancelled")],
            "",
        ),
        "never with support": ("confirmed", [("pending_partner", "confirmed")], ""),
    }
    made = {}
    for n, (name, (status, moves, _)) in enumerate(cases.items()):
        booking = Booking.objects.create(
            reference=f"BK-ATTN{n}",
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
        # Rows after the last move that are not moves (support's note names the state it is in).
        BookingEvent.objects.create(booking=booking, kind="customer.view_changed", actor="worker")
        BookingEvent.objects.create(
            booking=booking,
            kind="support.note",
            actor="support",
            from_state=status,
            to_state=status,
        )
        made[name] = booking.pk
    versions = {name: row_version(pk) for name, pk in made.items()}

    apps = migrator(AFTER)

    Booking = apps.get_model("bookings", "Booking")
    got = {name: Booking.objects.get(pk=pk).attention_from for name, pk in made.items()}
    assert got == {name: expected for name, (*_, expected) in cases.items()}
    untouched = {name for name, (*_, expected) in cases.items() if not expected}
    if connection.vendor == "postgresql":
        assert {name for name, pk in made.items() if row_version(pk) == versions[name]} == untouched
