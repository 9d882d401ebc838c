"""Invariant 5 against real partners: extra reservations are cancelled at the partner, verified,
recorded; a failed compensation goes to needs_attention (a stray duplicate of a booking that
keeps its own reservation, to a case of its own, the booking left as it is); a reservation no
booking wants (an orphan, found by webhook or by the legacy change listing) is cancelled, never
forgotten; a booking that expires has whatever the partner holds for it cancelled."""

from __future__ import annotations

import dataclasses
import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.db import connection
from django.db.models import F
from django.urls import reverse
from django.utils import timezone

from bookings import cancelling, ports
from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Actor, Booking, Notification
from bookings.services import booking_request_cancel
from bookings.states import BookingState
from partners import messages
from partners.connectors import connector_for
from partners.connectors.http import longest_call_s
from partners.models import (
    Capability,
    Operation,
    OrphanCase,
    OrphanCaseState,
    OrphanFinding,
    PartnerAttempt,
    PartnerReservation,
    ReservationRole,
    ReservationStatus,
    Source,
)
from partners.services import backoff
from partners.services.compensation import booking_cancel_run, reservation_compensate
from partners.services.handover import hand_to_reconciliation
from partners.services.listing import change_listing_walk
from partners.services.observations import observation_apply, request_compensation_again
from partners.services.submission import submission_run
from partners.services.sync import booking_sync
from payments.decisions import owed
from payments.services.runs import booking_facts
from reconciliation.selectors.orphans import orphan_case_row, orphan_queue
from reconciliation.selectors.timeline import booking_timeline
from reconciliation.services import support
from reconciliation.services.sweeper import booking_due_run, sweep
from tests.factories import PartnerAttemptFactory
from tests.helpers import wait_until
from tests.partners.conftest import (
    IS_POSTGRES,
    assert_at_rest,
    book,
    partner_status,
    status_of,
    timeline,
    wait_for_status,
)
from tests.sandbox.conftest import reference_body

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


@pytest.mark.parametrize("released_by", ["support", "partner"])
def test_a_duplicate_the_partner_will_not_cancel_leaves_the_confirmed_booking_as_it_is(
    harness, partner_worker, settings, admin_client, admin_user, released_by
):
    # given a confirmed booking, as its customer was shown and mailed it, paying with a fee to cancel
    h = keys_only_partner_that_ignores_them(harness)
    settings.PARTNER_COMPENSATION_MAX_TRIES = 2
    booking = book(h)
    Booking.objects.filter(pk=booking.pk).update(
        customer_money=money_of(
            PaymentFacts(state="held", currency="EUR", amount=Decimal("360.00"))
        ).as_json(),
        free_cancellation_hours=60 * 24,  # its stay is 40 days ahead: a quarter of the price to cancel
        cancellation_fee_percent=Decimal("25"),
    )
    partner_worker(h.partner)
    wait_until(lambda: h.truth(booking), what="the first create to commit")
    h.faults(timeout_after_commit_rate=0)
    wait_for_status(booking, S.CONFIRMED)
    h.faults(rate_limit_rate=1)  # before the duplicate is learned of (its webhook is 2.5 s late)
    booking.refresh_from_db()
    shown = (booking.customer_status, booking.customer_message, booking.status_version)
    mails = Notification.objects.filter(booking=booking).count()
    fee = cancelling.fee_if_cancelled(booking, at=timezone.now())
    assert shown[0] == "confirmed" and fee == booking.total_price / 4

    # when the retry's duplicate is refused its cancel (429) through every try
    wait_until(
        lambda: (
            status_of(booking) != S.CONFIRMED
            or OrphanCase.objects.filter(reservation__booking=booking, automation="cancel_failed").exists()
        ),
        timeout_s=25,
        what="the duplicate's compensation to give up",
    )

    # then the customer's booking is what it was: confirmed, shown and numbered as before, nothing
    # mailed, its cancel offered with its fee, the price owed
    assert_no_call_out(booking)
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.CONFIRMED, "")
    assert (booking.customer_status, booking.customer_message, booking.status_version) == shown
    assert Notification.objects.filter(booking=booking).count() == mails
    assert booking.customer_may_cancel
    assert cancelling.fee_if_cancelled(booking, at=timezone.now()) == fee
    assert owed(booking_facts(booking)) == booking.total_price
    # the stray is support's: a flagged case (on the booking's timeline too), in the console
    duplicate = PartnerReservation.objects.get(booking=booking, role=ReservationRole.DUPLICATE)
    assert (duplicate.compensation_reason, duplicate.compensated_at) == ("duplicate", None)
    assert [r["status"] for r in h.live(booking)] == ["confirmed", "confirmed"]
    case = OrphanCase.objects.get(reservation=duplicate)
    assert (case.flagged, case.opened_because) == (True, OrphanFinding.DUPLICATE)
    kinds = timeline(booking)
    assert "partner.compensation.failed" in kinds and "booking.needs_attention" not in kinds
    failed = booking.events.get(kind="partner.compensation.failed")
    assert failed.data["orphan_case"] == case.pk and f"{booking.reference} stays confirmed" in failed.summary
    assert [(c.pk, c.flag_order) for c in orphan_queue(partner=h.partner)] == [(case.pk, 0)]
    assert orphan_case_row(case)["duplicate_of"] == booking.reference
    queue = admin_client.get(reverse("admin:partners_orphancase_changelist")).content.decode()
    assert duplicate.partner_ref in queue and "duplicate of <a" in queue
    page = admin_client.get(reverse("admin:partners_orphancase_change", args=[case.pk])).content.decode()
    assert f"{booking.reference}</a>'s reservation" in page
    operator = support.Operator.for_user(admin_user)
    link = support.orphan_preview(support.ORPHAN_LINK, case, operator=operator, live=False)
    assert not link.allowed and "a duplicate of its reservation" in link.refusal
    # nothing re-sends its cancel while the partner holds it live: support has it
    settings.RECONCILE_SYNC_AGE_S = settings.PARTNER_RETRY_MAX_S = 0
    assert sweep(dry_run=True, partner=h.partner).compensations_requeued == 0

    # when it is released at last: support cancels it again, or the partner lets it go itself
    h.faults(rate_limit_rate=0)
    if released_by == "support":
        support.support_orphan_action_run(
            support.ORPHAN_CANCEL, case_id=case.pk, operator=operator, token=support.new_token()
        )
    else:
        h.sandbox.request("POST", f"/v1/reservations/{duplicate.partner_ref}/cancel").raise_for_status()
        wait_until(
            lambda: PartnerReservation.objects.get(pk=duplicate.pk).status == "cancelled",
            what="the partner's news of it",
        )
        assert sweep(partner=h.partner).compensations_requeued == 1  # to be verified

    # then the verified cancel closes the case; the booking is still what it was
    wait_until(
        lambda: OrphanCase.objects.get(pk=case.pk).state == "closed", what="the verified cancel to close it"
    )
    case.refresh_from_db()
    assert (case.closed_because, case.automation) == ("cancel_verified", "cancel_verified")
    assert_at_rest(h, booking, S.CONFIRMED)
    booking.refresh_from_db()
    assert (booking.customer_status, booking.customer_message, booking.status_version) == shown
    assert Notification.objects.filter(booking=booking).count() == mails
    assert timeline(booking)[-1] != "booking.needs_attention"
    assert PartnerReservation.objects.get(pk=duplicate.pk).compensated_at is not None


