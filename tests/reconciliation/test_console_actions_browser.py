"""The console's payment and orphan actions that no other browser test runs, in headless Debian
Chromium driven by Playwright against the live server: retrying a capture and voiding a hold (a
real payment provider process, a real Dramatiq worker asking it), rejecting and withdrawing a
refund proposal (the two-person rule), and linking and closing an orphan case (a real sandbox
partner asked live).

Each action is run by a staff user holding exactly the permissions it needs (and the view
permission of the page it starts from); one without the action's permission finds the button
disabled and the action's page refused. Each preview must say what will happen (the amounts, the
effects), the confirmation what was done, and the booking's page or the case's history the outcome.
Every page is checked with axe against WCAG 2.1 A and AA, leaving out the admin's own breadcrumbs
(Django's markup), and screenshotted into artifacts/screenshots/.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission

from bookings.models import Actor, Booking
from bookings.states import BookingState
from partners.connectors import connector_for
from partners.models import OrphanCase, PartnerReservation, Source
from partners.services.observations import observation_apply
from payments.models import Payment, PaymentStatus
from reconciliation.models import ProposalState, RefundProposal
from reconciliation.services.support import Operator, new_token
from reconciliation.services.support import payments as money
from tests.browser import AXE_WCAG, shot
from tests.factories import PASSWORD, BookingFactory, OfferFactory, PartnerFactory, UserFactory
from tests.helpers import unique_code, wait_until
from tests.payments import conftest as payments_fixtures
from tests.reconciliation.paying import paid_at_provider
from tests.sandbox.conftest import API_KEY, reference_body
from tests.sandbox_process import SandboxProcess

S = BookingState
P = PaymentStatus
pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.timeout(180)]

# The payment tests' provider process (one per module) and its per-test reset, as fixtures here.
provider_process = payments_fixtures.provider_process
provider = payments_fixtures.provider
# Django's admin breadcrumbs, links told from their text by colour alone (axe's
# link-in-text-block): the admin's chrome, not the console's page.
ADMIN_CHROME = (".breadcrumbs",)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> Iterator[SandboxProcess]:
    store = tmp_path_factory.mktemp("actions-sandbox") / "reference.sqlite3"
    partner = SandboxProcess("reference", store, API_KEY, ["--hang-s", "0"]).start()
    yield partner
    partner.kill()


@pytest.fixture
def partner(sandbox, broker, settings):
    """The sandbox as a partner of ours, orphans left to support."""
    settings.PARTNER_COMPENSATE_ORPHANS = False
    sandbox.reset()
    partner = PartnerFactory(code=unique_code("act"), base_url=sandbox.base_url, api_key=API_KEY)
    OfferFactory(partner=partner, product_id="hotel-42-dbl")
    broker.declare_queue(partner.queue_name)
    return partner


@pytest.fixture
def paying(provider, broker, settings):
    """The provider, our settings pointing at it, the payments queue declared (a running worker
    then consumes it), and the approval amount of the two-person rule."""
    import payments.tasks  # noqa: F401

    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("200.00")
    settings.PAYMENTS_CONSOLE_READ_WAIT_S = 5.0
    return provider


@pytest.fixture
def page(open_page):
    """The console is for desks: a wide page."""
    return open_page(viewport={"width": 1400, "height": 1000})


def staff(*permissions: str):
    """A staff user holding exactly these permissions (`app_label.codename`), in no group."""
    user = UserFactory(username=f"staff-{uuid.uuid4().hex[:8]}", is_staff=True)
    user.user_permissions.set(
        [
            Permission.objects.get(content_type__app_label=label, codename=codename)
            for label, codename in (p.split(".") for p in permissions)
        ]
    )
    return user


def _login(page, live_server, user) -> None:
    page.context.clear_cookies()
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")


def _checked(page, name: str) -> None:
    shot(page, f"console-{name}", rules=AXE_WCAG, exclude=ADMIN_CHROME)


def _confirm(page) -> str:
    """Confirm the action's form; what the page it lands on says was done."""
    page.click("#confirm-form input[type=submit]")
    page.wait_for_selector(".messagelist")
    return page.inner_text(".messagelist")


def _kinds(page, table: str = "#timeline") -> list[str]:
    return page.locator(f"{table} tr[data-kind]").evaluate_all("rows => rows.map(r => r.dataset.kind)")


def _booking_url(live_server, booking_id) -> str:
    return f"{live_server.url}/admin/bookings/booking/{booking_id}/change/"


