"""The one door for partner truth (invariant 1): `observation_apply` and `reconcile_booking`."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from bookings.models import Actor
from bookings.services import lock_booking
from bookings.states import BookingState
from partners.models import (
    Capability,
    ObservationResult,
    Outcome,
    PartnerAttempt,
    PartnerObservation,
    PartnerReservation,
    ReservationRole,
    Source,
)
from partners.services.observations import observation_apply, reconcile_booking
from tests.factories import BookingFactory, PartnerAttemptFactory, PartnerFactory, PartnerReservationFactory
from tests.helpers import queued_messages
from tests.partners.conftest import snapshot, timeline, transitions

S = BookingState
T = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def apply(partner, snap, *, booking=None, source=Source.WEBHOOK, attempt=None):
    return observation_apply(
        partner=partner,
        snapshot=snap,
        source=source,
        actor=Actor.WEBHOOK if source == Source.WEBHOOK else Actor.WORKER,
        booking_id=booking.pk if booking is not None else None,
        attempt=attempt,
    )


def reload(obj):
    obj.refresh_from_db()
    return obj


def test_first_answer_creates_and_links_the_reservation_and_confirms(ref_partner, make_booking):
    booking = make_booking(ref_partner, S.SUBMITTING)

    observed = apply(
        ref_partner, snapshot("R-1", "confirmed", version=1), booking=booking, source=Source.RESPONSE
    )

    assert observed.result == ObservationResult.APPLIED
    reservation = PartnerReservation.objects.get()
    assert (reservation.partner_ref, reservation.booking_id, reservation.status, reservation.version) == (
        "R-1",
        booking.pk,
        "confirmed",
        1,
    )
    assert (reservation.role, reservation.learned_from) == (ReservationRole.PRIMARY, Source.RESPONSE)
    assert reload(booking).status == S.CONFIRMED
    assert timeline(booking) == ["partner.observation.applied", "booking.confirmed"]


def test_versions_order_observations_and_late_ones_are_recorded_as_stale(ref_partner, make_booking):
    booking = make_booking(ref_partner, S.SUBMITTING)
    ref = booking.reference

    results = [
        apply(ref_partner, snapshot("R-1", "pending", version=1, client_reference=ref)).result,
        apply(ref_partner, snapshot("R-1", "confirmed", version=3, client_reference=ref)).result,
        apply(ref_partner, snapshot("R-1", "pending", version=2, client_reference=ref)).result,  # late
        apply(ref_partner, snapshot("R-1", "confirmed", version=3, client_reference=ref)).result,  # again
    ]

    assert results == ["applied", "applied", "stale", "duplicate"]
    reservation = PartnerReservation.objects.get()
    assert (reservation.status, reservation.version) == ("confirmed", 3)
    assert reload(booking).status == S.CONFIRMED
    assert transitions(booking) == [("submitting", "pending_partner"), ("pending_partner", "confirmed")]
    assert timeline(booking) == [
        "partner.observation.applied",
        "booking.pending_partner",
        "partner.observation.applied",
        "booking.confirmed",
        "partner.observation.stale",
        "partner.observation.duplicate",
    ]
    assert list(PartnerObservation.objects.values_list("version", "result")) == [
        (1, "applied"),
        (3, "applied"),
        (2, "stale"),
        (3, "duplicate"),
    ]


def test_ignored_observation_changes_nothing_but_is_on_the_timeline(ref_partner, make_booking):
    booking = make_booking(ref_partner, S.SUBMITTING)
    apply(ref_partner, snapshot("R-1", "confirmed", version=2), booking=booking)
    before = PartnerReservation.objects.values().get()

    observed = apply(ref_partner, snapshot("R-1", "pending", version=1), booking=booking)

    after = PartnerReservation.objects.values().get()
    assert observed.result == ObservationResult.STALE
    assert {k: v for k, v in after.items() if k != "last_observed_at"} == {
        k: v for k, v in before.items() if k != "last_observed_at"
    }
    assert reload(booking).status == S.CONFIRMED
    event = booking.events.order_by("-id").first()
    assert (event.kind, event.from_state, event.to_state) == ("partner.observation.stale", "", "")
    assert "ignored (stale)" in event.summary
    assert event.data["version"] == 1 and event.data["result"] == "stale"


def test_legacy_observations_order_by_partner_modified_time(legacy_partner, make_booking):
    booking = make_booking(legacy_partner, S.PENDING_PARTNER)
    ref = booking.reference

    def legacy(status, at):
        return snapshot("551234", status, version=None, client_reference=ref, modified_at=at)

    results = [
        apply(legacy_partner, legacy("pending", T), source=Source.LISTING).result,
        apply(legacy_partner, legacy("cancelled", T + timedelta(seconds=9)), source=Source.LISTING).result,
        apply(legacy_partner, legacy("confirmed", T + timedelta(seconds=5)), source=Source.LISTING).result,
        apply(legacy_partner, legacy("cancelled", T + timedelta(seconds=9)), source=Source.LISTING).result,
    ]

    assert results == ["applied", "applied", "stale", "duplicate"]
    assert PartnerReservation.objects.get().status == "cancelled"
    assert reload(booking).status == S.FAILED  # the partner cancelled a pending booking


def test_a_webhook_links_to_the_booking_by_client_reference(ref_partner, make_booking):
    booking = make_booking(ref_partner, S.SUBMITTING)

    observed = apply(ref_partner, snapshot("R-9", "confirmed", client_reference=booking.reference))

    assert observed.booking == booking
    assert PartnerReservation.objects.get().booking_id == booking.pk
    assert reload(booking).status == S.CONFIRMED


def test_client_reference_of_another_partner_does_not_link(
    ref_partner, legacy_partner, make_booking, broker, clean_queues, django_capture_on_commit_callbacks
):
    booking = make_booking(legacy_partner, S.SUBMITTING)
    clean_queues(ref_partner)

    with django_capture_on_commit_callbacks(execute=True):
        observed = apply(ref_partner, snapshot("R-9", "confirmed", client_reference=booking.reference))

    assert observed.booking is None
    assert reload(booking).status == S.SUBMITTING


def test_orphan_is_kept_and_compensated_after_commit(
    ref_partner, broker, clean_queues, django_capture_on_commit_callbacks
):
    queue = clean_queues(ref_partner)

    observed_from = timezone.now()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        observed = apply(ref_partner, snapshot("R-404", "confirmed", client_reference="BK-NOBODY"))
        # inside the transaction nothing has reached the broker yet
        assert queued_messages(broker, queue) == []
    for callback in callbacks:
        callback()

    reservation = PartnerReservation.objects.get()
    assert observed.booking is None
    assert (reservation.booking_id, reservation.role, reservation.compensation_reason) == (
        None,
        ReservationRole.ORPHAN,
        "orphan",
    )
    assert observed_from <= reservation.compensation_requested_at <= timezone.now()
    assert [(m.actor_name, m.args) for m in queued_messages(broker, queue)] == [
        ("compensate_reservation", (reservation.pk,))
    ]


def test_orphan_compensation_can_be_left_to_support(
    ref_partner, settings, broker, clean_queues, django_capture_on_commit_callbacks
):
    settings.PARTNER_COMPENSATE_ORPHANS = False
    queue = clean_queues(ref_partner)

    with django_capture_on_commit_callbacks(execute=True):
        apply(ref_partner, snapshot("R-404", "confirmed", client_reference="BK-NOBODY"))

    reservation = PartnerReservation.objects.get()
    assert (reservation.role, reservation.compensation_requested_at) == (ReservationRole.ORPHAN, None)
    assert queued_messages(broker, queue) == []


def test_settled_orphan_needs_no_compensation(
    ref_partner, broker, clean_queues, django_capture_on_commit_callbacks
):
    queue = clean_queues(ref_partner)

    with django_capture_on_commit_callbacks(execute=True):
        apply(ref_partner, snapshot("R-404", "cancelled", client_reference="BK-NOBODY"))

    assert PartnerReservation.objects.get().compensation_requested_at is None
    assert queued_messages(broker, queue) == []


def test_duplicate_reservation_is_compensated_after_commit(
    ref_partner, make_booking, broker, clean_queues, django_capture_on_commit_callbacks
):
    booking = make_booking(ref_partner, S.SUBMITTING)
    queue = clean_queues(ref_partner)
    ref = booking.reference
    with django_capture_on_commit_callbacks(execute=True):
        apply(
            ref_partner,
            snapshot("R-1", "confirmed", client_reference=ref),
            source=Source.RESPONSE,
            booking=booking,
        )

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        apply(
            ref_partner,
            snapshot("R-2", "pending", client_reference=ref),
            source=Source.LOOKUP,
            booking=booking,
        )

    first, second = PartnerReservation.objects.order_by("id")
    assert (first.role, first.compensation_requested_at) == (ReservationRole.PRIMARY, None)
    assert (second.role, second.compensation_reason) == (ReservationRole.DUPLICATE, "duplicate")
    assert reload(booking).status == S.CONFIRMED
    assert timeline(booking)[-2:] == ["partner.observation.applied", "partner.compensation.requested"]
    assert len(callbacks) == 1
    assert [(m.actor_name, m.args) for m in queued_messages(broker, queue)] == [
        ("compensate_reservation", (second.pk,))
    ]


def test_same_observation_twice_does_nothing_extra(
    ref_partner, make_booking, broker, clean_queues, django_capture_on_commit_callbacks
):
    booking = make_booking(ref_partner, S.SUBMITTING)
    queue = clean_queues(ref_partner)
    ref = booking.reference
    apply(ref_partner, snapshot("R-1", "confirmed", client_reference=ref), booking=booking)
    with django_capture_on_commit_callbacks(execute=True):
        apply(ref_partner, snapshot("R-2", "confirmed", client_reference=ref), booking=booking)
    events, messages = timeline(booking), queued_messages(broker, queue)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = apply(ref_partner, snapshot("R-2", "confirmed", client_reference=ref), booking=booking)

    assert second.result == ObservationResult.DUPLICATE
    assert callbacks == []
    assert timeline(booking) == [*events, "partner.observation.duplicate"]
    assert queued_messages(broker, queue) == messages
    assert PartnerReservation.objects.count() == 2
    assert reload(booking).status == S.CONFIRMED


def test_confirmed_then_cancelled_at_the_partner_needs_attention(ref_partner, make_booking):
    booking = make_booking(ref_partner, S.SUBMITTING)
    apply(ref_partner, snapshot("R-1", "confirmed", version=1), booking=booking)

    apply(ref_partner, snapshot("R-1", "cancelled", version=2), booking=booking)

    booking = reload(booking)
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "partner_cancelled_confirmed")
    assert transitions(booking)[-1] == ("confirmed", "needs_attention")


@pytest.mark.parametrize("state", [S.EXPIRED, S.FAILED, S.CANCELLED, S.REJECTED])
def test_late_confirmation_for_a_settled_booking_is_compensated(
    ref_partner, make_booking, state, broker, clean_queues, django_capture_on_commit_callbacks
):
    booking = make_booking(ref_partner, state)
    queue = clean_queues(ref_partner)

    with django_capture_on_commit_callbacks(execute=True):
        apply(ref_partner, snapshot("R-1", "confirmed", client_reference=booking.reference))

    reservation = PartnerReservation.objects.get()
    assert reservation.booking_id == booking.pk
    assert reservation.compensation_reason == f"booking_{state}"
    assert reload(booking).status == state
    assert [m.args for m in queued_messages(broker, queue)] == [(reservation.pk,)]


def test_a_live_reservation_resolves_the_fence(ref_partner, make_booking):
    booking = make_booking(ref_partner, S.UNKNOWN)
    fence = PartnerAttemptFactory(booking=booking, fence=True)

    apply(ref_partner, snapshot("R-1", "pending", client_reference=booking.reference))

    fence.refresh_from_db()
    assert (fence.resolved_at is not None, fence.resolution) == (True, "partner_holds_reservation")
    assert reload(booking).status == S.PENDING_PARTNER


def test_a_rejection_while_fenced_concludes_nothing(ref_partner, make_booking):
    booking = make_booking(ref_partner, S.UNKNOWN)
    PartnerAttemptFactory(booking=booking, fence=True)

    apply(ref_partner, snapshot("R-1", "rejected", client_reference=booking.reference))

    assert reload(booking).status == S.UNKNOWN  # another create may have made a live one


def test_nothing_is_queued_from_a_rolled_back_transaction(
    ref_partner, make_booking, broker, clean_queues, django_capture_on_commit_callbacks
):
    booking = make_booking(ref_partner, S.EXPIRED)
    queue = clean_queues(ref_partner)

    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        apply(ref_partner, snapshot("R-1", "confirmed", client_reference=booking.reference))
        raise RuntimeError("rolled back")

    assert callbacks == []
    assert queued_messages(broker, queue) == []
    assert PartnerReservation.objects.count() == 0
    assert timeline(booking) == []


def _concurrently(*targets):
    """Run targets in threads released together; each closes its own connection."""
    barrier = threading.Barrier(len(targets))
    results: list = [None] * len(targets)

    def run(index):
        try:
            barrier.wait(timeout=10)
            results[index] = targets[index]()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            results[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("linked", [True, False], ids=["for-a-booking", "orphan"])
def test_the_same_news_arriving_twice_at_once_is_applied_once(ref_partner, make_booking, linked, settings):
    """A webhook and a call's response racing: one reservation, one applied, one duplicate."""
    settings.PARTNER_COMPENSATE_ORPHANS = False
    booking = make_booking(ref_partner, S.SUBMITTING)
    client_reference = booking.reference if linked else "BK-NOBODY"
    snap = snapshot("R-race", "confirmed", client_reference=client_reference)

    results = _concurrently(*[lambda: apply(ref_partner, snap).result for _ in range(4)])

    assert sorted(results) == ["applied", "duplicate", "duplicate", "duplicate"], results
    assert PartnerReservation.objects.count() == 1
    if linked:
        assert reload(booking).status == S.CONFIRMED
        assert transitions(booking) == [("submitting", "confirmed")]