def test_a_confirmed_bookings_stray_is_taken_up_by_its_customers_cancel(harness, partner_worker, settings):
    # given a confirmed booking, charged, with a fee to cancel, whose retry's duplicate the partner
    # refused to cancel (429) through every try: a flagged case, the booking as it was
    h = keys_only_partner_that_ignores_them(harness)
    settings.PARTNER_COMPENSATION_MAX_TRIES = 2
    booking = book(h)
    price = booking.total_price
    Booking.objects.filter(pk=booking.pk).update(
        customer_money=money_of(PaymentFacts("charged", "EUR", price, price, Decimal("0.00"))).as_json(),
        free_cancellation_hours=60 * 24,  # its stay is 40 days ahead: a quarter of the price to cancel
        cancellation_fee_percent=Decimal("25"),
    )
    partner_worker(h.partner)
    wait_until(lambda: h.truth(booking), what="the first create to commit")
    h.faults(timeout_after_commit_rate=0)
    wait_for_status(booking, S.CONFIRMED)
    h.faults(rate_limit_rate=1)
    wait_until(
        lambda: OrphanCase.objects.filter(reservation__booking=booking, automation="cancel_failed").exists(),
        timeout_s=25,
        what="the duplicate's compensation to give up",
    )
    assert_no_call_out(booking)
    case = OrphanCase.objects.get(reservation__booking=booking)
    booking.refresh_from_db()
    fee = price / 4
    assert cancelling.cancel_money(booking, at=timezone.now()).outcome == cancelling.Outcome.REFUND_LESS_FEE
    assert cancelling.fee_told(booking, at=timezone.now()) == fee
    mails = Notification.objects.filter(booking=booking).count()

    # when the partner takes cancels again and the customer cancels, confirming the fee shown
    h.faults(rate_limit_rate=0)
    booking = booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER, expected_fee=fee)
    assert booking.customer_status == "cancelling"

    # then the cancel takes the stray up: its case closes, the partner is asked to cancel it again
    # (tries of its own), and the booking ends cancelled with its fee, nothing live at the partner
    wait_for_status(booking, S.CANCELLED, timeout_s=25)
    assert_at_rest(h, booking, S.CANCELLED)
    assert h.live(booking) == []
    assert_taken_up(booking, case)
    duplicate = PartnerReservation.objects.get(booking=booking, role=ReservationRole.DUPLICATE)
    wait_until(  # the booking ends on the cancel's answer; its verifying read follows
        lambda: PartnerReservation.objects.get(pk=duplicate.pk).compensated_at is not None,
        what="the stray's cancel to be verified",
    )
    duplicate.refresh_from_db()
    cancels = PartnerAttempt.objects.filter(reservation=duplicate, operation=Operation.CANCEL)
    assert cancels.filter(outcome="ok", started_at__gte=duplicate.compensation_requested_at).exists()
    booking.refresh_from_db()
    assert (booking.customer_status, booking.cancellation_fee) == ("cancelled", fee)
    assert owed(booking_facts(booking)) == fee  # the payment side refunds the rest
    assert Notification.objects.filter(booking=booking).count() == mails + 1
    assert "booking.needs_attention" not in timeline(booking)


