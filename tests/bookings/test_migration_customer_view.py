"""Migration bookings/0007 gives every existing booking the view the contract derives for it, from
the same facts: a confirmation on its timeline, a fence or a reservation still held."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = ("bookings", "0006_fk_indexes_covered_by_composites")
AFTER = ("bookings", "0007_honest_customer_view")


@pytest.fixture
def migrator(transactional_db):
    """Migrate the bookings app to a node (the partner app stays at its latest) and hand back the
    app registry there; the database is migrated to the latest again afterwards."""

    def migrate(node):
        executor = MigrationExecutor(connection)
        targets = [node, *(leaf for leaf in executor.loader.graph.leaf_nodes() if leaf[0] == "partners")]
        executor.migrate(targets)
        return executor.loader.project_state(targets).apps

    yield migrate
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_existing_bookings_get_the_view_the_contract_derives(migrator):
    apps = migrator(BEFORE)
    User = apps.get_model("auth", "User")
    Partner = apps.get_model("partners", "Partner")
    Offer = apps.get_model("bookings", "Offer")
    Booking = apps.get_model("bookings", "Booking")
    BookingEvent = apps.get_model("bookings", "BookingEvent")
    PartnerAttempt = apps.get_model("partners", "PartnerAttempt")
    PartnerReservation = apps.get_model("partners", "PartnerReservation")
    customer = User.objects.create(username="migrated-customer")
    partner = Partner.objects.create(code="migrated", name="M", adapter="reference", base_url="http://x.test")
    offer = Offer.objects.create(
        partner=partner, product_id="p", unit_price=Decimal(10), currency="EUR", capacity=2
    )
    start = timezone.now().date() + timedelta(days=30)

    def booking(reference: str, status: str, **fields):
        return Booking.objects.create(
            reference=reference,
            customer=customer,
            offer=offer,
            partner=partner,
            start_date=start,
            end_date=start + timedelta(days=2),
            guests=1,
            total_price=Decimal(20),
            currency="EUR",
            status=status,
            deadline=timezone.now(),
            **fields,
        )

    booking("BK-REQST1", "requested")
    confirmed = booking("BK-CONFI1", "confirmed")  # no timeline: confirmed since it changed state
    rejected = booking("BK-REJEC1", "rejected")
    expired_fenced = booking("BK-EXPFE1", "expired")
    PartnerAttempt.objects.create(
        partner=partner, booking=expired_fenced, operation="create", outcome="ambiguous"
    )
    failed_held = booking("BK-FAILH1", "failed")
    PartnerReservation.objects.create(
        partner=partner, partner_ref="R-1", booking=failed_held, status="confirmed", learned_from="response"
    )
    taken_away = booking("BK-TAKEN1", "needs_attention", attention_reason="partner_cancelled_confirmed")
    confirmed_at = timezone.now() - timedelta(hours=1)
    BookingEvent.objects.create(
        booking=taken_away,
        kind="booking.confirmed",
        actor="webhook",
        to_state="confirmed",
        occurred_at=confirmed_at,
    )
    BookingEvent.objects.create(
        booking=rejected, kind="booking.rejected", actor="worker", to_state="rejected"
    )

    apps = migrator(AFTER)

    shown = {
        row["reference"]: (row["customer_status"], row["customer_message"], row["status_version"])
        for row in apps.get_model("bookings", "Booking").objects.values(
            "reference", "customer_status", "customer_message", "status_version"
        )
    }
    assert shown == {
        "BK-REQST1": ("pending", "received", 1),
        "BK-CONFI1": ("confirmed", "confirmed", 1),
        "BK-REJEC1": ("failed", "declined", 1),
        "BK-EXPFE1": ("pending", "releasing", 1),
        "BK-FAILH1": ("pending", "releasing", 1),
        "BK-TAKEN1": ("disrupted", "disrupted_partner_cancelled", 1),
    }
    confirmed_shown = dict(
        apps.get_model("bookings", "Booking")
        .objects.exclude(confirmed_shown_at=None)
        .values_list("reference", "confirmed_shown_at")
    )
    assert confirmed_shown == {"BK-TAKEN1": confirmed_at, "BK-CONFI1": confirmed.status_changed_at}