def test_the_partners_answer_lifts_the_fence_of_an_ended_booking_support_has(db):
    """Review: a booking that expired while its create's outcome was unknown, at a partner we
    cannot ask (webhooks only), is support's (`outcome_unknown_no_lookup`), shown as its end. The
    partner's report of the reservation is its answer to the create: it lifts the fence, and once
    that reservation's cancel is verified the booking returns to its end. With the fence left, it
    waited with support for good (support's resolve is refused while a create is unanswered)."""
    partner = PartnerFactory(capabilities=[Capability.WEBHOOKS])
    booking = BookingFactory(
        partner=partner,
        offer__partner=partner,
        status=S.NEEDS_ATTENTION,
        attention_from=S.EXPIRED,
        attention_reason="outcome_unknown_no_lookup",
    )
    PartnerAttemptFactory(booking=booking, outcome=Outcome.AMBIGUOUS, age=timedelta(minutes=5))
    stray = PartnerReservationFactory(booking=booking)  # the partner's webhook: it made the create

    with transaction.atomic():
        reconcile_booking(lock_booking(booking.pk), actor=Actor.WORKER)

    assert not PartnerAttempt.objects.fencing().filter(booking=booking).exists()
    assert PartnerReservation.objects.get(pk=stray.pk).compensation_requested_at is not None

    # its cancel verified: nothing is held at the partner any more
    PartnerReservation.objects.filter(pk=stray.pk).update(status="cancelled", compensated_at=timezone.now())
    with transaction.atomic():
        reconcile_booking(lock_booking(booking.pk), actor=Actor.WORKER)

    assert reload(booking).status == S.EXPIRED