def pending_with_a_stray_in_a_case(h, settings) -> tuple[Booking, PartnerReservation]:
    """A booking the partner holds pending (it confirms half a minute later), and a second
    reservation for it there, learned by a lookup, whose cancel the partner refused (429) through
    its one try: the stray is support's flagged case, the booking left as it was."""
    settings.PARTNER_COMPENSATION_MAX_TRIES = 1
    h.faults(async_confirm_delay_s=30)
    booking = book(h)
    submission_run(booking.pk)
    assert status_of(booking) == S.PENDING_PARTNER
    made = h.sandbox.request("POST", "/v1/reservations", json=reference_body(booking.reference)).json()
    observation_apply(
        partner=h.partner,
        snapshot=connector_for(h.partner).get(made["id"]).reservation,
        source=Source.LOOKUP,
        actor=Actor.WORKER,
    )
    duplicate = PartnerReservation.objects.get(partner_ref=made["id"])
    assert (duplicate.booking_id, duplicate.role) == (booking.pk, ReservationRole.DUPLICATE)
    h.faults(rate_limit_rate=1)
    reservation_compensate(duplicate.pk)
    h.faults(rate_limit_rate=0)
    return booking, duplicate


def assert_taken_up(booking: Booking, case: OrphanCase) -> None:
    """The stray's case closed as its booking's move (a cancel, an end, to support) took it up,
    saying so."""
    case.refresh_from_db()
    assert (case.state, case.closed_because) == ("closed", "taken_up")
    event = case.events.get(kind="orphan.taken_up")
    assert event.data["booking"] == booking.reference and booking.reference in event.summary


def test_a_pending_bookings_stray_duplicate_is_supports_case_until_its_booking_is_cancelled(
    harness, settings
):
    # given a pending booking whose stray's cancel gave up
    h = harness("reference")
    booking, duplicate = pending_with_a_stray_in_a_case(h, settings)

    # then the booking goes on waiting for the partner as it was; the stray is support's case
    booking.refresh_from_db()
    assert (booking.status, booking.customer_status) == (S.PENDING_PARTNER, "pending")
    assert OrphanCase.objects.get(reservation=duplicate).flagged
    assert timeline(booking)[-1] == "partner.compensation.failed"
    settings.RECONCILE_SYNC_AGE_S = settings.PARTNER_RETRY_MAX_S = 0
    assert sweep(dry_run=True, partner=h.partner).compensations_requeued == 0

    # when the customer cancels it: the cancel takes the stray up (its case closes) and asks the
    # partner to cancel it again with tries of its own, spent while the booking did not need it
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    booking_cancel_run(booking.pk)
    assert_taken_up(booking, OrphanCase.objects.get(reservation=duplicate))
    own = PartnerReservation.objects.get(booking=booking, role=ReservationRole.PRIMARY)
    reservation_compensate(own.pk)
    assert status_of(booking) == S.CANCEL_REQUESTED
    reservation_compensate(duplicate.pk)  # its message, as the worker would take it

    # then the partner cancels it, and the customer's cancel completes: nothing is with support
    assert h.live(booking) == []
    booking.refresh_from_db()
    assert (booking.status, booking.customer_status) == (S.CANCELLED, "cancelled")
    assert not OrphanCase.objects.filter(state="open").exists()


def test_a_cancel_held_up_by_a_stray_whose_message_was_lost_is_sent_again(harness, settings):
    # given a pending booking whose stray's case its customer's cancel took up, the stray's
    # message lost: the booking waits cancel_requested while the stray is live
    h = harness("reference")
    booking, duplicate = pending_with_a_stray_in_a_case(h, settings)
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    booking_cancel_run(booking.pk)
    reservation_compensate(PartnerReservation.objects.get(booking=booking, role=ReservationRole.PRIMARY).pk)
    assert status_of(booking) == S.CANCEL_REQUESTED

    # and time passes, with production's windows: nothing touched the stray for an hour
    settings.PARTNER_RETRY_MAX_S, settings.RECONCILE_SYNC_AGE_S = 300.0, 60
    hour = timedelta(hours=1)
    PartnerAttempt.objects.filter(booking=booking).update(started_at=F("started_at") - hour)
    PartnerReservation.objects.filter(pk=duplicate.pk).update(
        compensation_requested_at=F("compensation_requested_at") - hour
    )
    assert sweep(dry_run=True, partner=h.partner).compensations_requeued == 1

    # when the open booking's sync reads it, as it does every minute or so
    booking_sync(booking.pk)
    booking.refresh_from_db()
    quiet = timedelta(seconds=settings.PARTNER_RETRY_MAX_S + settings.RECONCILE_SYNC_AGE_S)
    assert booking.next_check_at - timezone.now() < quiet

    # then the sync's read is no try of the compensation: it is still sent again
    assert sweep(dry_run=True, partner=h.partner).compensations_requeued == 1