def _payment_action_url(live_server, booking_id, action: str) -> str:
    return f"{live_server.url}/admin/bookings/booking/{booking_id}/payment/{action}/"


# --- capture and void ---------------------------------------------------------------------------
def test_a_capture_is_previewed_confirmed_and_taken_by_the_worker(page, live_server, paying, worker):
    payment = paid_at_provider(capture=False)  # the partner confirmed it; the hold is not taken yet
    booking_url = _booking_url(live_server, payment.booking_id)
    capturer = staff("bookings.view_booking", "reconciliation.capture_payment")

    # without the capture permission: the button is disabled and its page refused
    _login(page, live_server, staff("bookings.view_booking", "reconciliation.void_payment"))
    page.goto(booking_url)
    actions = page.locator("#payment-actions")
    assert actions.locator("span.disabled", has_text="Retry the capture").count() == 1
    assert actions.locator(f"a[data-action={money.CAPTURE}]").count() == 0
    assert page.goto(_payment_action_url(live_server, payment.booking_id, money.CAPTURE)).status == 403

    _login(page, live_server, capturer)
    page.goto(booking_url)
    assert page.inner_text("#payment-authorized") == "360.00 EUR"
    assert page.inner_text("#payment-captured") == "0.00 EUR"
    page.locator(f"#payment-actions a[data-action={money.CAPTURE}]").click()
    page.wait_for_selector("#confirm-form")
    effects = page.inner_text(".effects")
    assert "Capture 360.00 EUR of the 360.00 EUR hold under a new key" in effects
    assert "the whole hold is taken" in effects and "the rest" not in effects  # none is left
    assert "The booking owes 360.00 EUR as confirmed." in effects
    assert "Asked live" in page.inner_text("#theirs")
    _checked(page, "payment-capture-preview")
    page.fill("#id_note", "The provider refused it yesterday; the customer's bank says it is fine now")
    told = _confirm(page)
    assert f"{payment.booking.reference}: Retry the capture. Capture of 360.00 EUR queued" in told
    wait_until(
        lambda: Payment.objects.get(pk=payment.pk).status == P.CAPTURED, timeout_s=30, what="the capture"
    )

    page.goto(booking_url)
    assert page.inner_text("#payment-captured") == "360.00 EUR"
    kinds = _kinds(page)
    assert kinds.index("support.capture_requested") < kinds.index("payment.capture.ok")
    row = page.locator("#timeline tr[data-kind='support.capture_requested']")
    assert capturer.username in row.inner_text()
    assert "Capture of 360.00 EUR asked by" in row.inner_text()
    _checked(page, "payment-captured")
    assert paying.intent(payment.provider_intent_id)["amount_received"] == 36000


def test_a_void_is_previewed_with_its_warning_confirmed_and_released_by_the_worker(
    page, live_server, paying, worker
):
    payment = paid_at_provider(capture=False)
    # the partner's side needs a person now: nothing is owed while support decides
    Booking.objects.filter(pk=payment.booking_id).update(
        status=S.NEEDS_ATTENTION, confirmed_shown_at=None, attention_reason="partner_mismatch"
    )
    booking_url = _booking_url(live_server, payment.booking_id)
    voider = staff("bookings.view_booking", "reconciliation.void_payment")

    _login(page, live_server, staff("bookings.view_booking", "reconciliation.capture_payment"))
    page.goto(booking_url)
    actions = page.locator("#payment-actions")
    assert actions.locator("span.disabled", has_text="Void the hold").count() == 1
    assert actions.locator(f"a[data-action={money.VOID}]").count() == 0
    assert page.goto(_payment_action_url(live_server, payment.booking_id, money.VOID)).status == 403

    _login(page, live_server, voider)
    page.goto(booking_url)
    page.locator(f"#payment-actions a[data-action={money.VOID}]").click()
    page.wait_for_selector("#confirm-form")
    effects = page.inner_text(".effects")
    assert "the 360.00 EUR hold is released, nothing is taken" in effects
    assert "The customer is told their money was released." in effects
    assert "Once released the hold cannot be captured" in page.inner_text("#content-main .notice")
    _checked(page, "payment-void-preview")
    page.fill("#id_note", "The partner lost the reservation; the customer rebooked elsewhere")
    told = _confirm(page)
    assert f"{payment.booking.reference}: Void the hold. Void (cancel the authorization) queued" in told
    wait_until(lambda: Payment.objects.get(pk=payment.pk).status == P.VOIDED, timeout_s=30, what="the void")

    page.goto(booking_url)
    assert "voided" in page.inner_text("#payment-ours")
    assert page.inner_text("#payment-captured") == "0.00 EUR"
    kinds = _kinds(page)
    assert kinds.index("support.void_requested") < kinds.index("payment.void.ok")
    assert voider.username in page.inner_text("#timeline tr[data-kind='support.void_requested']")
    _checked(page, "payment-voided")
    assert paying.intent(payment.provider_intent_id)["status"] == "canceled"
    assert Booking.objects.get(pk=payment.booking_id).customer_money["code"] == "released"


