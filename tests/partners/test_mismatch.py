"""Partner terms that differ from the booking's (invariant 6): the rule as a table, the one door
applying it, and a real sandbox partner's silent amendment found by the audit and handed over."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.test import override_settings

from bookings.models import BookingEvent
from bookings.states import BookingState
from partners import decisions
from partners.connectors.base import Terms
from partners.decisions import MismatchStep, TermsDifference, on_mismatch, terms_differences
from partners.models import ObservationResult, PartnerReservation, Source
from partners.services.observations import observation_apply
from partners.services.submission import submission_run
from partners.services.sync import booking_sync
from reconciliation.services.sweeper import sweep
from tests.helpers import wait_until
from tests.partners.conftest import book, snapshot, timeline, wait_for_status

S = BookingState
OURS = Terms(
    start_date=date(2027, 3, 1),
    end_date=date(2027, 3, 4),
    guests=2,
    total_price=Decimal("360.00"),
    currency="EUR",
)


# --- the rule --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partner", "expected"),
    [
        (OURS, ()),
        (Terms(), ()),  # an answer without terms (a legacy create) differs from nothing
        (replace(OURS, total_price=Decimal("360.0")), ()),  # money compared as Decimal
        (replace(OURS, total_price=Decimal("360")), ()),
        (Terms(guests=2), ()),  # only what the partner stated is compared
        (
            replace(OURS, total_price=Decimal("385.00")),
            (TermsDifference("total_price", Decimal("360.00"), Decimal("385.00")),),
        ),
        (replace(OURS, currency="USD"), (TermsDifference("currency", "EUR", "USD"),)),
        (replace(OURS, guests=3), (TermsDifference("guests", 2, 3),)),
        (
            replace(OURS, start_date=date(2027, 3, 3), end_date=date(2027, 3, 6)),
            (
                TermsDifference("start_date", date(2027, 3, 1), date(2027, 3, 3)),
                TermsDifference("end_date", date(2027, 3, 4), date(2027, 3, 6)),
            ),
        ),
        (
            Terms(total_price=Decimal("360.01")),
            (TermsDifference("total_price", Decimal("360.00"), Decimal("360.01")),),
        ),
    ],
    ids=[
        "same",
        "none stated",
        "360.0",
        "360",
        "some stated",
        "price",
        "currency",
        "guests",
        "dates",
        "a cent",
    ],
)
def test_terms_differences(partner: Terms, expected: tuple[TermsDifference, ...]) -> None:
    assert terms_differences(OURS, partner) == expected


@pytest.mark.parametrize(
    ("state", "reason", "step"),
    [
        (S.CONFIRMED, "", MismatchStep.HAND_OVER),
        (S.PENDING_PARTNER, "", MismatchStep.HAND_OVER),
        (S.SUBMITTING, "", MismatchStep.HAND_OVER),
        (S.UNKNOWN, "", MismatchStep.HAND_OVER),
        (S.NEEDS_ATTENTION, "compensation_failed", MismatchStep.RECORD),
        (S.NEEDS_ATTENTION, decisions.PARTNER_MISMATCH, MismatchStep.NONE),
        (S.REQUESTED, "", MismatchStep.NONE),
        (S.CANCEL_REQUESTED, "", MismatchStep.NONE),
        (S.CANCELLED, "", MismatchStep.NONE),
        (S.EXPIRED, "", MismatchStep.NONE),
        (S.FAILED, "", MismatchStep.NONE),
        (S.REJECTED, "", MismatchStep.NONE),
    ],
)
def test_on_mismatch(state: str, reason: str, step: MismatchStep) -> None:
    assert on_mismatch(state, reason) == step


# --- the one door ------------------------------------------------------------------------------


def stating(ref: str, status: str = "confirmed", *, version: int | None = 1, **terms) -> object:
    return replace(snapshot(ref, status, version=version), terms=replace(OURS, **terms))


def booked(make_booking, partner, status=S.SUBMITTING, **fields):
    return make_booking(
        partner,
        status,
        start_date=OURS.start_date,
        end_date=OURS.end_date,
        guests=OURS.guests,
        total_price=OURS.total_price,
        currency=OURS.currency,
        **fields,
    )


def apply(partner, snap, booking, source=Source.LOOKUP):
    return observation_apply(
        partner=partner, snapshot=snap, source=source, actor="worker", booking_id=booking.pk
    )


def mismatch_rows(booking) -> list[BookingEvent]:
    return list(BookingEvent.objects.filter(booking=booking, kind="partner.mismatch").order_by("id"))


def test_a_confirmed_booking_whose_price_the_partner_changed_goes_to_support_with_the_diff(
    ref_partner, make_booking
):
    booking = booked(make_booking, ref_partner)
    apply(ref_partner, stating("R-1", version=1), booking, source=Source.RESPONSE)

    apply(ref_partner, stating("R-1", version=2, total_price=Decimal("385.00")), booking)

    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_mismatch")
    assert booking.attention_detail == (
        "The partner's terms for R-1 differ from the booking's: total_price ours 360.00, partner 385.00"
    )
    (row,) = mismatch_rows(booking)
    assert row.data["differences"] == {"total_price": {"ours": "360.00", "partner": "385.00"}}
    assert timeline(booking)[-3:] == [
        "partner.observation.applied",
        "partner.mismatch",
        "booking.needs_attention",
    ]
    reservation = PartnerReservation.objects.get()
    assert (reservation.total_price, reservation.version) == (Decimal("385.00"), 2)


def test_the_same_terms_written_otherwise_change_nothing(ref_partner, make_booking):
    booking = booked(make_booking, ref_partner)

    apply(ref_partner, stating("R-1", total_price=Decimal("360.0")), booking, source=Source.RESPONSE)

    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.CONFIRMED, "")
    assert mismatch_rows(booking) == []


def test_a_pending_reservation_on_other_terms_is_handed_over_before_it_confirms(ref_partner, make_booking):
    booking = booked(make_booking, ref_partner)

    apply(ref_partner, stating("R-1", "pending", guests=3), booking, source=Source.RESPONSE)

    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_mismatch")
    assert [r.data["differences"] for r in mismatch_rows(booking)] == [
        {"guests": {"ours": "2", "partner": "3"}}
    ]


def test_a_stale_observation_on_other_terms_is_not_compared(ref_partner, make_booking):
    booking = booked(make_booking, ref_partner)
    apply(ref_partner, stating("R-1", version=3), booking, source=Source.RESPONSE)

    observed = apply(ref_partner, stating("R-1", version=2, guests=5), booking)

    assert observed.result == ObservationResult.STALE
    booking.refresh_from_db()
    assert (booking.status, mismatch_rows(booking)) == (S.CONFIRMED, [])


def test_a_duplicate_being_cancelled_is_not_compared(ref_partner, make_booking):
    booking = booked(make_booking, ref_partner)
    apply(ref_partner, stating("R-1", version=1), booking, source=Source.RESPONSE)

    apply(ref_partner, stating("R-2", "pending", version=1, guests=4), booking)  # made by a second create

    booking.refresh_from_db()
    assert PartnerReservation.objects.get(partner_ref="R-2").compensation_reason == "duplicate"
    assert (booking.status, mismatch_rows(booking)) == (S.CONFIRMED, [])


def test_a_booking_already_with_support_gets_the_diff_on_its_timeline_only(ref_partner, make_booking):
    booking = booked(make_booking, ref_partner, S.NEEDS_ATTENTION, attention_reason="compensation_failed")
    PartnerReservation.objects.create(
        partner=ref_partner,
        partner_ref="R-1",
        booking=booking,
        status="confirmed",
        version=1,
        learned_from="response",
    )

    apply(ref_partner, stating("R-1", version=2, currency="USD"), booking)

    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "compensation_failed")
    assert [r.data["differences"] for r in mismatch_rows(booking)] == [
        {"currency": {"ours": "EUR", "partner": "USD"}}
    ]


def test_a_legacy_amendment_is_a_duplicate_status_with_new_terms_and_is_still_handed_over(
    legacy_partner, make_booking
):
    # Legacy has no versions: an amendment shows only as a later `modified` and the echoed terms.
    booking = booked(make_booking, legacy_partner)
    first = replace(stating("551230", version=None), raw={})
    apply(legacy_partner, first, booking, source=Source.RESPONSE)
    amended = replace(
        stating("551230", version=None, start_date=date(2027, 3, 2), end_date=date(2027, 3, 5)),
        modified_at=first.modified_at + timedelta(minutes=1),
    )

    observed = apply(legacy_partner, amended, booking, source=Source.LISTING)

    assert observed.result == ObservationResult.DUPLICATE
    reservation = PartnerReservation.objects.get()
    assert (reservation.start_date, reservation.end_date) == (date(2027, 3, 2), date(2027, 3, 5))
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_mismatch")


# --- a real partner's silent amendment -----------------------------------------------------------


def amendment(h, booking) -> dict:
    """The ground truth's `amend` entry for the booking's reservation, once it happened."""

    def find():
        for reservation in h.truth(booking):
            for change in reservation["history"]:
                if change["cause"] == "amend":
                    return change
        return None

    return wait_until(find, what=f"the partner to amend {booking.reference}")


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_a_silent_amendment_is_found_by_the_audit_and_handed_over_with_the_partners_diff(
    harness, partner_worker, profile
):
    # Given a partner that changes every confirmed reservation's terms just after confirming it,
    # and tells nobody (no webhook)
    h = harness(profile)
    h.faults(amend_rate=1)
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.CONFIRMED)
    changes = amendment(h, booking)["changes"]

    # When the sweeper's audit of confirmed bookings reads it again
    with override_settings(RECONCILE_AUDIT_AGE_S=0):
        sweep()
    wait_for_status(booking, S.NEEDS_ATTENTION)

    # Then support has it, with what we have and what the partner has, field by field
    booking.refresh_from_db()
    assert booking.attention_reason == "partner_mismatch"
    (row,) = mismatch_rows(booking)
    wire = {
        "start_date": "start_date",
        "end_date": "end_date",
        "guests": "guests",
        "total_price": "total_price",
    }
    if profile == "legacy":
        wire = {"from": "start_date", "to": "end_date", "pax": "guests", "amount": "total_price"}
    expected = {wire[name]: {"ours": str(c["old"]), "partner": str(c["new"])} for name, c in changes.items()}
    assert row.data["differences"] == expected
    assert h.live(booking)  # still held at the partner, on its terms: support decides


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_a_sync_of_a_confirmed_booking_on_our_terms_changes_nothing(harness, profile):
    # The audit is a read: a partner that agrees leaves the booking confirmed, no mismatch row.
    h = harness(profile)
    booking = book(h)

    submission_run(booking.pk)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED

    booking_sync(booking.pk)

    booking.refresh_from_db()
    assert (booking.status, mismatch_rows(booking)) == (S.CONFIRMED, [])
    assert "sync.completed" in timeline(booking)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_failed_audit_read_keeps_the_bookings_place_at_the_front_of_the_audit(harness):
    # The audit is a queue by the last time we learned a booking's truth: a read that failed
    # taught nothing, so it must not send the booking to the back for another round.
    h = harness("reference")
    booking = book(h)
    submission_run(booking.pk)
    h.faults(error_5xx_rate=1)

    booking_sync(booking.pk)

    booking.refresh_from_db()
    assert (booking.status, booking.last_synced_at) == (S.CONFIRMED, None)
    assert "sync.failed" in timeline(booking)

    h.faults(error_5xx_rate=0)
    booking_sync(booking.pk)

    booking.refresh_from_db()
    assert booking.last_synced_at is not None


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_sync_of_a_booking_not_yet_sent_does_not_put_off_its_submission(harness):
    # A booking whose submission is owed (its message lost while our Redis was down, say) is
    # submitted by the sweeper once its check is due. Support's sync finds nothing at the partner
    # and, before, set that check two sync ages later: the first submission waited minutes more.
    h = harness("reference")
    booking = book(h)
    booking.refresh_from_db()
    due = booking.next_check_at
    assert booking.status == S.REQUESTED and due is not None

    booking_sync(booking.pk)

    booking.refresh_from_db()
    assert booking.status == S.REQUESTED
    assert booking.next_check_at <= due