def test_a_stray_taken_up_by_a_cancel_whose_partner_still_refuses_is_the_bookings_one_support_item(
    harness, settings, admin_user
):
    # given a pending booking whose stray's cancel gave up, then cancelled by its customer
    h = harness("reference")
    booking, duplicate = pending_with_a_stray_in_a_case(h, settings)
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    booking_cancel_run(booking.pk)
    reservation_compensate(PartnerReservation.objects.get(booking=booking, role=ReservationRole.PRIMARY).pk)

    # when the partner refuses the stray's cancel through its fresh tries too
    h.faults(rate_limit_rate=1)
    reservation_compensate(duplicate.pk)

    # then support has the booking (a cancel that did not complete), and no case beside it
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "compensation_failed")
    assert (booking.customer_status, booking.customer_message) == ("cancelling", "cancel_with_support")
    assert not OrphanCase.objects.filter(state="open").exists()
    assert list(orphan_queue(partner=h.partner)) == []

    # when support cancels it on the customer's behalf, the partner now taking it
    h.faults(rate_limit_rate=0)
    operator = support.Operator.for_user(admin_user)
    support.support_action_run(
        support.CANCEL, booking_id=booking.pk, operator=operator, token=support.new_token()
    )
    reservation_compensate(duplicate.pk)

    # then the customer's cancel completes
    assert h.live(booking) == []
    assert status_of(booking) == S.CANCELLED


def test_a_pending_bookings_end_takes_its_stray_up(harness, settings):
    # given a pending booking whose stray's cancel gave up
    h = harness("reference")
    booking, duplicate = pending_with_a_stray_in_a_case(h, settings)
    own = PartnerReservation.objects.get(booking=booking, role=ReservationRole.PRIMARY)

    # when the partner rejects the booking's own reservation
    held = connector_for(h.partner).get(own.partner_ref).reservation
    observation_apply(
        partner=h.partner,
        snapshot=dataclasses.replace(
            held,
            status=ReservationStatus.REJECTED,
            version=(held.version or 0) + 1,
            modified_at=timezone.now(),
        ),
        source=Source.LOOKUP,
        actor=Actor.WORKER,
    )

    # then the end takes the stray up: its case closes, and the partner is asked to cancel it again
    assert status_of(booking) == S.REJECTED
    assert_taken_up(booking, OrphanCase.objects.get(reservation=duplicate))
    reservation_compensate(duplicate.pk)
    assert duplicate.partner_ref not in [r["id"] for r in h.live(booking)]
    assert PartnerReservation.objects.get(pk=duplicate.pk).compensated_at is not None
    assert status_of(booking) == S.REJECTED


def confirmed_with_a_stray_in_a_case(h, settings) -> tuple[Booking, PartnerReservation, OrphanCase]:
    """A confirmed booking, and a second reservation for it at the partner, learned by a lookup,
    whose cancel the partner refused (429) through its one try: the stray is support's flagged
    case, the booking left as it was. The partner still answers 429."""
    settings.PARTNER_COMPENSATION_MAX_TRIES = 1
    booking = book(h)
    submission_run(booking.pk)
    assert status_of(booking) == S.CONFIRMED
    made = h.sandbox.request("POST", "/v1/reservations", json=reference_body(booking.reference)).json()
    observation_apply(
        partner=h.partner,
        snapshot=connector_for(h.partner).get(made["id"]).reservation,
        source=Source.LOOKUP,
        actor=Actor.WORKER,
    )
    duplicate = PartnerReservation.objects.get(partner_ref=made["id"])
    assert (duplicate.booking_id, duplicate.role) == (booking.pk, ReservationRole.DUPLICATE)
    h.faults(rate_limit_rate=1)
    reservation_compensate(duplicate.pk)  # its message, as the worker would take it
    case = OrphanCase.objects.get(reservation=duplicate)
    assert case.flagged and status_of(booking) == S.CONFIRMED
    return booking, duplicate, case


def hand_to_support(h, booking: Booking, settings, moved_by: str) -> None:
    """Move a confirmed booking to needs_attention outside `reconcile_booking`: its worker's
    hand-over after its give-ups, or the partner's different terms for its own reservation."""
    if moved_by == "worker_gave_up":
        settings.PARTNER_ACTOR_GIVE_UPS_MAX = 1
        hand_to_reconciliation(str(booking.pk), actor_name=messages.SYNC_BOOKING, error="poison")
        return
    own = PartnerReservation.objects.get(booking=booking, role=ReservationRole.PRIMARY)
    held = connector_for(h.partner).get(own.partner_ref).reservation
    observation_apply(
        partner=h.partner,
        snapshot=dataclasses.replace(
            held,
            terms=dataclasses.replace(held.terms, guests=booking.guests + 1),
            version=(held.version or 0) + 1,
            modified_at=timezone.now(),
        ),
        source=Source.LOOKUP,
        actor=Actor.WORKER,
    )