# --- refund proposals: reject, withdraw -----------------------------------------------------------
def _proposal_row(page, proposal_id: int):
    return page.locator(f"#refund-proposals tr[data-proposal='{proposal_id}']")


def test_another_person_rejects_a_refund_proposal_and_nothing_is_refunded(page, live_server, paying):
    payment = paid_at_provider()
    booking_url = _booking_url(live_server, payment.booking_id)
    proposer = staff("bookings.view_booking", "reconciliation.refund_payment")
    money.support_refund(
        booking_id=payment.booking_id,
        operator=Operator.for_user(proposer),
        token=new_token(),
        amount="250.00",
        note="The pool was closed for the whole stay",
    )
    proposal = RefundProposal.objects.get(payment=payment)
    rejecter = staff("bookings.view_booking", "reconciliation.approve_refund")

    # another refunder, not the proposer, without the approve permission: no say on it
    _login(page, live_server, staff("bookings.view_booking", "reconciliation.refund_payment"))
    page.goto(booking_url)
    row = _proposal_row(page, proposal.pk)
    assert row.locator("a").count() == 0
    reject_url = f"{booking_url.removesuffix('change/')}payment/proposal/{proposal.pk}/reject/"
    assert page.goto(reject_url).status == 403

    _login(page, live_server, rejecter)
    page.goto(booking_url)
    row = _proposal_row(page, proposal.pk)
    assert row.locator("a", has_text="Approve").count() == 1
    row.locator("a", has_text="Reject").click()
    page.wait_for_selector("#confirm-form")
    assert page.inner_text("h1") == f"Reject the refund: {payment.booking.reference}"
    assert page.inner_text(".effects") == (
        f"Reject refund proposal #{proposal.pk}: nothing is refunded; the proposal ends."
    )
    shown = page.inner_text("#proposal")
    assert f"250.00 EUR, proposed by {proposer.username}" in shown
    assert "The pool was closed for the whole stay" in shown
    _checked(page, "payment-reject-preview")
    page.fill("#id_note", "The pool was open: the hotel sent photos")
    told = _confirm(page)
    assert f"Refund proposal #{proposal.pk} rejected: nothing was refunded." in told

    page.goto(booking_url)
    row = _proposal_row(page, proposal.pk)
    assert f"rejected by {rejecter.username}" in row.inner_text()
    assert row.locator("a").count() == 0
    assert page.inner_text("#payment-refunded") == "0.00 EUR"
    kinds = _kinds(page)
    assert kinds.index("support.refund_proposed") < kinds.index("support.refund_rejected")
    rejected = page.inner_text("#timeline tr[data-kind='support.refund_rejected']")
    assert f"rejected by {rejecter.username}" in rejected
    _checked(page, "payment-proposal-rejected")
    proposal.refresh_from_db()
    assert (proposal.state, proposal.decided_by, proposal.decision_note) == (
        ProposalState.REJECTED,
        rejecter,
        "The pool was open: the hotel sent photos",
    )
    assert paying.refunds(payment.provider_intent_id) == []


