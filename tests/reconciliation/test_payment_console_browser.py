"""The console's payments in a real browser (headless Debian Chromium driven by Playwright) against
the live server, a real Dramatiq worker and a real payment provider process.

Support opens a captured booking, sees the provider's live state beside ours in the payment panel,
and proposes a refund above the approval amount; ops opens the same page, approves it from its
preview, and once the worker has asked the provider the panel shows the money refunded, the
provider agreeing, and the timeline both people's rows and the provider's answer. Screenshots go
to artifacts/screenshots/.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from payments.models import Payment
from reconciliation.models import ProposalState, RefundProposal
from tests.factories import PASSWORD
from tests.helpers import wait_until
from tests.payments import conftest as payments_fixtures
from tests.reconciliation.paying import paid_at_provider

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
provider_process = payments_fixtures.provider_process
provider = payments_fixtures.provider


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


def test_support_proposes_a_refund_and_ops_approves_it_in_the_console(
    page, live_server, provider, broker, worker, support_user, ops_user, settings
):
    import payments.tasks  # noqa: F401  (the payments queue, which the running worker then consumes)

    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("200.00")
    payment = paid_at_provider()
    booking_url = f"{live_server.url}/admin/bookings/booking/{payment.booking_id}/change/"

    # support: the panel beside the provider's live answer, then a proposal
    _login(page, live_server, support_user.username)
    page.goto(booking_url)
    panel = page.locator("#payment")
    assert panel.locator("#payment-captured").inner_text() == "360.00 EUR"
    assert "The provider, asked live" in panel.inner_text()
    _shot(page, "console-payment-panel")
    panel.locator("a[data-action=refund_payment]").click()
    page.wait_for_selector("#confirm-form")
    assert "Refund 360.00 EUR of the" in page.locator(".effects").inner_text()
    # all of it is above the approval amount: the button says what pressing it does
    assert page.locator("#confirm-form input[type=submit]").input_value() == "Propose a refund"
    page.fill("#id_amount", "250.00")
    page.fill("#id_note", "The pool was closed for the whole stay")
    page.click("#confirm-form input[type=submit]")
    # another amount than the one previewed: nothing done, its preview, to confirm again
    page.wait_for_selector("#previewed-errors")
    assert "The amount changed" in page.locator("#previewed-errors").inner_text()
    assert "Refund 250.00 EUR of the" in page.locator(".effects").inner_text()
    assert not RefundProposal.objects.filter(payment=payment).exists()
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert ": Refund proposed (#" in page.locator(".messagelist").inner_text()
    proposal = RefundProposal.objects.get(payment=payment)
    assert "a second person approves it" in page.locator("#refund-proposals").inner_text()

    # ops: approve from the preview; the worker asks the provider
    _login(page, live_server, ops_user.username)
    page.goto(booking_url)
    page.locator(f"#refund-proposals tr[data-proposal='{proposal.pk}'] a", has_text="Approve").click()
    page.wait_for_selector("#confirm-form")
    assert "The pool was closed for the whole stay" in page.locator("#proposal").inner_text()
    _shot(page, "console-payment-approve")
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    assert "Refund of 250.00 EUR queued" in page.locator(".messagelist").inner_text()
    wait_until(
        lambda: Payment.objects.get(pk=payment.pk).refunded_amount == Decimal("250.00"),
        timeout_s=30,
        what="the worker's refund",
    )

    page.goto(booking_url)
    panel = page.locator("#payment")
    assert panel.locator("#payment-refunded").inner_text() == "250.00 EUR"
    assert "mismatch" not in (panel.locator("#payment-provider tr").last.get_attribute("class") or "")
    kinds = page.locator("#timeline tr[data-kind]").evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds.index("support.refund_proposed") < kinds.index("support.refund_approved")
    assert kinds.index("support.refund_approved") < kinds.index("payment.refund.ok")
    _shot(page, "console-payment-refunded")
    proposal.refresh_from_db()
    assert (proposal.state, proposal.decided_by) == (ProposalState.APPROVED, ops_user)
    assert [r["amount"] for r in provider.refunds(payment.provider_intent_id)] == [25000]