@pytest.mark.parametrize("moved_by", ["worker_gave_up", "partner_mismatch"])
def test_a_stray_is_taken_up_when_its_booking_goes_to_support_by_any_move(
    harness, partner_worker, settings, moved_by
):
    # given a confirmed booking whose stray's cancel gave up: support's flagged case; the partner
    # takes cancels again, and a worker runs
    h = harness("reference")
    booking, duplicate, case = confirmed_with_a_stray_in_a_case(h, settings)
    h.faults(rate_limit_rate=0)
    partner_worker(h.partner)

    # when the booking goes to support by a move the one door's reconciling does not make
    hand_to_support(h, booking, settings, moved_by)

    # then the move takes the stray up: one item for support (the booking), the stray's case
    # closed and its cancel asked again at once, after the move on the booking's timeline
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, moved_by)
    assert_taken_up(booking, case)
    assert list(orphan_queue(partner=h.partner)) == []
    moved = booking.events.get(kind="booking.needs_attention")
    asked = booking.events.get(kind="partner.compensation.requested", data__orphan_case=case.pk)
    assert moved.pk < asked.pk
    assert f"as {booking.reference} is needs_attention" in asked.summary

    # and the worker has the partner cancel the stray: the booking stays with support
    wait_until(
        lambda: PartnerReservation.objects.get(pk=duplicate.pk).compensated_at is not None,
        timeout_s=25,
        what="the stray's cancel asked again to be verified",
    )
    assert [r["id"] for r in h.live(booking)] == [
        PartnerReservation.objects.get(booking=booking, role=ReservationRole.PRIMARY).partner_ref
    ]
    assert status_of(booking) == S.NEEDS_ATTENTION
    assert not OrphanCase.objects.filter(state="open").exists()


def test_a_stray_taken_up_is_supports_case_again_once_its_booking_is_resolved_confirmed(
    harness, settings, admin_user
):
    # given a confirmed booking whose stray's cancel gave up, handed to support by its worker:
    # the move took the stray up (its case closed, its cancel asked again)
    h = harness("reference")
    booking, duplicate, case = confirmed_with_a_stray_in_a_case(h, settings)
    hand_to_support(h, booking, settings, "worker_gave_up")
    assert_taken_up(booking, case)

    # when support resolves the booking back to confirmed (the partner holds it so), and the
    # partner refuses the stray's fresh cancel too
    operator = support.Operator.for_user(admin_user)
    support.support_action_run(
        support.RESOLVE,
        booking_id=booking.pk,
        operator=operator,
        token=support.new_token(),
        outcome=S.CONFIRMED,
        note="the partner holds it confirmed; the worker's failure is fixed",
    )
    assert status_of(booking) == S.CONFIRMED
    reservation_compensate(duplicate.pk)

    # then the stray is support's flagged case again (the booking is going ahead once more), and
    # the booking stays confirmed, its timeline naming the case
    case.refresh_from_db()
    assert (case.state, case.flagged, case.closed_because) == ("open", True, "")
    assert [c.pk for c in orphan_queue(partner=h.partner)] == [case.pk]
    history = list(case.events.values_list("kind", flat=True))
    assert history[-3:] == ["orphan.taken_up", "orphan.reopened", "orphan.cancel_failed"]
    booking.refresh_from_db()
    assert (booking.status, booking.attention_reason) == (S.CONFIRMED, "")
    failed = booking.events.filter(kind="partner.compensation.failed").order_by("-occurred_at", "-id")[0]
    assert failed.data["orphan_case"] == case.pk and f"{booking.reference} stays confirmed" in failed.summary
    assert timeline(booking)[-1] == "partner.compensation.failed"


@pytest.mark.parametrize("action", ["orphan_cancel", "orphan_close"])
def test_supports_cancel_or_close_of_a_strays_case_is_on_its_bookings_timeline(
    harness, settings, admin_user, action
):
    # given a confirmed booking whose stray's cancel gave up: support's flagged case
    h = harness("reference")
    booking, duplicate, case = confirmed_with_a_stray_in_a_case(h, settings)
    h.faults(rate_limit_rate=0)

    # when support cancels the stray at the partner, or closes its case with a note
    operator = support.Operator.for_user(admin_user)
    support.support_orphan_action_run(
        action, case_id=case.pk, operator=operator, token=support.new_token(), note="the partner's desk asked"
    )

    # then the booking's timeline says what support did to its duplicate, once, with who did it
    kind = support.ORPHAN_ACTIONS[action]["kind"]
    event = booking.events.get(kind=kind)
    assert (event.actor, event.actor_label) == ("support", operator.label)
    assert event.data["orphan_case"] == case.pk and duplicate.partner_ref in event.summary
    assert (event.from_state, event.to_state) == ("", "")  # not a move of the booking
    rows = [row for row in booking_timeline(booking) if row.kind == kind]
    assert [(row.source, row.source_id) for row in rows] == [("event", event.pk)]
    assert event.data["orphan_case_event_id"] == case.events.get(kind=kind).pk
    if action == "orphan_cancel":  # and its verified cancel follows, on both as before
        reservation_compensate(duplicate.pk)
        assert booking.events.filter(kind="partner.compensation.verified").exists()
        case.refresh_from_db()
        assert case.closed_because == "cancel_verified"
    assert status_of(booking) == S.CONFIRMED


