"""A reservation the partner no longer knows (invariant 6): one 404 is a suspicion, a second,
separate read a while later makes it lost, and a lost reservation is handled as a cancellation
by the partner. The rule as a table, then real sandbox partners that lose reservations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from bookings.states import BookingState
from partners import messages
from partners.decisions import LostVerdict, ReservationView, lost_verdict, reconcile
from partners.models import Operation, PartnerAttempt, PartnerReservation, ReservationStatus
from partners.services.submission import submission_run
from partners.services.sync import booking_sync
from reconciliation.services.sweeper import sweep
from tests.helpers import wait_until
from tests.partners.conftest import book, timeline, transitions, wait_for_status

S = BookingState
T0 = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
APART = timedelta(seconds=30)


# --- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("earlier", "last_seen", "now", "verdict"),
    [
        # a first 404: read again after the whole wait
        (None, T0, T0 + timedelta(minutes=5), LostVerdict(lost=False, read_again_in=APART)),
        # an earlier 404 before we last saw it (a webhook since): it proves nothing
        (
            T0,
            T0 + timedelta(seconds=1),
            T0 + timedelta(minutes=5),
            LostVerdict(lost=False, read_again_in=APART),
        ),
        # two 404s too close together: wait out the rest
        (
            T0,
            T0 - timedelta(seconds=1),
            T0 + timedelta(seconds=10),
            LostVerdict(False, timedelta(seconds=20)),
        ),
        # two separate 404s, far enough apart, both after we last saw it: lost
        (T0, T0 - timedelta(seconds=1), T0 + APART, LostVerdict(lost=True)),
        (T0, T0 - timedelta(hours=6), T0 + timedelta(hours=1), LostVerdict(lost=True)),
    ],
    ids=["first", "seen since", "too close", "apart", "long apart"],
)
def test_lost_verdict(earlier, last_seen, now, verdict) -> None:
    assert lost_verdict(
        not_found_at=now, earlier_not_found_at=earlier, last_seen_at=last_seen, read_apart=APART
    ) == (verdict)


def view(pk: int, status: str, *, compensating: bool = False) -> ReservationView:
    return ReservationView(id=pk, status=status, linked_order=pk, compensating=compensating)


@pytest.mark.parametrize(
    ("state", "reservations", "transition", "reason"),
    [
        (S.CONFIRMED, [view(1, "lost")], "flag_for_attention", "partner_lost_reservation"),
        (S.CONFIRMED, [view(1, "cancelled")], "flag_for_attention", "partner_cancelled_confirmed"),
        # a lost duplicate we were cancelling anyway says nothing about the booking's own
        (
            S.CONFIRMED,
            [view(1, "cancelled"), view(2, "lost", compensating=True)],
            "flag_for_attention",
            "partner_cancelled_confirmed",
        ),
        (S.CONFIRMED, [view(1, "confirmed"), view(2, "lost", compensating=True)], None, ""),
        (S.PENDING_PARTNER, [view(1, "lost")], "fail", "partner_lost_reservation"),
        (S.UNKNOWN, [view(1, "lost")], "fail", "partner_lost_reservation"),
        (S.REQUESTED, [view(1, "lost")], None, ""),  # submitted again: its new create decides
        (S.CANCEL_REQUESTED, [view(1, "lost")], "mark_cancelled", "nothing_live_at_partner"),
    ],
)
def test_reconcile_treats_a_lost_reservation_as_cancelled_by_the_partner(
    state, reservations, transition, reason
):
    plan = reconcile(state, reservations, fenced=False)

    assert (plan.transition, plan.reason, plan.compensate) == (transition, reason, {})


# --- real partners that lose reservations ---------------------------------------------------------


def not_found_reads(booking) -> list[PartnerAttempt]:
    return list(
        PartnerAttempt.objects.filter(booking=booking, operation=Operation.GET, http_status=404).order_by(
            "started_at"
        )
    )


def vanished(h, booking) -> dict:
    return wait_until(
        lambda: next((r for r in h.truth(booking) if r.get("vanished_at") or r.get("vanished")), None),
        what=f"the partner to lose {booking.reference}'s reservation",
    )


@pytest.mark.integration
@pytest.mark.timeout(60)
@pytest.mark.parametrize("profile", ["reference", "legacy"])
def test_a_confirmed_reservation_the_partner_lost_is_read_twice_then_handed_over(
    harness, partner_worker, settings, profile
):
    # Given a confirmed booking whose reservation the partner then loses (404 to every read,
    # no webhook, gone from lookups and listings)
    settings.PARTNER_LOST_RECHECK_S = 0.5
    settings.RECONCILE_AUDIT_AGE_S = 0
    h = harness(profile)
    h.faults(vanish_rate=1, vanish_delay_s=[1, 1])
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.CONFIRMED)
    vanished(h, booking)

    # When the audit reads it (once: the second read is the sync's own follow-up)
    sweep()
    wait_for_status(booking, S.NEEDS_ATTENTION)

    # Then two separate reads, at least the recheck delay apart, found nothing, and only then
    # support got it as lost; nothing was cancelled (nothing is held to cancel)
    booking.refresh_from_db()
    assert booking.attention_reason == "partner_lost_reservation"
    first, second = not_found_reads(booking)
    assert first.pk != second.pk
    assert (second.started_at - first.started_at).total_seconds() >= 0.5
    reservation = PartnerReservation.objects.get(booking=booking)
    assert (reservation.status, reservation.reason) == (ReservationStatus.LOST, "not_found")
    assert reservation.compensation_requested_at is None
    assert not PartnerAttempt.objects.filter(booking=booking, operation=Operation.CANCEL).exists()
    kinds = timeline(booking)
    suspected = kinds.index("sync.completed", kinds.index("booking.confirmed"))
    assert kinds.index("partner.observation.applied", suspected) < kinds.index("booking.needs_attention")
    assert transitions(booking)[-1] == ("confirmed", "needs_attention")


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_pending_reservation_the_partner_lost_fails_the_booking(harness, partner_worker, settings):
    # Given a reservation still pending at the partner (it settles only in an hour) that it loses
    settings.PARTNER_LOST_RECHECK_S = 0.5
    h = harness("reference")
    h.faults(async_confirm_delay_s=3600, vanish_rate=1, vanish_delay_s=[1, 1])
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.PENDING_PARTNER)
    vanished(h, booking)

    # When its status is synced (as the sweeper does for every open booking)
    messages.send_for_booking(messages.SYNC_BOOKING, booking.pk)

    # Then, after a second read, the booking has failed: nothing is held for it any more
    wait_for_status(booking, S.FAILED)
    assert len(not_found_reads(booking)) == 2
    assert [r["id"] for r in h.truth(booking) if not r["vanished_at"]] == []  # nothing else was made
    assert PartnerReservation.objects.get(booking=booking).status == ReservationStatus.LOST


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_one_404_and_nothing_more_leaves_a_confirmed_booking_confirmed(harness, partner_worker, settings):
    # Given a lost reservation, but a recheck far away
    settings.PARTNER_LOST_RECHECK_S = 3600
    h = harness("reference")
    h.faults(vanish_rate=1, vanish_delay_s=[1, 1])
    partner_worker(h.partner)
    booking = book(h)
    wait_for_status(booking, S.CONFIRMED)
    vanished(h, booking)

    # When one sync reads it
    messages.send_for_booking(messages.SYNC_BOOKING, booking.pk)

    # Then one 404 is only a suspicion, said so on the timeline: the booking stays confirmed
    wait_until(lambda: not_found_reads(booking), what="the first read")
    wait_until(lambda: "sync.completed" in timeline(booking)[-1:], what="the sync to finish")
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    sync = booking.events.filter(kind="sync.completed").latest("id")
    assert sync.data["not_found"] == [PartnerReservation.objects.get(booking=booking).partner_ref]
    assert "read again in 3600 s before concluding it is lost" in sync.summary


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_suspected_loss_keeps_its_place_in_the_audit_until_a_read_settles_it(harness, settings):
    # Given a confirmed booking whose reservation the partner has lost
    settings.PARTNER_LOST_RECHECK_S = 0.5
    h = harness("reference")
    h.faults(vanish_rate=1, vanish_delay_s=[1, 1])
    booking = book(h)
    submission_run(booking.pk)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    learned = booking.last_synced_at
    vanished(h, booking)

    # When a read finds it gone (404), and the read that would confirm it is refused (429)
    booking_sync(booking.pk)
    h.faults(rate_limit_rate=1)
    wait_until(
        lambda: timezone.now() >= not_found_reads(booking)[0].started_at + timedelta(seconds=0.5),
        what="the recheck delay",
    )
    booking_sync(booking.pk)

    # Then neither read counts as truth learned: the audit, which reads the bookings whose truth
    # it learned longest ago first, comes back to it at once (the 10,000-booking chaos run lost
    # such a booking for a whole audit round, past its detection window)
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED
    assert booking.last_synced_at == learned
    assert PartnerAttempt.objects.filter(booking=booking, http_status=429).exists()
    # and the next read that gets through settles it: lost, and support has it
    h.faults(rate_limit_rate=0)
    booking_sync(booking.pk)
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_lost_reservation")
    assert booking.last_synced_at is not None and booking.last_synced_at != learned