def test_the_proposer_withdraws_their_own_refund_proposal(page, live_server, paying):
    payment = paid_at_provider()
    booking_url = _booking_url(live_server, payment.booking_id)
    # may propose a refund, may approve nothing: withdrawing their own needs no more
    proposer = staff("bookings.view_booking", "reconciliation.refund_payment")

    _login(page, live_server, proposer)
    page.goto(f"{_payment_action_url(live_server, payment.booking_id, money.REFUND)}?amount=250.00")
    page.wait_for_selector("#confirm-form")
    assert "Above 200.00 EUR: only proposed." in page.inner_text(".effects")
    page.fill("#id_note", "The pool was closed for the whole stay")
    assert ": Refund proposed (#" in _confirm(page)
    proposal = RefundProposal.objects.get(payment=payment)
    row = _proposal_row(page, proposal.pk)
    assert "a second person approves it" in row.inner_text()
    assert row.locator("a", has_text="Approve").count() == 0
    row.locator("a", has_text="Withdraw").click()
    page.wait_for_selector("#confirm-form")
    assert page.inner_text("h1") == f"Withdraw the refund: {payment.booking.reference}"
    assert page.inner_text(".effects") == (
        f"Withdraw refund proposal #{proposal.pk}: nothing is refunded; the proposal ends."
    )
    assert page.locator("#confirm-form input[type=submit]").get_attribute("value") == "Withdraw the refund"
    _checked(page, "payment-withdraw-preview")
    page.fill("#id_note", "The customer accepted a voucher instead")
    told = _confirm(page)
    assert f"Refund proposal #{proposal.pk} withdrawn: nothing was refunded." in told

    assert page.url == booking_url  # back on the booking's page
    row = _proposal_row(page, proposal.pk)
    assert f"withdrawn by {proposer.username}" in row.inner_text()
    assert row.locator("a").count() == 0
    withdrawn = page.inner_text("#timeline tr[data-kind='support.refund_rejected']")
    assert f"withdrawn by {proposer.username}" in withdrawn
    _checked(page, "payment-proposal-withdrawn")
    assert RefundProposal.objects.get(pk=proposal.pk).state == ProposalState.REJECTED
    assert paying.refunds(payment.provider_intent_id) == []


# --- orphan cases: link, close ---------------------------------------------------------------------
def _stray(sandbox, partner, client_reference: str) -> OrphanCase:
    """A reservation made at the partner that no booking of ours wants, found by a lookup."""
    made = sandbox.request("POST", "/v1/reservations", json=reference_body(client_reference)).json()
    observation_apply(
        partner=partner,
        snapshot=connector_for(partner).get(made["id"]).reservation,
        source=Source.LOOKUP,
        actor=Actor.WORKER,
    )
    return OrphanCase.objects.select_related("reservation").get(reservation__partner_ref=made["id"])


def _case_url(live_server, case: OrphanCase, action: str = "") -> str:
    base = f"{live_server.url}/admin/partners/orphancase/{case.pk}/"
    return f"{base}action/{action}/" if action else f"{base}change/"


def _refused_without_a_note(page) -> None:
    """The note is required: confirming without one, the browser refuses to send the form."""
    url = page.url
    assert "(required)" in page.inner_text("label[for=id_note]")
    page.click("#confirm-form input[type=submit]")
    assert page.locator("#id_note").evaluate("note => note.required && note.validity.valueMissing")
    assert page.url == url and page.locator(".messagelist").count() == 0


def _at_partner(sandbox, client_reference: str) -> list[str]:
    return [r["status"] for r in sandbox.truth(client_reference)]


def test_an_orphan_is_linked_to_the_booking_named_and_the_one_door_confirms_it(
    page, live_server, sandbox, partner
):
    booking = BookingFactory(
        offer=partner.offers.get(),
        partner=partner,
        status=S.PENDING_PARTNER,
        start_date=date(2027, 3, 1),
        end_date=date(2027, 3, 4),
        guests=2,
        total_price=Decimal("360.00"),
        currency="EUR",
    )
    case = _stray(sandbox, partner, "BK-PHONE7")  # made on the phone, under another reference
    ref = case.reservation.partner_ref
    linker = staff("partners.view_orphancase", "partners.link_orphan", "bookings.view_booking")

    _login(page, live_server, staff("partners.view_orphancase", "partners.close_orphan"))
    page.goto(_case_url(live_server, case))
    actions = page.locator("#orphan-actions")
    assert actions.locator("span.disabled", has_text="Link to a booking").count() == 1
    assert page.goto(_case_url(live_server, case, "orphan_link")).status == 403

    _login(page, live_server, linker)
    page.goto(_case_url(live_server, case))
    page.click("#orphan-actions a[data-action=orphan_link]")
    page.wait_for_selector("#booking-form")
    assert "Name the booking to link it to" in page.inner_text("#refusal")
    assert page.locator("#confirm-form").count() == 0
    _checked(page, "orphan-link-no-booking")
    page.fill("#id_booking_pick", "BK-NOPE99")  # a reference that names no booking
    page.click("#booking-form input[type=submit]")
    page.wait_for_url("**?booking=BK-NOPE99")
    assert page.inner_text("#refusal") == "Not possible now: No booking 'BK-NOPE99'."
    assert page.input_value("#id_booking_pick") == "BK-NOPE99"
    assert page.locator("#confirm-form").count() == 0
    page.fill("#id_booking_pick", booking.reference.lower())
    page.click("#booking-form input[type=submit]")
    page.wait_for_selector("#confirm-form")
    assert page.input_value("#id_booking_pick") == booking.reference
    effects = page.inner_text(".effects")
    assert f"{ref} (confirmed) becomes {booking.reference}'s reservation" in effects
    assert f"a note saying why it is {booking.reference}'s is required" in effects
    assert "pending_partner → confirmed (partner_confirmed)." in effects
    assert "Asked live" in page.inner_text("#theirs")
    assert f"{booking.reference}: pending_partner, holds nothing live" in page.inner_text("#ours")
    _checked(page, "orphan-link-preview")
    # the note says why it is this booking's: without one the browser sends nothing
    _refused_without_a_note(page)
    assert OrphanCase.objects.get(pk=case.pk).state == "open"
    page.fill("#id_note", "The customer booked on the phone; the hotel typed its own reference")
    told = _confirm(page)
    assert f"Orphan case #{case.pk}: Link to a booking. Linked to {booking.reference}" in told
    assert "(pending_partner → confirmed)" in told

    assert page.locator("#orphan-actions").count() == 0
    assert f"now {booking.reference}'s reservation" in page.inner_text("#case")
    assert _kinds(page, "#history") == ["orphan.opened", "support.orphan_linked"]
    _checked(page, "orphan-linked")
    page.click(f"#case a:text('{booking.reference}')")
    page.wait_for_selector("#timeline")
    assert ref in page.inner_text("#reservations")
    kinds = _kinds(page)
    assert "orphan.opened" in kinds and kinds.count("support.orphan_linked") == 1
    assert linker.username in page.inner_text("#timeline tr[data-kind='support.orphan_linked']")
    _checked(page, "orphan-linked-booking")
    assert Booking.objects.get(pk=booking.pk).status == S.CONFIRMED
    assert PartnerReservation.objects.get(partner_ref=ref).booking_id == booking.pk


