"""Recording a refund the card refused as paid another way, in a real browser (headless Debian
Chromium driven by Playwright) against the live server.

At or below the approval amount, in one step: support opens the booking whose refund the card
refused, sees what is owed back on the payment panel, previews the recording (all that is owed by
default), says how it was paid (a bank transfer) with the transfer's reference, and the panel then
shows it paid back another way, how, nothing owed, and no button to record more.

Above it, the two-person rule: support proposes it (cash, with the receipt's number), nothing is
recorded and the panel lists the proposal; ops opens the same page, approves it from its preview,
and the panel then shows it recorded, by cash, proposed by one and approved by the other, and the
timeline both people's rows. Screenshots go to artifacts/screenshots/."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bookings.models import Notification, NotificationKind
from payments.models import Payment
from reconciliation.models import ProposalState, RefundProposal
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


def _login(page, live_server, username: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def _timeline(page) -> list[str]:
    return page.locator("#timeline tr[data-kind]").evaluate_all("rows => rows.map(r => r.dataset.kind)")


def test_support_records_a_refund_paid_by_bank_transfer_in_the_console(
    page, live_server, support_user, settings
):
    settings.STRIPE_API_BASE = CLOSED_PORT_URL  # the panel says the provider's last known state
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("1000.00")  # one step
    payment = owed_back()
    booking_url = f"{live_server.url}/admin/bookings/booking/{payment.booking_id}/change/"
    _login(page, live_server, support_user.username)

    page.goto(booking_url)
    panel = page.locator("#payment")
    assert panel.locator("#payment-refund-failed").inner_text().startswith("360.00 EUR")
    panel.locator(f"a[data-action={money.OUTSIDE}]").click()
    page.wait_for_selector("#confirm-form")
    assert "Record 360.00 EUR of the 360.00 EUR owed back" in page.locator(".effects").inner_text()
    page.select_option("#id_method", "bank_transfer")
    page.fill("#id_note", "Bank transfer TRF-2026-0042, the card is closed")
    page.screenshot(path=str(SCREENSHOTS / "console-payment-outside-preview.png"), full_page=True)
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "(bank transfer); nothing is owed back any more" in page.locator(".messagelist").inner_text()

    page.goto(booking_url)
    panel = page.locator("#payment")
    assert panel.locator("#payment-refunded-outside").inner_text().startswith("360.00 EUR")
    assert panel.locator("#payment-refund-failed").count() == 0
    assert panel.locator(f"a[data-action={money.OUTSIDE}]").count() == 0
    recorded = panel.locator("#payment-outside tr[data-method=bank_transfer]")
    assert "Bank transfer" in recorded.inner_text() and support_user.username in recorded.inner_text()
    assert "support.refund_recorded_outside" in _timeline(page)
    page.screenshot(path=str(SCREENSHOTS / "console-payment-outside-recorded.png"), full_page=True)
    payment = Payment.objects.get(pk=payment.pk)
    assert (payment.failed_refunds_owed, payment.refunded_outside) == (0, 360)


def test_support_proposes_a_refund_paid_in_cash_and_ops_approves_it_in_the_console(
    page, live_server, support_user, ops_user, settings
):
    settings.STRIPE_API_BASE = CLOSED_PORT_URL
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("200.00")
    payment = owed_back()
    booking_url = f"{live_server.url}/admin/bookings/booking/{payment.booking_id}/change/"

    # support: above the approval amount, only proposed
    _login(page, live_server, support_user.username)
    page.goto(booking_url)
    page.locator(f"#payment a[data-action={money.OUTSIDE}]").click()
    page.wait_for_selector("#confirm-form")
    assert page.locator(".effects li").first.inner_text().startswith("Above 200.00 EUR: only proposed.")
    assert (
        page.locator("#confirm-form input[type=submit]").input_value() == "Propose a refund paid another way"
    )
    # no method chosen: the browser does not send the form (the server refuses it too)
    page.fill("#id_note", "Paid at the front desk, receipt 4411")
    page.click("#confirm-form input[type=submit]")
    assert page.locator("#id_method").evaluate("e => e.validity.valueMissing")
    assert not RefundProposal.objects.exists()
    page.select_option("#id_method", "cash")
    page.screenshot(path=str(SCREENSHOTS / "console-payment-outside-propose.png"), full_page=True)
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert ": Refund paid another way (cash) proposed (#" in page.locator(".messagelist").inner_text()
    proposal = RefundProposal.objects.get(payment=payment)
    assert (proposal.kind, proposal.method, proposal.state) == ("outside", "cash", ProposalState.PENDING)
    page.goto(booking_url)
    row = page.locator(f"#refund-proposals tr[data-proposal='{proposal.pk}']")
    assert "paid another way: Cash" in row.inner_text()
    assert row.locator("a", has_text="Approve").count() == 0  # their own: a second person approves it
    assert page.locator("#payment-refund-failed").inner_text().startswith("360.00 EUR")  # nothing recorded
    assert not Notification.objects.filter(booking=payment.booking, kind=NotificationKind.MONEY).exists()

    # ops: approve it from its preview
    _login(page, live_server, ops_user.username)
    page.goto(booking_url)
    page.locator(f"#refund-proposals tr[data-proposal='{proposal.pk}'] a", has_text="Approve").click()
    page.wait_for_selector("#confirm-form")
    effects = page.locator(".effects").inner_text()
    assert f"Approve proposal #{proposal.pk} of a refund paid another way (cash)" in effects
    assert "Record 360.00 EUR of the 360.00 EUR owed back" in effects and "by cash" in effects
    page.fill("#id_note", "Receipt seen")
    page.screenshot(path=str(SCREENSHOTS / "console-payment-outside-approve.png"), full_page=True)
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "Recorded 360.00 EUR as paid back another way (cash)" in page.locator(".messagelist").inner_text()

    page.goto(booking_url)
    recorded = page.locator("#payment-outside tr[data-method=cash]").inner_text()
    assert "Cash" in recorded and support_user.username in recorded and ops_user.username in recorded
    assert page.locator("#payment-refund-failed").count() == 0
    kinds = _timeline(page)
    assert {"support.refund_proposed", "payment.refunded_outside", "support.refund_approved"} <= set(kinds)
    page.screenshot(path=str(SCREENSHOTS / "console-payment-outside-approved.png"), full_page=True)
    payment = Payment.objects.get(pk=payment.pk)
    assert (payment.failed_refunds_owed, payment.refunded_outside) == (0, 360)
    assert RefundProposal.objects.get().decided_by == ops_user
