"""The console's payments (Django test client): the booking page's payment panel (our amounts, the
provider's ids only for those who may see them, the provider's state beside ours or why it is not
shown), each payment action's preview and confirmed POST (once per token), the two-person rule
from both sides, the refund proposals' list and the payment health page. The provider is not
running here: its live read degrades to the last known state (test_payment_provider.py asks it)."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.db.models import Q
from django.test import Client
from django.urls import reverse

from bookings.models import Actor
from bookings.states import BookingState
from bookings.timeline import record_event
from payments.connector import CallResult
from payments.models import CallOutcome, OperationKind, OperationState, PaymentOperation, PaymentStatus
from payments.services.operations import operation_open, operation_record
from payments.services.webhooks import payment_event_process
from reconciliation.models import ProposalState, RefundProposal
from tests.factories import UserFactory
from tests.reconciliation.conftest import CLOSED_PORT_URL
from tests.reconciliation.paying import paying_booking, support_rows
from tests.reconciliation.test_payment_timeline import SECRET, deliver

S = BookingState
P = PaymentStatus
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _provider_down(settings):
    settings.STRIPE_API_BASE = CLOSED_PORT_URL
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("200.00")


def change(booking) -> str:
    return reverse("admin:bookings_booking_change", args=[booking.pk])


def action(booking, name: str) -> str:
    return reverse("admin:bookings_booking_payment_action", args=[booking.pk, name])


def decide(booking, proposal_id: int, decision: str) -> str:
    return reverse("admin:bookings_booking_refund_proposal", args=[booking.pk, proposal_id, decision])


def token(response) -> str:
    return re.search(r'name="token" value="([0-9a-f]+)"', response.content.decode()).group(1)


def previewed(response) -> str:
    """The amount the page previewed, as its confirm form carries it."""
    return re.search(r'name="previewed" value="([^"]*)"', response.content.decode()).group(1)


def said(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def client_of(groups, group: str) -> tuple[Client, object]:
    user = UserFactory(username=f"{group}-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.groups.set([groups[group]])
    client = Client()
    client.force_login(user)
    return client, user


# --- the panel -------------------------------------------------------------------------------
def test_the_booking_page_shows_the_payment_panel_beside_the_provider(support_client):
    payment = paying_booking(refunded=Decimal("60.00"))

    page = support_client.get(change(payment.booking)).content.decode()

    assert 'id="payment"' in page
    assert re.search(r'id="payment-authorized">360.00 EUR<', page)
    assert re.search(r'id="payment-captured">360.00 EUR<', page)
    assert re.search(r'id="payment-refunded">60.00 EUR<', page)
    assert "300.00 EUR" in page  # paid: captured less refunded
    # the provider could not be asked: the last state it told us, and why
    assert re.search(r'id="provider-fallback">Live read failed, ambiguous', page)
    # support may refund (a proposal above the approval amount), not capture or void
    assert f'href="{action(payment.booking, "refund_payment")}"' in page
    assert f'href="{action(payment.booking, "capture_payment")}"' not in page
    assert 'title="You lack the permission for this action">Void the hold<' in page
    # the provider's ids only for those who may see them
    assert payment.provider_intent_id not in page
    assert "shown to those who may see them" in page


def test_ops_see_the_provider_s_ids_and_the_operations_asked_of_it(ops_client):
    payment = paying_booking()
    ops_client.post(
        action(payment.booking, "refund_payment"),
        {"token": "a" * 32, "amount": "12.00", "previewed": "12.00", "note": "goodwill"},
    )

    page = ops_client.get(change(payment.booking)).content.decode()

    assert re.search(rf'id="payment-intent">{payment.provider_intent_id}<', page)
    assert f"{payment.pk}:refund:1" in page
    assert 'data-kind="support.refund_requested"' in page  # the action on the one timeline


def test_a_booking_that_does_not_pay_has_no_payment_panel(make_booking, support_client):
    booking = make_booking(status=S.CONFIRMED)

    page = support_client.get(change(booking)).content.decode()

    assert 'id="payment"' not in page


def timeline_json(booking) -> str:
    return reverse("admin:bookings_booking_timeline", args=[booking.pk])


def _provider_ids_on_the_timeline(settings):
    """A paying booking whose timeline names the provider's ids in every way a payment row does:
    an applied delivery (its intent, attached), one not processed yet (a row of its own), a
    refund the provider made (the support row's attached operation and the try's row), an
    operation no row names, and an intent the provider named that is not ours (its summary)."""
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    payment = paying_booking(status=S.AWAITING_PAYMENT, payment_status=P.AUTHORIZING)
    payment_event_process(deliver(payment, "payment_intent.amount_capturable_updated", "requires_capture").pk)
    deliver(payment, "payment_intent.succeeded", "succeeded", received=36_000)
    type(payment).objects.filter(pk=payment.pk).update(status=P.CAPTURED, captured_amount=Decimal("360.00"))
    booking = payment.booking
    refund_id, stranger, charge_id = (f"{p}_{uuid.uuid4().hex[:24]}" for p in ("re", "pi", "ch"))
    refund = operation_open(payment, kind=OperationKind.REFUND, amount=Decimal("10.00"))
    record_event(
        booking,
        "support.refund_requested",
        actor=Actor.SUPPORT,
        actor_label="ops:alice",
        summary="Refund of 10.00 EUR asked by ops:alice",
        data={"idempotency_key": refund.idempotency_key, "action_token": "t" * 32},
    )
    operation_record(
        refund,
        CallResult(outcome=CallOutcome.OK, http_status=200, object_id=refund_id),
        booking=booking,
        closes=OperationState.SUCCEEDED,
        actor=Actor.WORKER,
    )
    unnamed = operation_open(payment, kind=OperationKind.REFUND, amount=Decimal("5.00"))
    PaymentOperation.objects.filter(pk=unnamed.pk).update(
        provider_object_id=charge_id, last_error=f"No such charge: '{charge_id}'"
    )
    record_event(
        booking,
        "payment.intent.unexpected",
        actor=Actor.WEBHOOK,
        summary=f"The provider names intent {stranger} for this payment; "
        f"ours is {payment.provider_intent_id}",
        data={"source": "webhook", "intent": stranger},
    )
    return booking, (payment.provider_intent_id, refund_id, stranger, charge_id)


def test_the_timeline_hides_the_provider_s_ids_from_those_who_may_not_see_them(support_client, settings):
    booking, ids = _provider_ids_on_the_timeline(settings)

    page = support_client.get(change(booking)).content.decode()
    as_json = support_client.get(timeline_json(booking)).content.decode()

    assert '<details class="raw">' in page and "payment.refund.ok" in as_json
    for provider_id in ids:
        assert provider_id not in page
        assert provider_id not in as_json
    assert '"intent": "(hidden)"' in as_json and '"provider_object": "(hidden)"' in as_json
    # what is ours stays: the operation's key, the amounts, the provider's delivery ids
    assert f"{booking.payment.pk}:refund:1" in as_json and '"10.00"' in as_json


def test_the_support_api_s_timeline_hides_them_by_the_same_rule(support_user, ops_user, settings):
    from rest_framework.test import APIClient

    booking, ids = _provider_ids_on_the_timeline(settings)
    url = f"/api/v1/support/bookings/{booking.reference}/timeline"
    bodies = {}
    for user in (support_user, ops_user):
        client = APIClient()
        client.force_authenticate(user)
        bodies[user] = client.get(url).content.decode()

    assert not [i for i in ids if i in bodies[support_user]]
    assert [i for i in ids if i in bodies[ops_user]] == list(ids)


def test_those_who_may_see_the_provider_s_ids_see_them_on_the_timeline(ops_client, settings):
    booking, ids = _provider_ids_on_the_timeline(settings)

    page = ops_client.get(change(booking)).content.decode()
    as_json = ops_client.get(timeline_json(booking)).content.decode()

    for provider_id in ids:
        assert provider_id in as_json
        assert provider_id in page
    assert "(hidden)" not in as_json


def _event_pages(client, booking) -> str:
    """The BookingEvent admin's pages of the booking's stored rows: the list, its search by the
    booking's reference and each row's change page, as one text."""
    changelist = reverse("admin:bookings_bookingevent_changelist")
    pages = [client.get(changelist), client.get(changelist, {"q": booking.reference})]
    pages += [
        client.get(reverse("admin:bookings_bookingevent_change", args=[pk]))
        for pk in booking.events.values_list("pk", flat=True)
    ]
    assert {page.status_code for page in pages} == {200}
    return "".join(page.content.decode() for page in pages)


def test_the_booking_event_admin_hides_the_provider_s_ids_by_the_same_rule(
    support_client, ops_client, settings
):
    booking, ids = _provider_ids_on_the_timeline(settings)
    # the ids the stored rows name (their summaries, their data): the intent, the refund, a stranger
    stored = [i for i in ids if booking.events.filter(Q(summary__contains=i) | Q(data__icontains=i)).exists()]
    assert len(stored) == 3

    for_support = _event_pages(support_client, booking)
    for_ops = _event_pages(ops_client, booking)

    assert not [i for i in stored if i in for_support]
    assert "&quot;provider_object&quot;: &quot;(hidden)&quot;" in for_support
    assert "payment.intent.unexpected" in for_support and f"{booking.payment.pk}:refund:1" in for_support
    assert [i for i in stored if i in for_ops] == stored and "(hidden)" not in for_ops


# --- an action: preview, confirm, once per token -------------------------------------------------
def test_a_refund_is_previewed_then_confirmed_once(ops_client):
    payment = paying_booking()
    url = action(payment.booking, "refund_payment")

    preview = ops_client.get(url, {"amount": "40"})
    form = {
        "token": token(preview),
        "amount": "40.00",
        "previewed": previewed(preview),
        "note": "broken heating",
    }
    done = ops_client.post(url, form)
    again = ops_client.post(url, form)

    body = preview.content.decode()
    assert preview.status_code == 200
    assert "Refund 40.00 EUR of the 360.00 EUR captured (0.00 EUR refunded so far)" in body
    assert 'id="provider-fallback"' in body
    assert (done.status_code, done.url) == (302, change(payment.booking))
    assert said(done)[0].startswith(f"{payment.booking.reference}: Refund. Refund of 40.00 EUR queued")
    assert said(again)[-1].endswith("nothing more was done.")
    [operation] = PaymentOperation.objects.filter(payment=payment)
    assert (operation.amount, operation.state) == (Decimal("40.00"), OperationState.OPEN)
    assert [r.kind for r in support_rows(payment.booking)] == ["support.refund_requested"]


def test_the_confirm_button_says_propose_when_the_amount_will_only_be_proposed(ops_client):
    # A tester pressed "Refund" for 250.00 and the refund was only proposed: the button and the
    # page's title now say what the confirm does, by the rule the action applies (needs_approval).
    payment = paying_booking()
    url = action(payment.booking, "refund_payment")

    small = ops_client.get(url, {"amount": "40"}).content.decode()
    large = ops_client.get(url, {"amount": "250"}).content.decode()
    # a confirm of another amount previews that one, with its own button
    moved = ops_client.post(url, {"token": "a" * 32, "amount": "250", "previewed": "40", "note": ""})

    assert 'value="Refund" name="confirm"' in small and "Propose" not in small
    assert 'value="Propose a refund" name="confirm"' in large
    assert "&rsaquo; Propose a refund" in large and "Above 200.00 EUR: only proposed." in large
    assert 'value="Propose a refund" name="confirm"' in moved.content.decode()
    assert not RefundProposal.objects.exists()


def test_the_console_tells_each_currency_s_own_approval_amount(ops_client, settings):
    """Reviewer: the panel and the refund page said "above 200.00" of a yen or a dinar payment,
    the euro's number. A currency with its own amount is told it; one with none, that any refund
    of it is only proposed."""
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY = {"JPY": Decimal("30000")}
    yen = paying_booking(price=Decimal("15000.00"), currency="JPY")
    dinar = paying_booking(price=Decimal("360.00"), currency="KWD")

    yen_panel = " ".join(ops_client.get(change(yen.booking)).content.decode().split())
    yen_refund = ops_client.get(action(yen.booking, "refund_payment"), {"amount": "5000"}).content.decode()
    dinar_panel = " ".join(ops_client.get(change(dinar.booking)).content.decode().split())
    dinar_refund = ops_client.get(action(dinar.booking, "refund_payment"), {"amount": "1"}).content.decode()

    assert "above 30000 JPY in all needs a second person's approval" in yen_panel
    assert 'value="Refund" name="confirm"' in yen_refund and "come to more than 30000 JPY" in yen_refund
    assert "of any amount needs a second person's approval: no approval amount is set for KWD" in dinar_panel
    assert 'value="Propose a refund" name="confirm"' in dinar_refund
    assert "Any amount of KWD (no approval amount is set for it): only proposed." in dinar_refund
    assert "come to any amount (no approval amount is set for KWD)" in dinar_refund


def test_a_confirm_of_another_amount_than_previewed_does_nothing_and_previews_that_one(ops_client):
    payment = paying_booking(refunded=Decimal("120.00"))
    url = action(payment.booking, "refund_payment")
    preview = ops_client.get(url, {"amount": "10"})
    assert "Refund 10.00 EUR of the 360.00 EUR captured" in preview.content.decode()

    changed = ops_client.post(
        url, {"token": token(preview), "amount": "150", "previewed": previewed(preview), "note": ""}
    )

    page = changed.content.decode()
    assert changed.status_code == 200
    assert not PaymentOperation.objects.filter(payment=payment).exists()
    assert support_rows(payment.booking) == []
    # said, and this page is the preview of what was sent, to confirm again
    assert re.search(
        r'id="previewed-errors">.*The amount changed: the preview was of 10.00 EUR, the confirm sent '
        r"150.00 EUR\. This page now previews 150.00 EUR\..*confirm again",
        page,
        re.S,
    )
    assert "Refund 150.00 EUR of the 360.00 EUR captured" in page
    assert "After it the customer will have paid 90.00 EUR" in page
    assert (previewed(changed), token(changed)) == ("150.00", token(preview))

    done = ops_client.post(
        url, {"token": token(changed), "amount": "150.00", "previewed": previewed(changed), "note": ""}
    )

    assert said(done)[0].startswith(f"{payment.booking.reference}: Refund. Refund of 150.00 EUR queued")
    [operation] = PaymentOperation.objects.filter(payment=payment)
    assert operation.amount == Decimal("150.00")


def test_a_confirm_that_carries_no_previewed_amount_does_nothing(ops_client):
    payment = paying_booking()
    url = action(payment.booking, "refund_payment")

    response = ops_client.post(url, {"token": "f" * 32, "amount": "25.00", "note": ""})

    assert response.status_code == 200
    assert re.search(r'id="previewed-errors">.*required', response.content.decode(), re.S)
    assert previewed(response) == "25.00"
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_the_refund_page_previews_what_its_confirm_offers_everything_refundable(ops_client):
    payment = paying_booking(refunded=Decimal("270.00"))
    url = action(payment.booking, "refund_payment")

    preview = ops_client.get(url)
    done = ops_client.post(
        url, {"token": token(preview), "amount": "90.00", "previewed": previewed(preview), "note": ""}
    )

    body = preview.content.decode()
    assert "Refund 90.00 EUR of the 360.00 EUR captured (270.00 EUR refunded so far)" in body
    assert "up to" not in body
    assert re.search(r'name="amount" value="90.00"', body)
    assert previewed(preview) == "90.00"
    assert said(done)[0].startswith(f"{payment.booking.reference}: Refund. Refund of 90.00 EUR queued")


@pytest.mark.parametrize(
    ("typed", "words"),
    [
        ("5,50", "Not an amount: digits 0-9, with a point before the cents (12.50)."),
        ("abc", "Not an amount: digits 0-9, with a point before the cents (12.50)."),
        # Decimal() reads these as 5, 10 and 10: the command's rule refuses them here too
        ("\u0665", "Not an amount: digits 0-9, with a point before the cents (12.50)."),
        ("1e1", "Not an amount: digits 0-9, with a point before the cents (12.50)."),
        ("10.000", "Not an amount: digits 0-9, with a point before the cents (12.50)."),
        ("-5", "More than 0."),
        ("0", "More than 0."),
        ("10.001", "10.001 EUR is not a whole number of the currency&#x27;s smallest unit"),
        ("NaN", "Not a number."),
        ("Infinity", "Not a number."),
        # Decimal reads them; scaling the first overflowed (a 500), the other took seconds of CPU
        ("1e999999", "1E+999999 EUR is outside what one payment may be"),
        ("9e999998", "9E+999998 EUR is outside what one payment may be"),
        ("1e400000", "1E+400000 EUR is outside what one payment may be"),
    ],
)
def test_an_invalid_amount_is_said_beside_it_and_nothing_is_offered_to_confirm(ops_client, typed, words):
    payment = paying_booking(refunded=Decimal("270.00"))
    url = action(payment.booking, "refund_payment")

    page = ops_client.get(url, {"amount": typed}).content.decode()
    sent = ops_client.post(url, {"token": "7" * 32, "amount": typed, "previewed": "10.00", "note": ""})

    for shown in (page, sent.content.decode()):
        assert re.search(rf'id="amount-errors"><ul class="errorlist"[^>]*><li>{re.escape(words)}</li>', shown)
        assert 'id="amount-invalid">Nothing to confirm' in shown
        assert f'id="preview-amount" name="amount" value="{typed}"' in shown
        assert 'id="confirm-form"' not in shown
        assert "Refund up to" not in shown and "90.00 EUR of the" not in shown
    assert sent.status_code == 200
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_a_refund_beyond_the_bound_is_shown_on_the_form(ops_client):
    payment = paying_booking(refunded=Decimal("350.00"))
    url = action(payment.booking, "refund_payment")

    response = ops_client.post(url, {"token": "b" * 32, "amount": "10.01", "previewed": "10.01", "note": ""})

    assert response.status_code == 302
    assert said(response) == ["Refund: At most 10.00 EUR can be refunded: 360.00 captured, 350.00 refunded."]
    assert not PaymentOperation.objects.filter(payment=payment).exists()


@pytest.mark.parametrize("sent", ["", "x" * 65])
def test_a_missing_or_overlong_token_is_said_on_the_form(ops_client, sent):
    payment = paying_booking()
    url = action(payment.booking, "refund_payment")

    response = ops_client.post(url, {"token": sent, "amount": "10.00", "previewed": "10.00", "note": ""})

    page = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'id="token-errors".*?<li>[^<]+</li>', page, re.S)
    assert not PaymentOperation.objects.filter(payment=payment).exists()
    # a fresh token to confirm with, not the one refused
    assert re.fullmatch(r"[0-9a-f]{32}", token(response))


def test_a_token_used_for_another_amount_is_refused_on_the_form(ops_client):
    payment = paying_booking()
    url = action(payment.booking, "refund_payment")
    sent = token(ops_client.get(url))
    ops_client.post(url, {"token": sent, "amount": "10.00", "previewed": "10.00", "note": ""})

    again = ops_client.post(url, {"token": sent, "amount": "10", "previewed": "10", "note": ""}, follow=True)
    response = ops_client.post(url, {"token": sent, "amount": "20.00", "previewed": "20.00", "note": ""})

    assert any("nothing more was done" in m for m in said(again))
    page = response.content.decode()
    assert response.status_code == 200
    # said even though the refund of 10 still open refuses another for now (no confirm form)
    assert re.search(r'id="token-errors".*?\(amount 10\).*?\(amount 20\)', page, re.S)
    assert list(PaymentOperation.objects.filter(payment=payment).values_list("amount", flat=True)) == [
        Decimal("10.00")
    ]


def test_a_refused_action_is_shown_without_a_confirm_form(ops_client):
    payment = paying_booking(status=S.CONFIRMED, payment_status=P.AUTHORIZED)

    page = ops_client.get(action(payment.booking, "void_payment")).content.decode()

    assert re.search(r'id="refusal">Not possible now: The booking owes 360.00 EUR as confirmed', page)
    assert 'id="confirm-form"' not in page


def test_an_action_page_needs_its_permission(support_client):
    payment = paying_booking(status=S.CONFIRMED, payment_status=P.AUTHORIZED)

    assert support_client.get(action(payment.booking, "capture_payment")).status_code == 403
    assert (
        support_client.post(action(payment.booking, "capture_payment"), {"token": "c" * 32}).status_code
        == 403
    )
    assert not PaymentOperation.objects.filter(payment=payment).exists()


# --- the two-person rule in the console ------------------------------------------------------------
def test_one_person_proposes_another_approves(groups):
    payment = paying_booking()
    proposer, proposer_user = client_of(groups, "support")
    approver, approver_user = client_of(groups, "ops")

    proposed = proposer.post(
        action(payment.booking, "refund_payment"),
        {
            "token": "d" * 32,
            "amount": "250.00",
            "previewed": "250.00",
            "note": "the pool was closed all week",
        },
    )
    proposal = RefundProposal.objects.get()
    own_page = proposer.get(change(payment.booking)).content.decode()
    approver_page = approver.get(change(payment.booking)).content.decode()
    preview = approver.get(decide(payment.booking, proposal.pk, "approve"))
    approved = approver.post(
        decide(payment.booking, proposal.pk, "approve"), {"token": token(preview), "note": "ok"}
    )

    # what happened (proposed), not the action asked ("Refund. Proposed …")
    assert said(proposed)[0].startswith(f"{payment.booking.reference}: Refund proposed (#{proposal.pk}): ")
    assert f'href="{decide(payment.booking, proposal.pk, "approve")}"' not in own_page
    assert "a second person approves it" in own_page
    assert f'href="{decide(payment.booking, proposal.pk, "reject")}">Withdraw<' in own_page
    assert f'href="{decide(payment.booking, proposal.pk, "approve")}"' in approver_page
    assert "the pool was closed all week" in preview.content.decode()
    assert said(approved)[0].startswith(
        f"{payment.booking.reference}: Approve the refund. Refund of 250.00 EUR queued"
    )
    proposal.refresh_from_db()
    assert (proposal.state, proposal.decided_by) == (ProposalState.APPROVED, approver_user)
    assert [(r.kind, r.actor_label) for r in support_rows(payment.booking)] == [
        ("support.refund_proposed", proposer_user.username),
        ("support.refund_approved", approver_user.username),
    ]
    assert PaymentOperation.objects.get(payment=payment).amount == Decimal("250.00")


def test_the_approve_page_warns_as_the_propose_page_did_that_the_customer_pays_less_than_owed(groups):
    payment = paying_booking()
    proposer, _ = client_of(groups, "support")
    approver, _ = client_of(groups, "ops")
    warned = (
        "After it the customer will have paid 110.00 EUR, less than the 360.00 EUR the booking owes as "
        "confirmed by its policy: automation never charges the difference."
    )

    propose_page = proposer.get(action(payment.booking, "refund_payment"), {"amount": "250.00"})
    proposer.post(
        action(payment.booking, "refund_payment"),
        {"token": "d" * 32, "amount": "250.00", "previewed": "250.00", "note": "the pool was closed"},
    )
    proposal = RefundProposal.objects.get()
    approve_page = approver.get(decide(payment.booking, proposal.pk, "approve"))
    reject_page = approver.get(decide(payment.booking, proposal.pk, "reject"))

    assert warned in propose_page.content.decode()
    assert warned in approve_page.content.decode() and 'id="confirm-form"' in approve_page.content.decode()
    assert "less than the" not in reject_page.content.decode()


def test_support_cannot_split_a_refund_under_the_approval_amount_in_the_console(support_client):
    payment = paying_booking(price=Decimal("500.00"))
    url = action(payment.booking, "refund_payment")
    first = support_client.post(
        url, {"token": "1" * 32, "amount": "200.00", "previewed": "200.00", "note": ""}
    )
    PaymentOperation.objects.filter(payment=payment).update(state=OperationState.SUCCEEDED)
    type(payment).objects.filter(pk=payment.pk).update(refunded_amount=Decimal("200.00"))

    preview = support_client.get(url, {"amount": "200"}).content.decode()
    no_note = support_client.post(
        url, {"token": "2" * 32, "amount": "200.00", "previewed": "200.00", "note": ""}
    )
    proposed = support_client.post(
        url, {"token": "3" * 32, "amount": "200.00", "previewed": "200.00", "note": "the rest"}
    )
    small = support_client.post(
        url, {"token": "4" * 32, "amount": "100.00", "previewed": "100.00", "note": ""}
    )

    assert said(first)[0].startswith(f"{payment.booking.reference}: Refund. Refund of 200.00 EUR queued")
    assert "Above 200.00 EUR: only proposed." in preview
    assert "with 200.00 EUR support refunded before, comes to 400.00 EUR" in preview
    assert no_note.status_code == 200
    assert (
        "Required: a refund of 200.00 EUR, with 200.00 EUR support refunded before"
        in no_note.content.decode()
    )
    proposal = RefundProposal.objects.get()
    assert said(proposed)[-1].startswith(f"{payment.booking.reference}: Refund proposed (#{proposal.pk}): ")
    assert said(small)[-1].startswith(f"Refund: Refund proposal #{proposal.pk} of 200.00 EUR by")
    assert [o.amount for o in PaymentOperation.objects.filter(payment=payment)] == [Decimal("200.00")]


def test_the_proposer_cannot_approve_their_own_in_the_console(groups):
    payment = paying_booking()
    client, _ = client_of(groups, "ops")
    client.post(
        action(payment.booking, "refund_payment"),
        {"token": "e" * 32, "amount": "300", "previewed": "300", "note": "why"},
    )
    proposal = RefundProposal.objects.get()

    preview = client.get(decide(payment.booking, proposal.pk, "approve")).content.decode()
    refused = client.post(decide(payment.booking, proposal.pk, "approve"), {"token": "f" * 32})

    assert "a second person must approve it" in preview and 'id="confirm-form"' not in preview
    assert refused.status_code == 403
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.PENDING
    assert not PaymentOperation.objects.filter(payment=payment).exists()


# --- pages -------------------------------------------------------------------------------------
def test_the_refund_proposals_list_and_payment_health_render(groups):
    payment = paying_booking()
    client, _ = client_of(groups, "ops")
    client.post(
        action(payment.booking, "refund_payment"),
        {"token": "9" * 32, "amount": "300", "previewed": "300", "note": "why"},
    )

    listing = client.get(reverse("admin:reconciliation_refundproposal_changelist")).content.decode()
    health = client.get(reverse("admin:reconciliation_payment_health")).content.decode()

    assert payment.booking.reference in listing
    assert re.search(r'id="provider-reachability"><strong>does not answer: ', health)
    assert ">1</a>" in health  # one refund proposal waiting
    assert "holds lapsing within 2 days<" in health  # twice the lapse margin, in words
    assert "1 refund proposal(s) waiting for a second person&#x27;s approval." in health


def test_a_refund_proposals_address_leads_to_its_bookings_payment_panel(groups):
    """Explorer: a proposal's page (the list's id link) showed its fields and no way to approve or
    reject it, titled with a bare booking id; those are on its booking's payment panel."""
    payment = paying_booking()
    client, _ = client_of(groups, "ops")
    client.post(
        action(payment.booking, "refund_payment"),
        {"token": "9" * 32, "amount": "300", "previewed": "300", "note": "why"},
    )
    proposal = RefundProposal.objects.get()
    panel = reverse("admin:bookings_booking_change", args=[payment.booking_id]) + "#payment"

    opened = client.get(reverse("admin:reconciliation_refundproposal_change", args=[proposal.pk]))
    listing = client.get(reverse("admin:reconciliation_refundproposal_changelist")).content.decode()

    assert opened.status_code == 302 and opened["Location"] == panel
    assert f'<a href="{panel}">{payment.booking.reference}</a>' in listing
    assert reverse("admin:reconciliation_refundproposal_change", args=[proposal.pk]) not in listing
    assert payment.booking.reference in str(proposal)