def test_a_live_orphan_is_closed_only_with_the_live_permission_and_a_note(
    page, live_server, sandbox, partner
):
    case = _stray(sandbox, partner, "BK-STRAY7")
    ref = case.reservation.partner_ref
    closer = staff("partners.view_orphancase", "partners.close_orphan", "partners.close_live_orphan")

    # may see cases only: the button is disabled, the page refused
    _login(page, live_server, staff("partners.view_orphancase"))
    page.goto(_case_url(live_server, case))
    assert page.locator("#orphan-actions span.disabled", has_text="Close with a note").count() == 1
    _checked(page, "orphan-case-no-actions")  # the disabled buttons are read too
    assert page.goto(_case_url(live_server, case, "orphan_close")).status == 403

    # may close cases, not live ones: the preview says why not, and offers nothing to confirm
    _login(page, live_server, staff("partners.view_orphancase", "partners.close_orphan"))
    page.goto(_case_url(live_server, case))
    page.click("#orphan-actions a[data-action=orphan_close]")
    page.wait_for_selector("#refusal")
    assert page.inner_text("#refusal") == (
        f"Not possible now: The partner still holds {ref} (confirmed): closing it as it is needs the "
        "permission partners.close_live_orphan, and a note saying why."
    )
    assert page.locator("#confirm-form").count() == 0
    _checked(page, "orphan-close-refused")

    _login(page, live_server, closer)
    page.goto(_case_url(live_server, case))
    page.click("#orphan-actions a[data-action=orphan_close]")
    page.wait_for_selector("#confirm-form")
    effects = page.inner_text(".effects")
    assert "The case closes with your note (required); nothing is asked of the partner." in effects
    assert f"{ref} stays confirmed at the partner: nobody cancels it" in effects
    assert "Asked live" in page.inner_text("#theirs")
    assert "confirmed" in page.inner_text("#pairs")
    _checked(page, "orphan-close-preview")
    _refused_without_a_note(page)
    assert OrphanCase.objects.get(pk=case.pk).state == "open"
    page.fill("#id_note", "The partner's own test hold; they keep it on purpose")
    told = _confirm(page)
    assert f"Orphan case #{case.pk}: Close with a note. Case closed." in told

    assert page.locator("#orphan-actions").count() == 0
    assert "The partner's own test hold" in page.inner_text("#case")
    assert _kinds(page, "#history") == ["orphan.opened", "support.orphan_closed"]
    closed = page.inner_text("#history tr[data-kind='support.orphan_closed']")
    assert closer.username in closed and "note: The partner's own test hold" in closed
    _checked(page, "orphan-closed")
    assert _at_partner(sandbox, "BK-STRAY7") == ["confirmed"]  # nothing was asked of it