def view_of(booking: Booking) -> tuple:
    booking.refresh_from_db()
    return (booking.status, booking.customer_status, booking.customer_message, booking.status_version)


def assert_no_call_out(booking: Booking) -> None:
    wait_until(
        lambda: not booking.partner_attempts.filter(outcome="in_flight").exists(),
        what="every call to the partner to end",
    )


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


REFERENCE_CANCEL = "POST /v1/reservations/<reservation_id>/cancel"


def cancelling_while_the_partner_refuses(h, settings, *, max_tries: int) -> PartnerReservation:
    """A confirmed booking the customer cancels while the partner answers every call 429 (its
    cancel never happens): the compensation is decided, its first message not yet run."""
    settings.PARTNER_COMPENSATION_MAX_TRIES = max_tries
    booking = book(h)
    submission_run(booking.pk)
    assert status_of(booking) == S.CONFIRMED
    h.faults(rate_limit_rate=1)
    booking_request_cancel(booking_id=booking.pk, actor=Actor.CUSTOMER)
    booking_cancel_run(booking.pk)
    return PartnerReservation.objects.get(booking=booking, compensation_requested_at__isnull=False)


def cancels_received(h) -> int:
    """The partner's own count of the cancel requests it was sent."""
    return h.sandbox.stats()["calls"].get(REFERENCE_CANCEL, 0)


def test_copies_of_a_compensation_never_cancel_past_its_tries(harness, settings):
    """The 10,000-booking chaos run's reservations cancelled 16-17 times against 8 tries: the
    sweeper sends an unverified compensation again while its own chain of retries is still
    alive, and every copy made its cancel before it counted the tries. The budget is taken
    before the call now: one budget for every copy."""
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=2)

    first = reservation_compensate(reservation.pk)  # try 1: refused
    assert first.compensate_after_s is not None  # its chain goes on
    settings.RECONCILE_SYNC_AGE_S = settings.PARTNER_RETRY_MAX_S = 0  # a sweep sends a copy at once
    assert sweep(dry_run=True, partner=h.partner).compensations_requeued == 1  # a copy beside it
    # The chain's follow-up, the sweeper's copy, and a third as another sweep would send.
    for _ in range(3):
        assert reservation_compensate(reservation.pk).compensate_after_s is None

    assert cancels_received(h) == 2
    assert PartnerAttempt.objects.filter(reservation=reservation, operation=Operation.CANCEL).count() == 2
    booking = Booking.objects.get(pk=reservation.booking_id)
    assert (booking.status, booking.attention_reason) == (S.NEEDS_ATTENTION, "compensation_failed")
    detail = f"Could not cancel {reservation.partner_ref} at the partner after 2 tries"
    assert booking.attention_detail.startswith(detail)
    # handed over once: the copies that found the tries spent added nothing
    kinds = timeline(booking)
    assert kinds.count("booking.needs_attention") == 1 and "partner.compensation.failed" not in kinds
    # support's decision to drive it again has tries of its own
    h.faults(rate_limit_rate=0)
    request_compensation_again(reservation)
    assert reservation_compensate(reservation.pk).compensate_after_s is None
    assert cancels_received(h) == 3
    assert PartnerReservation.objects.get(pk=reservation.pk).compensated_at is not None


@pytest.mark.skipif(not IS_POSTGRES, reason="the reservation's row lock is PostgreSQL's")
def test_two_copies_at_once_take_the_last_try_once(harness, settings):
    """Two copies of a compensation running at the same moment: only one may make the last try."""
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=1)
    h.faults(rate_limit_rate=1, latency_ms=[300, 300])  # both copies' calls would overlap
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def copy() -> None:
        try:
            start.wait(timeout=5)
            reservation_compensate(reservation.pk)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=copy) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert errors == []
    assert cancels_received(h) == 1
    assert PartnerAttempt.objects.filter(reservation=reservation, operation=Operation.CANCEL).count() == 1
    assert status_of(reservation.booking) == S.NEEDS_ATTENTION


