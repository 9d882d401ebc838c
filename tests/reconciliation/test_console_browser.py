"""The support console in a real browser: headless Debian Chromium driven by Playwright, against
the live server, a real Dramatiq worker and a real sandbox partner.

Support logs in, opens a needs-attention booking from the queue, reads its timeline and forces a
sync (the preview asks the sandbox live); ops logs in, compensates, and sees the booking failed
and the reservation cancelled at the partner and verified; ops cancels an orphan from its case
page and sees the case close itself. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from bookings.models import Booking
from bookings.states import BookingState
from bookings.timeline import record_event
from partners.connectors import connector_for
from partners.models import OrphanCase, PartnerReservation, Source
from partners.services.observations import observation_apply
from tests.factories import (
    PASSWORD,
    BookingFactory,
    OfferFactory,
    PartnerFactory,
    PartnerReservationFactory,
)
from tests.helpers import unique_code, wait_until
from tests.sandbox.conftest import API_KEY, reference_body
from tests.sandbox_process import SandboxProcess

S = BookingState
pytestmark = [pytest.mark.browser, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


@pytest.fixture
def sandbox(tmp_path) -> Iterator[SandboxProcess]:
    partner = SandboxProcess("reference", tmp_path / "reference.sqlite3", API_KEY, ["--hang-s", "0"]).start()
    yield partner
    partner.kill()


@pytest.fixture
def page(open_page):
    """The console is for desks: a wide page."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return open_page(viewport={"width": 1400, "height": 1000})


