"""Invariant 5 against real partners: extra reservations are cancelled at the partner, verified,
recorded; a failed compensation goes to needs_attention; a reservation no booking wants
(an orphan, found by webhook or by the legacy change listing) is cancelled, never forgotten;
a booking that expires has whatever the partner holds for it cancelled."""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from partners.models import Capability, Operation, PartnerAttempt, PartnerReservation
from partners.services.listing import change_listing_walk
from reconciliation.services.sweeper import booking_due_run
from tests.helpers import wait_until
from tests.partners.conftest import assert_at_rest, book, partner_status, status_of, timeline, wait_for_status

S = BookingState
pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def keys_only_partner_that_ignores_them(harness):
    """Registered as honouring keys (no lookup), but the partner ignores them: a retry after a
    timeout makes a second reservation. Compensation must clean it up."""
    h = harness("reference", capabilities=[Capability.IDEMPOTENCY_KEYS, Capability.WEBHOOKS])
    h.faults(timeout_after_commit_rate=1, honour_idempotency_keys=False, webhook_delay_s=[2.5, 2.5])
    return h


def test_duplicate_made_by_a_retry_is_cancelled_at_the_partner_and_verified(harness, partner_worker):
    h = keys_only_partner_that_ignores_them(harness)
    partner_worker(h.partner)

    booking = book(h)
    wait_until(lambda: h.truth(booking), what="the first create to commit")
    h.faults(timeout_after_commit_rate=0)
    wait_until(
        lambda: (
            sorted(partner_status(h, r) for r in h.truth(booking)) == ["cancelled", "confirmed"]
            and PartnerReservation.objects.filter(booking=booking, compensated_at__isnull=False).exists()
        ),
        what="the duplicate to be cancelled and verified",
    )

    assert_at_rest(h, booking, S.CONFIRMED)
    kept, extra = (
        PartnerReservation.objects.filter(booking=booking, status="confirmed").get(),
        PartnerReservation.objects.filter(booking=booking, status="cancelled").get(),
    )
    assert (kept.role, extra.role, extra.compensation_reason) == ("primary", "duplicate", "duplicate")
    kinds = timeline(booking)
    assert kinds.index("partner.compensation.requested") < kinds.index("partner.compensation.verified")
    cancel = PartnerAttempt.objects.get(booking=booking, operation=Operation.CANCEL)
    assert cancel.reservation_id == extra.pk and cancel.outcome == "ok"


def test_a_compensation_that_keeps_failing_goes_to_needs_attention(harness, partner_worker, settings):
    settings.PARTNER_COMPENSATION_MAX_TRIES = 2
    h = keys_only_partner_that_ignores_them(harness)
    partner_worker(h.partner)

    booking = book(h)
    wait_until(lambda: h.truth(booking), what="the first create to commit")
    h.faults(timeout_after_commit_rate=0)
    wait_for_status(booking, S.CONFIRMED)
    h.faults(error_5xx_rate=1)  # from now on the partner fails every call, cancels included

    wait_for_status(booking, S.NEEDS_ATTENTION, timeout_s=20)

    booking.refresh_from_db()
    assert booking.attention_reason == "compensation_failed"
    assert "Could not cancel" in booking.attention_detail
    # shown confirmed before: support is on it, never "pending" again, nothing silently "confirmed"
    assert (booking.customer_status, booking.customer_message) == ("disrupted", "disrupted")
    # never verified (a 5xx may even have come after the partner cancelled it): support decides
    duplicate = PartnerReservation.objects.get(booking=booking, role="duplicate")
    assert (duplicate.compensation_reason, duplicate.compensated_at) == ("duplicate", None)
    assert len(h.live(booking)) in (1, 2)
    assert PartnerAttempt.objects.filter(booking=booking, operation=Operation.CANCEL).count() == 2
    assert timeline(booking)[-1] == "booking.needs_attention"


def test_orphan_found_by_the_legacy_change_listing_is_cancelled(harness, partner_worker):
    h = harness("legacy")
    stray = requests.post(
        f"{h.sandbox.base_url}/api/bookings",
        json={
            "ref": "BK-STRAY2",
            "item": "tour",
            "from": "2027-03-01",
            "to": "2027-03-02",
            "pax": 1,
            "amount": "10.00",
            "ccy": "EUR",
        },
        headers=h.sandbox.auth,
        timeout=5,
    ).json()

    assert change_listing_walk(h.partner.pk) == 1
    # The overlap reads it again: a re-read of what we hold is not news, and writes nothing.
    assert change_listing_walk(h.partner.pk) == 0
    partner_worker(h.partner)  # now the queued compensation runs

    wait_until(lambda: h.sandbox.truth("BK-STRAY2")[0]["state"] == "CXL", what="the orphan's cancel")
    orphan = PartnerReservation.objects.get(partner_ref=str(stray["booking_no"]))
    wait_until(lambda: PartnerReservation.objects.get(pk=orphan.pk).compensated_at, what="verification")
    orphan.refresh_from_db()
    assert (orphan.booking_id, orphan.role, orphan.status) == (None, "orphan", "cancelled")
    assert list(orphan.observations.values_list("source", "result")) == [
        ("listing", "applied"),
        ("response", "applied"),
        ("lookup", "duplicate"),
    ]
    h.partner.refresh_from_db()
    assert h.partner.listing_checkpoint  # it moved


@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_expired_booking_has_what_the_partner_holds_cancelled(harness, partner_worker, profile):
    h = harness(profile)
    h.faults(async_confirm_delay_s=30)  # the partner keeps it pending past our deadline
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.PENDING_PARTNER)

    Booking.objects.filter(pk=booking.pk).update(deadline=timezone.now() - timedelta(seconds=1))
    booking_due_run(booking.pk)  # the sweeper's step for a due booking

    assert status_of(booking) == S.EXPIRED
    wait_until(lambda: h.live(booking) == [], what="the partner's reservation to be cancelled")
    wait_until(
        lambda: PartnerReservation.objects.filter(booking=booking, compensated_at__isnull=False).exists(),
        what="verification",
    )
    assert_at_rest(h, booking, S.EXPIRED)
    reservation = PartnerReservation.objects.get(booking=booking)
    assert reservation.compensation_reason == "booking_expired"
    assert booking.customer_status == "failed"