def test_copies_of_a_compensation_cannot_spend_its_tries_faster_than_their_spacing(harness, settings):
    """Copies of a compensation's message (the sweeper's re-send beside the chain) each found a
    try to take: a partner's minute of refusals could spend the whole budget in seconds. A try
    is taken only once the series' spacing has passed since the last; a copy that comes sooner
    is told when to come back, and the chain itself waits at least that long."""
    settings.PARTNER_RETRY_BASE_S, settings.PARTNER_RETRY_MAX_S = 2.0, 300.0
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=4)

    chain = reservation_compensate(reservation.pk)  # try 1: refused (429)
    assert chain.compensate_after_s >= backoff.spacing_s(1) == 1.0
    copy = reservation_compensate(reservation.pk)  # the sweeper's copy, at once
    assert 0 < copy.compensate_after_s <= 1.0
    assert cancels_received(h) == 1
    assert PartnerAttempt.objects.filter(reservation=reservation, operation=Operation.CANCEL).count() == 1

    # Once the spacing has passed, the next copy takes try 2; the one after it must wait longer.
    earlier = timezone.now() - timedelta(seconds=1.1)
    PartnerReservation.objects.filter(pk=reservation.pk).update(compensation_requested_at=earlier)
    PartnerAttempt.objects.filter(reservation=reservation).update(started_at=earlier)
    assert reservation_compensate(reservation.pk).compensate_after_s >= backoff.spacing_s(2) == 2.0
    assert cancels_received(h) == 2
    assert 1.0 < reservation_compensate(reservation.pk).compensate_after_s <= 2.0
    assert cancels_received(h) == 2
    assert status_of(reservation.booking) == S.CANCEL_REQUESTED  # nothing handed to support


def test_a_compensation_outlasts_the_partners_spell_of_refused_keys(harness, settings):
    """Chaos runs `8bdc75` and `00333d`: a key rotation at the partner (every call answered 401 for a
    while) refused three cancels of one compensation within 3.3 s and support got a booking the
    partner would have cancelled a few seconds later. Spaced, the tries outlast the spell: here a
    2 s spell against 6 tries (cancels) at a 0.5 s base."""
    settings.PARTNER_RETRY_BASE_S, settings.PARTNER_RETRY_MAX_S = 0.5, 300.0
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=6)
    h.faults(rate_limit_rate=0, auth_failure_window_s=[0, 2])  # from now, 2 s of 401s

    follow_up = reservation_compensate(reservation.pk)
    rounds = 1
    while follow_up.compensate_after_s is not None:  # the chain, as its messages would run it
        time.sleep(follow_up.compensate_after_s)
        follow_up = reservation_compensate(reservation.pk)
        rounds += 1

    reservation.refresh_from_db()
    assert reservation.compensated_at is not None, timeline(reservation.booking)
    assert status_of(reservation.booking) == S.CANCELLED
    cancels = PartnerAttempt.objects.filter(reservation=reservation, operation=Operation.CANCEL)
    assert [a.http_status for a in cancels.order_by("started_at")][-1] == 200
    assert 2 <= cancels.count() <= settings.PARTNER_COMPENSATION_MAX_TRIES and rounds >= cancels.count()


def test_the_status_syncs_failed_reads_do_not_spend_a_live_reservations_compensation(harness, settings):
    """Chaos run b7c881: during the partner's spell of 401s the status sync read a duplicate six
    times in ten seconds, each read failing; counted as the compensation's tries, they spent its
    budget after one cancel, and support got a booking the partner would have cancelled. While
    the reservation is live each round makes a cancel, and the cancels are the budget."""
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=2)
    for _ in range(3):  # the sync's reads of it, refused by the partner
        PartnerAttemptFactory(
            partner=h.partner,
            booking=reservation.booking,
            reservation=reservation,
            operation=Operation.GET,
            outcome="permanent",
            http_status=401,
        )
    h.faults(rate_limit_rate=0)

    assert reservation_compensate(reservation.pk).compensate_after_s is None

    reservation.refresh_from_db()
    assert reservation.compensated_at is not None
    assert cancels_received(h) == 1
    assert status_of(reservation.booking) == S.CANCELLED


def test_a_cancel_made_on_the_last_try_is_still_verified_when_a_read_fails(harness, settings):
    """Chaos run 6a3d09: a customer's cancel took the compensation's fifth and last try and the
    partner answered "cancelled"; the verifying GET then got a 500, the failed read was counted
    against the spent budget of cancels, and the booking, cancelled at both ends, went to support
    as a failed compensation. Once nothing is live the verifying reads have their own budget."""
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=2)
    settings.PARTNER_RETRY_MAX_S = 0  # no spacing between tries: the test drives each one
    reservation_compensate(reservation.pk)  # try 1: refused (429)
    h.faults(rate_limit_rate=0)
    # Try 2, the last: the partner cancels it, and we hold it as cancelled (its answer applied).
    assert connector_for(h.partner).cancel(reservation.partner_ref).ok
    PartnerAttemptFactory(
        partner=h.partner, booking=reservation.booking, reservation=reservation, operation=Operation.CANCEL
    )
    PartnerReservation.objects.filter(pk=reservation.pk).update(status=ReservationStatus.CANCELLED)
    h.faults(error_5xx_rate=1)

    retry = reservation_compensate(reservation.pk)  # the verifying read: a 500

    assert retry.compensate_after_s is not None  # read again later, not handed to support
    assert status_of(reservation.booking) == S.CANCEL_REQUESTED
    h.faults(error_5xx_rate=0)
    assert reservation_compensate(reservation.pk).compensate_after_s is None
    reservation.refresh_from_db()
    assert reservation.compensated_at is not None
    assert status_of(reservation.booking) == S.CANCELLED