def _shot(page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _login(page, live_server, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def test_support_syncs_and_ops_compensates_in_the_console(
    page, live_server, sandbox, worker, broker, support_user, ops_user
):
    # given a booking that needs a person: the sandbox still holds a confirmed reservation for it
    # that we decided to cancel an hour ago, and that cancel never got verified
    partner = PartnerFactory(code=unique_code(), base_url=sandbox.base_url, api_key=API_KEY)
    broker.declare_queue(partner.queue_name)
    offer = OfferFactory(partner=partner, product_id="hotel-42-dbl")
    booking = BookingFactory(
        offer=offer,
        partner=partner,
        status=S.NEEDS_ATTENTION,
        attention_reason="compensation_failed",
        attention_detail="Could not cancel at the partner after 8 tries: partner_5xx",
        deadline=timezone.now() + timedelta(hours=1),
    )
    created = sandbox.request(
        "POST",
        "/v1/reservations",
        json=reference_body(booking.reference),
        headers={"Idempotency-Key": booking.partner_key},
    ).json()
    assert created["status"] == "confirmed"
    reservation = PartnerReservationFactory(
        booking=booking,
        partner_ref=created["id"],
        status="confirmed",
        version=created["version"],
        compensation_requested_at=timezone.now() - timedelta(hours=1),
        compensation_reason="duplicate",
    )
    record_event(booking, "booking.requested", actor="customer", summary="Requested hotel-42-dbl, 3 nights")
    record_event(
        booking,
        "booking.needs_attention",
        actor="worker",
        from_state=S.CONFIRMED,
        to_state=S.NEEDS_ATTENTION,
        summary="Could not cancel at the partner after 8 tries",
    )
    # when support opens it from the needs-attention queue and reads its timeline
    _login(page, live_server, support_user.username)
    page.goto(f"{live_server.url}/admin/bookings/booking/needs-attention/")
    _shot(page, "01-needs-attention-queue")
    page.click(f"text={booking.reference}")
    page.wait_for_selector("#timeline")
    timeline = page.inner_text("#timeline")
    assert "Could not cancel at the partner after 8 tries" in timeline
    assert created["id"] in page.inner_text("#reservations")
    assert page.locator("#support-actions span.disabled", has_text="Compensate").count() == 1
    _shot(page, "02-booking-page-support")

    # and forces a sync: the preview asked the sandbox live, beside our state
    page.click("#support-actions a[data-action=sync]")
    page.wait_for_selector("#confirm-form")
    assert "Asked live" in page.inner_text("#theirs")
    assert "confirmed" in page.inner_text("#pairs")
    _shot(page, "03-sync-preview")
    page.fill("#id_note", "Customer asked whether the booking holds")
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "Sync queued." in page.inner_text(".messagelist")

    # then a worker ran that sync through the usual service: it is on the timeline
    wait_until(
        lambda: booking.events.filter(kind__in=["sync.completed", "sync.failed"]).exists(),
        timeout_s=20,
        what="the sync",
    )
    page.reload()
    timeline = page.inner_text("#timeline")
    assert "support.sync_requested" in timeline and support_user.username in timeline
    assert "sync.completed" in timeline
    _shot(page, "04-after-sync")

    # when ops logs in and compensates
    _login(page, live_server, ops_user.username)
    page.goto(f"{live_server.url}/admin/bookings/booking/{booking.pk}/change/")
    page.click("#support-actions a[data-action=compensate]")
    page.wait_for_selector("#confirm-form")
    assert "was never verified" in page.inner_text("#content-main")
    assert "Asked live" in page.inner_text("#theirs")
    _shot(page, "05-compensate-preview")
    page.fill("#id_note", "Duplicate hold; the customer rebooked")
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "needs_attention → failed" in page.inner_text(".messagelist")

    # then the booking failed and the worker cancelled the reservation at the partner, verified
    wait_until(
        lambda: PartnerReservation.objects.filter(pk=reservation.pk, compensated_at__isnull=False).exists(),
        timeout_s=20,
        what="the compensation to be verified",
    )
    page.reload()
    assert Booking.objects.get(pk=booking.pk).status == S.FAILED
    assert "cancelled" in page.inner_text("#reservations")
    timeline = page.inner_text("#timeline")
    assert "support.compensated" in timeline and ops_user.username in timeline
    assert "partner.compensation.verified" in timeline
    assert [r["status"] for r in sandbox.truth(booking.reference)] == ["cancelled"]
    _shot(page, "06-after-compensation")

    # and the other console pages render for ops
    page.goto(f"{live_server.url}/admin/partners/partner/health/")
    assert partner.code in page.inner_text("#health")
    _shot(page, "07-partner-health")
    page.goto(f"{live_server.url}/admin/bookings/booking/state-machine/")
    assert page.locator("#diagram svg").count() == 1
    _shot(page, "08-state-machine")
    page.goto(f"{live_server.url}/admin/bookings/booking/?status__exact=failed")
    _shot(page, "09-booking-list")


def test_ops_cancels_an_orphan_from_its_case_in_the_console(
    page, live_server, sandbox, worker, broker, ops_user, settings
):
    # given a reservation the sandbox holds that no booking of ours wants, left to support
    settings.PARTNER_COMPENSATE_ORPHANS = False
    partner = PartnerFactory(code=unique_code(), base_url=sandbox.base_url, api_key=API_KEY)
    broker.declare_queue(partner.queue_name)
    stray = sandbox.request("POST", "/v1/reservations", json=reference_body("BK-STRAY8")).json()
    observation_apply(
        partner=partner,
        snapshot=connector_for(partner).get(stray["id"]).reservation,
        source=Source.LOOKUP,
        actor="worker",
    )
    case = OrphanCase.objects.get(reservation__partner_ref=stray["id"])

    # when ops opens it from the orphan queue
    _login(page, live_server, ops_user.username)
    page.goto(f"{live_server.url}/admin/partners/orphancase/")
    assert stray["id"] in page.inner_text("#orphans")
    _shot(page, "10-orphan-queue")
    page.click(f"#orphans a:text('#{case.pk}')")
    page.wait_for_selector("#history")
    assert "orphan.opened" in page.inner_text("#history")
    _shot(page, "11-orphan-case")

    # and cancels it at the partner: the preview asked the sandbox live, beside our record
    page.click("#orphan-actions a[data-action=orphan_cancel]")
    page.wait_for_selector("#confirm-form")
    assert "Asked live" in page.inner_text("#theirs")
    assert "confirmed" in page.inner_text("#pairs")
    _shot(page, "12-orphan-cancel-preview")
    page.fill("#id_note", "Not ours: a test hold at the partner")
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "Cancel queued." in page.inner_text(".messagelist")

    # then the worker cancelled it, verified, and the case closed itself
    wait_until(
        lambda: OrphanCase.objects.filter(pk=case.pk, state="closed").exists(),
        timeout_s=20,
        what="the verified cancel to close the case",
    )
    page.reload()
    history = page.inner_text("#history")
    assert "support.orphan_cancel_requested" in history and ops_user.username in history
    assert "orphan.cancel_verified" in history
    assert [r["status"] for r in sandbox.truth("BK-STRAY8")] == ["cancelled"]
    _shot(page, "13-orphan-closed")
