"""The console's own pages that no other browser test opens, in headless Debian Chromium against the
live server: the payment health page, the refund proposals' list, a partner's webhook deliveries,
and the confirmation pages of the bulk sync and of a webhook replay. Their state comes from the
factories; none asks a partner or the provider anything. Each page is checked with axe against
WCAG 2.1 A and AA, leaving out the admin's own chrome (its breadcrumbs: Django's markup, not ours),
and screenshotted into artifacts/screenshots/.
"""

from __future__ import annotations

import pytest

from bookings.states import BookingState
from partners.models import InboundState
from tests.browser import AXE_WCAG, shot
from tests.factories import PASSWORD, BookingFactory, InboundEventFactory, OfferFactory, PartnerFactory
from tests.helpers import unique_code

S = BookingState
pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def page(open_page):
    """The console is for desks: a wide page."""
    return open_page(viewport={"width": 1400, "height": 1000})


def _login(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


# Django's admin breadcrumbs, links told from their text by colour alone (axe's
# link-in-text-block): the admin's chrome, not the console's page.
ADMIN_CHROME = (".breadcrumbs",)


def _checked(page, name: str) -> None:
    shot(page, f"console-{name}", rules=AXE_WCAG, exclude=ADMIN_CHROME)


def test_the_payment_health_and_refund_proposal_pages_open_for_support(page, live_server, support_user):
    _login(page, live_server, support_user.username)

    page.goto(f"{live_server.url}/admin/reconciliation/refundproposal/health/")
    assert page.inner_text("h1") == "Payment health (last hour)"
    assert page.locator("#payment-health").count() == 1
    assert page.inner_text("#unpaid-confirmed") == "none"
    _checked(page, "payment-health")

    page.goto(f"{live_server.url}/admin/reconciliation/refundproposal/")
    assert "refund proposal" in page.inner_text("#content").lower()
    assert page.locator("a.addlink").count() == 0  # proposed from a booking's page, not here
    _checked(page, "refund-proposals")


def test_a_partners_webhook_deliveries_mark_the_unverified_ones(page, live_server, support_user):
    partner = PartnerFactory(code=unique_code("feed"))
    booking = BookingFactory(offer=OfferFactory(partner=partner), status=S.CONFIRMED)
    InboundEventFactory(partner=partner, booking=booking, event_id="msg_kept")
    InboundEventFactory(
        partner=partner, event_id="msg_forged", signature_valid=False, state=InboundState.REJECTED
    )
    _login(page, live_server, support_user.username)

    page.goto(f"{live_server.url}/admin/partners/partner/{partner.pk}/deliveries/")

    assert page.inner_text("h1") == f"Webhook deliveries: {partner.code}"
    kept = page.locator("#feed tr", has_text="msg_kept")
    assert booking.reference in kept.inner_text()
    forged = page.locator("#feed tr", has_text="msg_forged")
    assert forged.get_attribute("data-mark") == "unverified"
    assert booking.reference not in forged.inner_text()  # linked to no booking
    _checked(page, "partner-deliveries")


def test_the_bulk_sync_and_the_replay_ask_before_they_do_anything(page, live_server, ops_user):
    partner = PartnerFactory(code=unique_code("bulk"))
    bookings = [
        BookingFactory(offer=OfferFactory(partner=partner), status=S.NEEDS_ATTENTION) for _ in range(2)
    ]
    delivery = InboundEventFactory(partner=partner, event_id="msg_replay")
    _login(page, live_server, ops_user.username)

    # the bulk sync: its page lists the bookings, and nothing is queued until confirmed
    page.goto(f"{live_server.url}/admin/bookings/booking/?status__exact=needs_attention")
    for booking in bookings:
        page.check(f"input[name=_selected_action][value='{booking.pk}']")
    page.select_option("select[name=action]", "force_sync_selected")
    page.click("button[name=index]")
    page.wait_for_selector("text=Queue a partner sync for these 2 booking(s)?")
    table = page.inner_text("#content-main table")
    assert all(booking.reference in table for booking in bookings)
    assert page.locator("input[type=submit][value='Queue the syncs']").count() == 1
    assert not any(booking.events.filter(kind="support.sync_requested").exists() for booking in bookings)
    _checked(page, "bulk-sync-confirm")

    # the replay: its page says whether each signature still verifies, and asks first
    page.goto(f"{live_server.url}/admin/partners/inboundevent/")
    page.check(f"input[name=_selected_action][value='{delivery.pk}']")
    page.select_option("select[name=action]", "replay_selected")
    page.click("button[name=index]")
    page.wait_for_selector("#content-main form")
    assert page.inner_text("h1") == "Replay stored webhooks"
    assert "msg_replay" in page.inner_text("#content-main")
    assert page.locator("#content-main input[type=submit]").count() == 1
    _checked(page, "replay-confirm")


def test_a_replay_above_its_limit_is_refused_with_the_numbers_and_nothing_is_asked(
    page, live_server, ops_user, monkeypatch
):
    monkeypatch.setattr("reconciliation.admin.REPLAY_MOST", 1)  # the server's thread is this process
    partner = PartnerFactory(code=unique_code("many"))
    deliveries = [InboundEventFactory(partner=partner, state=InboundState.FAILED) for _ in range(2)]
    _login(page, live_server, ops_user.username)

    page.goto(f"{live_server.url}/admin/partners/inboundevent/")
    for delivery in deliveries:
        page.check(f"input[name=_selected_action][value='{delivery.pk}']")
    page.select_option("select[name=action]", "replay_selected")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist .error")

    assert page.inner_text(".messagelist .error") == (
        "2 webhooks selected: a replay takes at most 1 at a time, so nothing was done. Narrow the "
        "selection (a filter, or one page of the list) and replay again."
    )
    assert page.inner_text("h1") != "Replay stored webhooks"
    assert [type(d).objects.get(pk=d.pk).state for d in deliveries] == [InboundState.FAILED] * 2
