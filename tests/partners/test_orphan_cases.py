"""Orphans are cases: the one door opens a case for every live reservation no booking wants
(whether or not automation cancels it), the compensation closes it when the cancel is verified
and flags it when the cancel gives up (the sweeper then leaves it to support), the partner
letting it go closes it, and a booking found for it later links it; every step is a row of the
case's append-only history."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime

import pytest
from django.core.management import call_command
from django.test import Client
from standardwebhooks.webhooks import Webhook

from bookings.models import Actor
from bookings.states import BookingState
from partners.models import (
    OrphanAutomation,
    OrphanCase,
    OrphanCaseEvent,
    OrphanClosing,
    OrphanFinding,
    PartnerReservation,
    ReservationRole,
    Source,
)
from partners.services.listing import change_listing_walk
from partners.services.observations import observation_apply
from reconciliation.services.sweeper import sweep
from tests.helpers import queued_messages, wait_until
from tests.partners.conftest import WEBHOOK_SECRET, snapshot, timeline

S = BookingState


def apply(partner, snap, *, booking=None, source=Source.WEBHOOK):
    return observation_apply(
        partner=partner,
        snapshot=snap,
        source=source,
        actor=Actor.WEBHOOK if source == Source.WEBHOOK else Actor.WORKER,
        actor_label="test",
        booking_id=booking.pk if booking is not None else None,
    )


def history(case: OrphanCase) -> list[str]:
    return list(case.events.order_by("occurred_at", "id").values_list("kind", flat=True))


# --- opening ----------------------------------------------------------------------------------
@pytest.mark.django_db
def test_a_live_orphan_opens_a_case_and_automation_cancels_it(
    ref_partner, broker, clean_queues, django_capture_on_commit_callbacks
):
    queue = clean_queues(ref_partner)

    with django_capture_on_commit_callbacks(execute=True):
        apply(ref_partner, snapshot("R-404", "confirmed", client_reference="BK-NOBODY"))

    case = OrphanCase.objects.select_related("reservation").get()
    assert (case.state, case.opened_because, case.automation) == (
        "open",
        OrphanFinding.UNKNOWN_REFERENCE,
        OrphanAutomation.CANCELLING,
    )
    assert case.reservation.partner_ref == "R-404" and not case.flagged
    opened = case.events.get()
    assert (opened.kind, opened.actor, opened.actor_label) == ("orphan.opened", Actor.WEBHOOK, "test")
    assert opened.summary == (
        "R-404 (confirmed, from the webhook): its client reference BK-NOBODY names no booking of ours; "
        "cancelling it at the partner"
    )
    assert [(m.actor_name, m.args) for m in queued_messages(broker, queue)] == [
        ("compensate_reservation", (case.reservation_id,))
    ]


@pytest.mark.django_db
def test_a_case_is_opened_even_when_automation_leaves_orphans_alone(
    ref_partner, settings, broker, clean_queues, django_capture_on_commit_callbacks
):
    settings.PARTNER_COMPENSATE_ORPHANS = False
    queue = clean_queues(ref_partner)

    with django_capture_on_commit_callbacks(execute=True):
        apply(ref_partner, snapshot("R-405", "pending"), source=Source.LISTING)

    case = OrphanCase.objects.get()
    assert (case.opened_because, case.automation) == (
        OrphanFinding.NO_REFERENCE,
        OrphanAutomation.LEFT_TO_SUPPORT,
    )
    assert case.events.get().summary == (
        "R-405 (pending, from the listing): it carries no client reference; "
        "left to support (orphans are not cancelled)"
    )
    assert PartnerReservation.objects.get().compensation_requested_at is None
    assert queued_messages(broker, queue) == []


@pytest.mark.django_db
def test_seeing_the_orphan_again_opens_no_second_case(
    ref_partner, clean_queues, django_capture_on_commit_callbacks
):
    clean_queues(ref_partner)
    with django_capture_on_commit_callbacks(execute=True):
        apply(ref_partner, snapshot("R-406", "pending", version=1, client_reference="BK-NOBODY"))
        apply(ref_partner, snapshot("R-406", "confirmed", version=2, client_reference="BK-NOBODY"))
        apply(ref_partner, snapshot("R-406", "confirmed", version=2, client_reference="BK-NOBODY"))

    assert OrphanCase.objects.count() == 1
    assert history(OrphanCase.objects.get()) == ["orphan.opened"]


@pytest.mark.django_db
def test_an_orphan_first_seen_settled_needs_no_case(ref_partner, clean_queues):
    clean_queues(ref_partner)

    apply(ref_partner, snapshot("R-407", "cancelled", client_reference="BK-NOBODY"))

    assert PartnerReservation.objects.get().role == ReservationRole.ORPHAN
    assert not OrphanCase.objects.exists()


# --- closing by automation ----------------------------------------------------------------------
@pytest.mark.django_db
def test_the_partner_letting_an_orphan_go_closes_its_case(ref_partner, settings, clean_queues):
    settings.PARTNER_COMPENSATE_ORPHANS = False
    clean_queues(ref_partner)
    apply(ref_partner, snapshot("R-408", "confirmed", version=1))

    apply(ref_partner, snapshot("R-408", "cancelled", version=2))

    case = OrphanCase.objects.get()
    assert (case.state, case.closed_because, case.closed_by) == (
        "closed",
        OrphanClosing.PARTNER_SETTLED,
        "test",
    )
    assert history(case) == ["orphan.opened", "orphan.settled"]
    assert case.events.last().summary == "The partner reports R-408 cancelled; case closed"


@pytest.mark.django_db
def test_a_cancel_answer_alone_does_not_close_the_case_while_ours_is_unverified(
    ref_partner, clean_queues, django_capture_on_commit_callbacks
):
    clean_queues(ref_partner)
    with django_capture_on_commit_callbacks(execute=True):
        apply(ref_partner, snapshot("R-409", "confirmed", version=1))

    # the answer to our own cancel call: only the verifying lookup completes the compensation
    apply(ref_partner, snapshot("R-409", "cancelled", version=2), source=Source.RESPONSE)

    case = OrphanCase.objects.get()
    assert (case.state, case.automation) == ("open", OrphanAutomation.CANCELLING)
    assert history(case) == ["orphan.opened"]


@pytest.mark.django_db
def test_an_orphan_whose_booking_is_found_later_is_linked_and_its_case_closed(
    ref_partner, make_booking, settings, clean_queues, django_capture_on_commit_callbacks
):
    settings.PARTNER_COMPENSATE_ORPHANS = False
    clean_queues(ref_partner)
    booking = make_booking(ref_partner, S.PENDING_PARTNER)
    apply(ref_partner, snapshot("R-411", "pending", version=1, client_reference="BK-ELSEWHERE"))

    # a lookup for the booking answers with this reservation: the one door links it
    with django_capture_on_commit_callbacks(execute=True):
        apply(
            ref_partner,
            snapshot("R-411", "confirmed", version=2, client_reference="BK-ELSEWHERE"),
            booking=booking,
            source=Source.LOOKUP,
        )

    case = OrphanCase.objects.get()
    assert (case.state, case.closed_because, case.booking) == ("closed", OrphanClosing.LINKED, booking)
    assert history(case) == ["orphan.opened", "orphan.linked"]
    booking.refresh_from_db()
    assert booking.status == S.CONFIRMED  # the one door reconciled the booking with it
    assert timeline(booking)[-2:] == ["partner.observation.applied", "booking.confirmed"]


@pytest.mark.django_db
def test_the_history_of_a_case_is_append_only(ref_partner, settings, clean_queues):
    settings.PARTNER_COMPENSATE_ORPHANS = False
    clean_queues(ref_partner)
    apply(ref_partner, snapshot("R-412", "confirmed"))
    event = OrphanCaseEvent.objects.get()

    with pytest.raises(TypeError, match="append-only"):
        OrphanCaseEvent.objects.update(summary="rewritten")
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    with pytest.raises(TypeError, match="append-only"):
        OrphanCaseEvent.objects.all().delete()


# --- against a real partner ----------------------------------------------------------------------


def _stray(h, reference: str) -> dict:
    return h.sandbox.request(
        "POST",
        "/v1/reservations",
        json={
            "client_reference": reference,
            "product_id": "hotel-42-dbl",
            "start_date": "2027-03-01",
            "end_date": "2027-03-04",
            "guests": 2,
            "total_price": "360.00",
            "currency": "EUR",
        },
    ).json()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_orphan_cancelled_and_verified_at_the_partner_closes_its_case(harness, partner_worker):
    h = harness("reference")
    partner_worker(h.partner)

    stray = _stray(h, "BK-STRAY3")  # its webhook tells us of it

    case = wait_until(
        lambda: OrphanCase.objects.filter(reservation__partner_ref=stray["id"], state="closed").first(),
        what="the case to close itself",
    )
    assert h.sandbox.truth("BK-STRAY3")[0]["status"] == "cancelled"
    assert (case.closed_because, case.automation) == (OrphanClosing.CANCEL_VERIFIED, "cancel_verified")
    assert history(case) == ["orphan.opened", "orphan.cancel_verified"]
    assert case.events.last().summary == f"{stray['id']} verified cancelled at the partner; case closed"


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_orphan_the_partner_never_held_closes_saying_so_never_verified_confirmed(harness, partner_worker):
    """Tester's report (F17): a signed webhook for a reservation the partner does not hold; our
    cancel and the verifying read got 404, yet the case said "r_x verified confirmed at the
    partner; case closed" and the reservation stayed `confirmed`."""
    h = harness("reference")
    partner_worker(h.partner)
    raw = json.dumps(
        {
            "type": "reservation.updated",
            "data": {"id": "r_x", "client_reference": "BK-NOPE00", "status": "confirmed", "version": 1},
        }
    )
    event_id, at = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    answer = Client().post(
        f"/partners/{h.partner.code}/webhooks/",
        data=raw,
        content_type="application/json",
        HTTP_WEBHOOK_ID=event_id,
        HTTP_WEBHOOK_TIMESTAMP=str(int(at.timestamp())),
        HTTP_WEBHOOK_SIGNATURE=Webhook(WEBHOOK_SECRET).sign(event_id, at, raw),
    )
    assert answer.status_code == 202

    case = wait_until(
        lambda: OrphanCase.objects.filter(reservation__partner_ref="r_x", state="closed").first(),
        what="the case to close itself",
    )
    assert h.sandbox.truth("BK-NOPE00") == []
    assert (case.closed_because, case.automation) == (OrphanClosing.CANCEL_VERIFIED, "cancel_verified")
    assert history(case) == ["orphan.opened", "orphan.cancel_verified"]
    summary = "r_x: the partner holds nothing live (404 to our cancel and to the read that verified it)"
    assert case.events.last().summary == f"{summary}; case closed"
    reservation = PartnerReservation.objects.get(pk=case.reservation_id)
    assert reservation.status == "lost" and reservation.compensated_at is not None
    out = io.StringIO()
    call_command("orphans", "--all", "--json", stdout=out)
    (row,) = [r for r in json.loads(out.getvalue())["cases"] if r["partner_ref"] == "r_x"]
    assert (row["status"], row["last_step"]) == ("lost", f"{summary}; case closed")


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_an_orphan_whose_cancel_gives_up_is_flagged_and_left_to_support(harness, partner_worker, settings):
    settings.PARTNER_COMPENSATION_MAX_TRIES = 2
    h = harness("legacy")
    stray = h.sandbox.request(
        "POST",
        "/api/bookings",
        json={
            "ref": "BK-STRAY4",
            "item": "tour",
            "from": "2027-03-01",
            "to": "2027-03-02",
            "pax": 1,
            "amount": "10.00",
            "ccy": "EUR",
        },
    ).json()
    assert change_listing_walk(h.partner.pk) == 1  # found by the change listing: its case opens
    h.faults(error_5xx_rate=1)  # from now on the partner fails every call, cancels included
    partner_worker(h.partner)

    case = wait_until(
        lambda: OrphanCase.objects.filter(
            reservation__partner_ref=str(stray["booking_no"]), automation="cancel_failed"
        ).first(),
        what="the cancel to give up",
    )
    assert (case.state, case.flagged) == ("open", True)
    assert history(case) == ["orphan.opened", "orphan.cancel_failed"]
    failed = case.events.last()
    assert (failed.actor, failed.data["tries"]) == (Actor.WORKER, 2)
    assert failed.summary.startswith(f"Could not cancel {stray['booking_no']} at the partner after 2 tries")
    # never verified (the partner may even have cancelled it behind its 503s): support looks
    reservation = PartnerReservation.objects.get(pk=case.reservation_id)
    assert (reservation.status, reservation.compensated_at) == ("confirmed", None)
    # the sweeper leaves a flagged orphan to support: no automatic retries
    settings.RECONCILE_SYNC_AGE_S = 0
    assert sweep(dry_run=True, partner=h.partner).compensations_requeued == 0