def test_a_partner_that_keeps_failing_the_verifying_read_hands_the_booking_to_support(harness, settings):
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=2)
    settings.PARTNER_RETRY_MAX_S = 0
    h.faults(rate_limit_rate=0)
    assert connector_for(h.partner).cancel(reservation.partner_ref).ok
    PartnerReservation.objects.filter(pk=reservation.pk).update(status=ReservationStatus.CANCELLED)
    h.faults(error_5xx_rate=1)

    assert reservation_compensate(reservation.pk).compensate_after_s is not None  # read 1
    assert reservation_compensate(reservation.pk).compensate_after_s is None  # read 2: the budget

    assert status_of(reservation.booking) == S.NEEDS_ATTENTION
    assert Booking.objects.get(pk=reservation.booking_id).attention_reason == "compensation_failed"


def test_a_last_cancel_whose_answer_was_lost_is_read_before_support_is_handed_it(harness, settings):
    """Review: the last try's cancel timed out after the partner made it; with the budget spent
    the booking went to support unread, though the partner held it cancelled."""
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=1)
    h.faults(rate_limit_rate=0, timeout_after_commit_rate=1)  # writes only: the read answers

    assert reservation_compensate(reservation.pk).compensate_after_s is None

    reservation.refresh_from_db()
    assert reservation.compensated_at is not None
    assert status_of(reservation.booking) == S.CANCELLED


# The last try's answer: made; or refused because the partner had cancelled it already (an earlier
# cancel whose answer was lost), as the copy that made it would read the partner after either.
@pytest.mark.parametrize("last_answer", ["ok", "permanent"])
def test_a_copy_that_finds_the_last_cancel_made_verifies_it_instead_of_handing_it_to_support(
    harness, settings, last_answer
):
    """Support's cancel drove a cancel that had failed again while an older copy of its message
    was still queued: the new copy made the last try (the partner cancelled it) and the old copy,
    finding the budget spent, handed the booking to support before the new copy's read verified
    it. A copy that finds the last cancel made reads the partner as that copy would."""
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=1)
    h.faults(rate_limit_rate=0)
    # The last try, another copy's: the partner cancels it and its answer is recorded, unverified.
    assert connector_for(h.partner).cancel(reservation.partner_ref).ok
    PartnerAttemptFactory(
        partner=h.partner,
        booking=reservation.booking,
        reservation=reservation,
        operation=Operation.CANCEL,
        outcome=last_answer,
    )

    assert reservation_compensate(reservation.pk).compensate_after_s is None  # the copy that found it spent

    reservation.refresh_from_db()
    assert reservation.compensated_at is not None
    assert status_of(reservation.booking) == S.CANCELLED
    assert cancels_received(h) == 1  # it cancelled nothing more: it read


def test_a_copy_that_finds_the_last_cancel_still_out_comes_back_when_that_call_must_have_ended(
    harness, settings
):
    h = harness("reference")
    reservation = cancelling_while_the_partner_refuses(h, settings, max_tries=1)
    # The last try is another copy's call, out since now.
    PartnerAttemptFactory(
        partner=h.partner,
        booking=reservation.booking,
        reservation=reservation,
        operation=Operation.CANCEL,
        outcome="in_flight",
    )
    call_ends_in = longest_call_s(h.partner)

    back = reservation_compensate(reservation.pk)

    assert back.compensate_after_s == pytest.approx(call_ends_in, abs=0.5)
    assert status_of(reservation.booking) == S.CANCEL_REQUESTED  # not handed to support meanwhile
    assert cancels_received(h) == 0
    # Cut off for good (its worker killed): once the call must have ended, the partner is read;
    # it still holds the reservation live, so support has the booking.
    h.faults(rate_limit_rate=0)
    long_ago = timezone.now() - timedelta(seconds=call_ends_in + 1)
    PartnerReservation.objects.filter(pk=reservation.pk).update(compensation_requested_at=long_ago)
    PartnerAttempt.objects.filter(reservation=reservation, operation=Operation.CANCEL).update(
        started_at=long_ago
    )
    assert reservation_compensate(reservation.pk).compensate_after_s is None
    assert status_of(reservation.booking) == S.NEEDS_ATTENTION
    assert cancels_received(h) == 0


def test_a_case_left_open_beside_a_booking_with_support_by_an_older_process_closes_at_its_sync(
    harness, settings, monkeypatch
):
    """Review: the take-up follows every move (`ports.partner_follows`), but a move made by a
    process of the release before it (a rolling deploy), or a case already in the database, left
    the case open beside a booking with support; a sync closes it, as it did before."""
    h = harness("reference")
    booking, _duplicate, case = confirmed_with_a_stray_in_a_case(h, settings)
    with monkeypatch.context() as old_code:  # an old worker's move: the partner side not told
        old_code.setattr(ports, "partner_follows", lambda *args, **kwargs: None)
        hand_to_support(h, booking, settings, "worker_gave_up")
    case.refresh_from_db()
    assert case.state == OrphanCaseState.OPEN

    booking_sync(booking.pk)

    case.refresh_from_db()
    assert (case.state, case.closed_because) == (OrphanCaseState.CLOSED, "taken_up")
