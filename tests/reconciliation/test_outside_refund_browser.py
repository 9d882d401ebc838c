"""Recording a refund the card refused as paid another way, in a real browser (headless Debian
Chromium driven by Playwright) against the live server: support opens the booking whose refund the
card refused, sees what is owed back on the payment panel, previews the recording (all that is owed
by default), confirms it with the transfer's reference, and the panel then shows it paid back
another way, nothing owed, and no button to record more. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from pathlib import Path

import pytest

from payments.models import Payment
from reconciliation.services.support import payments as money
from tests.factories import PASSWORD
from tests.reconciliation.conftest import CLOSED_PORT_URL
from tests.reconciliation.test_outside_refund import owed_back

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


@pytest.fixture
def page(open_page):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return open_page(viewport={"width": 1400, "height": 1000})


def test_support_records_a_refund_paid_by_bank_transfer_in_the_console(
    page, live_server, support_user, settings
):
    settings.STRIPE_API_BASE = CLOSED_PORT_URL  # the panel says the provider's last known state
    payment = owed_back()
    booking_url = f"{live_server.url}/admin/bookings/booking/{payment.booking_id}/change/"
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", support_user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")

    page.goto(booking_url)
    panel = page.locator("#payment")
    assert panel.locator("#payment-refund-failed").inner_text().startswith("360.00 EUR")
    panel.locator(f"a[data-action={money.OUTSIDE}]").click()
    page.wait_for_selector("#confirm-form")
    assert "Record 360.00 EUR of the 360.00 EUR owed back" in page.locator(".effects").inner_text()
    page.fill("#id_note", "Bank transfer TRF-2026-0042, the card is closed")
    page.screenshot(path=str(SCREENSHOTS / "console-payment-outside-preview.png"), full_page=True)
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "nothing is owed back any more" in page.locator(".messagelist").inner_text()

    page.goto(booking_url)
    panel = page.locator("#payment")
    assert panel.locator("#payment-refunded-outside").inner_text().startswith("360.00 EUR")
    assert panel.locator("#payment-refund-failed").count() == 0
    assert panel.locator(f"a[data-action={money.OUTSIDE}]").count() == 0
    kinds = page.locator("#timeline tr[data-kind]").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert "support.refund_recorded_outside" in kinds
    page.screenshot(path=str(SCREENSHOTS / "console-payment-outside-recorded.png"), full_page=True)
    payment = Payment.objects.get(pk=payment.pk)
    assert (payment.failed_refunds_owed, payment.refunded_outside) == (0, 360)
