"""Recording a refund the card refused as paid another way (a bank transfer, cash, a voucher: the card
takes nothing back), as a service, in the console and as a command: refused unless a refund the card
refused owes money (and only up to that, saying how it was paid, the method and a note with its
trace, by an operator with the refund permission, once per token); recorded, the ledger counts it
as given back (owed back down, `refunded_outside` up, the provider's refunds untouched), the method
is on the timeline, the payment panel and the command's output, the customer is told once per
recording in true words, automation stays at rest, and payment health lists the payment only while
money is owed. Above the approval amount (what support gave back of the payment, either way,
counted together) it is only proposed, and recorded, the customer told, once another person
approves it (the two-person rule of refunds, its proposals: approve, reject, withdraw). The
provider is not running here and is never asked; the whole story against a real provider process,
its card that refuses refunds and a worker is in tests/payments/test_refund_failed.py, and the
day's settlement listing it in tests/reconciliation/test_payment_provider.py."""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from bookings.customer_money import PaymentFacts, money_of, money_shown
from bookings.models import Booking, Notification, NotificationKind
from bookings.states import BookingState
from config.errors import Conflict, InvalidTransition, ValidationFailed
from payments.models import OperationKind, OperationState, Payment, PaymentOperation, PaymentStatus
from payments.services.operations import operation_open
from payments.services.outside import outside_refunds
from payments.services.runs import plan_for
from reconciliation.models import ProposalKind, ProposalState, RefundProposal
from reconciliation.selectors.payment_health import payment_health
from reconciliation.selectors.payment_panel import payment_panel
from reconciliation.services.support import Operator, SupportActionDenied, new_token
from reconciliation.services.support import payments as money
from tests.factories import UserFactory
from tests.reconciliation.conftest import CLOSED_PORT_URL
from tests.reconciliation.paying import PRICE, kinds, paying_booking, support_rows

S = BookingState
P = PaymentStatus
ZERO = Decimal("0.00")
pytestmark = pytest.mark.django_db

OWED_WORDS = (
    "A refund to your card could not be made. We still owe you 360.00 EUR; our support team will be "
    "in touch to give it back to you."
)
PART_WORDS = (
    "A refund to your card could not be made. We paid 100.00 EUR of it back to you another way and "
    "still owe you 260.00 EUR; our support team will be in touch to give it back to you."
)
ALL_WORDS = (
    "A refund to your card could not be made, so we paid the 360.00 EUR back to you another way "
    "instead: you paid 0.00 EUR."
)


@pytest.fixture(autouse=True)
def _provider_down(settings):
    settings.STRIPE_API_BASE = CLOSED_PORT_URL  # never asked: a call would fail loudly
    # One step, as below the approval amount: the two-person rule's tests set theirs.
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("1000.00")


def owed_back(owed: Decimal = PRICE) -> Payment:
    """A booking cancelled for free whose refund of everything the card refused after it was made,
    as the one door leaves it: nothing refunded, all owed back, the customer told so, at rest."""
    payment = paying_booking(status=S.CANCELLED, payment_status=P.CAPTURED)
    failed_at = timezone.now()
    PaymentOperation.objects.create(
        payment=payment,
        kind=OperationKind.REFUND,
        seq=1,
        idempotency_key=f"{payment.pk}:refund:1",
        amount=owed,
        state=OperationState.FAILED,
        closed_at=failed_at,
        failed_at=failed_at,
        failure_reason="expired_or_canceled_card",
    )
    Payment.objects.filter(pk=payment.pk).update(failed_refunds_owed=owed, next_check_at=None)
    facts = PaymentFacts(state="charged", currency="EUR", amount=PRICE, charged=PRICE, refund_failed=owed)
    Booking.objects.filter(pk=payment.booking_id).update(
        confirmed_shown_at=failed_at,
        cancellation_fee=ZERO,
        customer_money=money_of(facts).as_json(),
    )
    return Payment.objects.select_related("booking").get(pk=payment.pk)


def record(
    payment, user, amount, *, token=None, note="bank transfer ref TRF-2026-001", method="bank_transfer"
):
    return money.support_record_outside(
        booking_id=payment.booking_id,
        operator=Operator.for_user(user),
        token=token or new_token(),
        amount=amount,
        method=method,
        note=note,
    )


def money_mails(booking) -> list[dict]:
    return list(
        Notification.objects.filter(booking=booking, kind=NotificationKind.MONEY)
        .order_by("id")
        .values_list("money", flat=True)
    )


def ledger(payment) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    payment.refresh_from_db()
    return (
        payment.captured_amount,
        payment.refunded_amount,
        payment.failed_refunds_owed,
        payment.refunded_outside,
    )


# --- refusals ----------------------------------------------------------------------------------
def test_nothing_is_recorded_where_no_refund_the_card_refused_owes_money(ops_user):
    payment = paying_booking(status=S.CANCELLED, refunded=PRICE)  # refunded to the card in full

    shown = money.payment_preview(money.OUTSIDE, payment.booking, operator=Operator.for_user(ops_user))
    with pytest.raises(InvalidTransition, match="No refund that could not be made is owed back"):
        record(payment, ops_user, "10.00")

    assert (shown.allowed, shown.effects) == (False, [])
    assert ledger(payment) == (PRICE, PRICE, ZERO, ZERO)
    assert support_rows(payment.booking) == []


@pytest.mark.parametrize(
    ("typed", "refused"),
    [
        (
            "360.01",
            "At most 360.00 EUR is owed back after refunds that could not be made: 360.01 EUR is more",
        ),
        ("0", "more than nothing"),
        ("-5", "more than nothing"),
        ("1.005", "smallest unit"),
        ("NaN", "not a number"),
    ],
)
def test_an_amount_that_is_not_part_of_what_is_owed_back_is_refused(ops_user, typed, refused):
    payment = owed_back()

    with pytest.raises((InvalidTransition, ValidationFailed), match=refused):
        record(payment, ops_user, typed)

    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    assert support_rows(payment.booking) == []
    assert money_mails(payment.booking) == []


@pytest.mark.parametrize("note", ["", "   "])
def test_a_note_saying_how_it_was_paid_is_required(ops_user, note):
    payment = owed_back()

    with pytest.raises(ValidationFailed, match="Say how the money was paid") as refused:
        record(payment, ops_user, "360.00", note=note)

    assert "note" in refused.value.fields
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    assert support_rows(payment.booking) == []


@pytest.mark.parametrize("method", ["", "cheque", None])
def test_how_it_was_paid_is_required_and_one_of_the_choices(ops_user, method):
    payment = owed_back()

    with pytest.raises(ValidationFailed, match="bank_transfer, cash, voucher, other") as refused:
        record(payment, ops_user, "360.00", method=method)

    assert "method" in refused.value.fields
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    assert support_rows(payment.booking) == []
    assert money_mails(payment.booking) == []


def test_an_operator_without_the_refund_permission_is_refused(db):
    payment = owed_back()
    nobody = UserFactory(username="viewer-outside", is_staff=True)

    with pytest.raises(SupportActionDenied):
        record(payment, nobody, "360.00")

    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    assert money.PAYMENT_ACTIONS[money.OUTSIDE]["permission"] == "reconciliation.refund_payment"


def test_a_replayed_token_does_nothing_more_and_one_for_another_amount_is_a_conflict(ops_user):
    payment = owed_back()
    token = new_token()

    first = record(payment, ops_user, "100.00", token=token)
    again = record(payment, ops_user, "100.00", token=token)
    with pytest.raises(Conflict):
        record(payment, ops_user, "50.00", token=token)

    assert (first.performed, again.performed) == (True, False)
    assert "Already done" in again.message
    assert ledger(payment) == (PRICE, ZERO, Decimal("260.00"), Decimal("100.00"))
    assert [row.kind for row in support_rows(payment.booking)] == ["support.refund_recorded_outside"]
    assert len(money_mails(payment.booking)) == 1


def test_nothing_is_recorded_while_the_provider_may_give_money_back(ops_user, groups):
    payment = owed_back()
    operation_open(payment, kind=OperationKind.REFUND, amount=PRICE)  # support's refund in flight

    with pytest.raises(InvalidTransition, match="not known yet"):
        record(payment, ops_user, "360.00")
    PaymentOperation.objects.filter(payment=payment, state=OperationState.OPEN).update(
        state=OperationState.DECLINED
    )
    RefundProposal.objects.create(
        booking=payment.booking,
        payment=payment,
        amount=PRICE,
        currency="EUR",
        note="the owed refund, again",
        proposed_by_label="ops:someone",
    )
    with pytest.raises(InvalidTransition, match="waits for approval"):
        record(payment, ops_user, "360.00")

    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)


# --- recorded: the ledger, the customer, automation, payment health -------------------------------
def test_recorded_in_part_then_in_full_the_ledger_counts_it_and_the_customer_is_told_each_once(ops_user):
    payment = owed_back()
    booking = payment.booking
    assert money_shown(booking).text == OWED_WORDS
    assert [r.booking for r in payment_health(probe=False).refunds_failed] == [booking.reference]
    version = booking.status_version

    part = record(payment, ops_user, "100")

    assert part.message.startswith(
        "Recorded 100.00 EUR as paid back another way (bank transfer); 260.00 EUR is owed still"
    )
    assert ledger(payment) == (PRICE, ZERO, Decimal("260.00"), Decimal("100.00"))
    booking.refresh_from_db()
    told = money_shown(booking)
    assert (told.code, told.refund_failed, told.refunded_outside, told.text) == (
        "refund_failed",
        Decimal("260.00"),
        Decimal("100.00"),
        PART_WORDS,
    )
    assert booking.status_version == version + 1
    assert [r.owed for r in payment_health(probe=False).refunds_failed] == ["260.00"]
    assert plan_for(booking, payment, open_operation=False).step == "nothing"  # still support's

    full = record(payment, ops_user, "260.00", method="cash", note="paid at the front desk, receipt 4411")

    assert full.message.endswith("nothing is owed back any more. The customer is told.")
    assert ledger(payment) == (PRICE, ZERO, ZERO, PRICE)
    booking.refresh_from_db()
    told = money_shown(booking)
    assert (told.code, told.text) == ("refunded_outside", ALL_WORDS)
    assert "still owe" not in told.text
    assert booking.status_version == version + 2
    # captured - refunded - paid back another way = what the cancelled booking owes (nothing):
    # at rest, nothing asked of the provider (which still says nothing was refunded)
    assert PRICE - ZERO - PRICE == ZERO
    assert payment.next_check_at is None
    assert plan_for(booking, payment, open_operation=False).step == "nothing"
    assert payment_health(probe=False).refunds_failed == []
    assert not any(booking.reference in problem for problem in payment_health(probe=False).problems)
    # each recording told once, by one mail of the money, in the words of that moment
    assert [(m["code"], m.get("refund_failed"), m.get("refunded_outside")) for m in money_mails(booking)] == [
        ("refund_failed", "260.00", "100.00"),
        ("refunded_outside", None, "360.00"),
    ]
    rows = [k for k in kinds(booking) if "outside" in k]
    assert rows == ["payment.refunded_outside", "support.refund_recorded_outside"] * 2
    [first, second] = support_rows(booking)
    assert first.actor_label == Operator.for_user(ops_user).label
    assert (first.data["note"], first.data["amount"], second.data["owed"]) == (
        "bank transfer ref TRF-2026-001",
        "100.00",
        "0.00",
    )
    assert not PaymentOperation.objects.filter(payment=payment).exclude(seq=1).exists()  # no call
    # how each was paid: a choice, on both rows of each recording, in their summaries too
    assert (first.data["method"], second.data["method"], full.method) == ("bank_transfer", "cash", "cash")
    assert "as paid another way (cash)" in second.summary
    recorded = [(o.amount, o.method, o.recorded_by, o.approved_by) for o in outside_refunds(booking=booking)]
    assert recorded == [
        (Decimal("100.00"), "bank_transfer", first.actor_label, ""),
        (Decimal("260.00"), "cash", first.actor_label, ""),
    ]


def test_a_refund_through_the_provider_counts_what_was_paid_another_way(ops_user):
    """Paid back 100 another way, at most the other 260 may go back through the provider."""
    payment = owed_back()
    record(payment, ops_user, "100.00")

    with pytest.raises(
        InvalidTransition, match=r"At most 260.00 EUR can be refunded.*100.00 paid back another"
    ):
        money.support_refund(
            booking_id=payment.booking_id,
            operator=Operator.for_user(ops_user),
            token=new_token(),
            amount="300.00",
            note="again",
        )


def test_the_customer_s_api_and_page_say_it(ops_user, api_client, customer):
    payment = owed_back()
    Booking.objects.filter(pk=payment.booking_id).update(customer=customer)
    record(payment, ops_user, "360.00")

    shown = api_client.get(f"/api/v1/bookings/{payment.booking.reference}").json()["money"]
    from django.test import Client

    web = Client()
    web.force_login(customer)
    page = web.get(f"/bookings/{payment.booking.reference}/").content.decode()

    assert (shown["code"], shown["message"], shown["refunded_outside"], shown["refund_failed"]) == (
        "refunded_outside",
        ALL_WORDS,
        "360.00",
        "0.00",
    )
    assert ALL_WORDS in page and "We still owe you" not in page
    assert "Our support team will be in touch about the refund" not in page


# --- the console -----------------------------------------------------------------------------------
def _action(booking) -> str:
    return reverse("admin:bookings_booking_payment_action", args=[booking.pk, money.OUTSIDE])


def _hidden(response, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', response.content.decode()).group(1)


def test_the_panel_offers_it_only_while_money_is_owed_back(support_client):
    owing, settled = owed_back(), paying_booking(status=S.CANCELLED, refunded=PRICE)

    owing_page = support_client.get(reverse("admin:bookings_booking_change", args=[owing.booking_id]))
    settled_page = support_client.get(reverse("admin:bookings_booking_change", args=[settled.booking_id]))

    assert f'data-action="{money.OUTSIDE}"' in owing_page.content.decode()
    assert "Record a refund paid another way" in owing_page.content.decode()
    assert f'data-action="{money.OUTSIDE}"' not in settled_page.content.decode()


def test_the_console_previews_then_records_the_previewed_amount_once(support_client):
    payment = owed_back()
    booking = payment.booking

    page = support_client.get(_action(booking))
    body = page.content.decode()
    assert page.status_code == 200
    assert "Record 360.00 EUR of the 360.00 EUR owed back" in body
    assert 'value="Record a refund paid another way" name="confirm"' in body  # one step: not proposed
    assert 'id="owed-back">360.00 EUR' in body
    assert _hidden(page, "previewed") == "360.00"
    token = _hidden(page, "token")

    # another amount than previewed: nothing done, that amount previewed instead
    changed = support_client.post(
        _action(booking), {"token": token, "amount": "100.00", "previewed": "360.00", "note": "TRF-1"}
    )
    assert changed.status_code == 200 and "The amount changed" in changed.content.decode()
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    # no note, no method: each said beside its field, nothing done
    unsaid = support_client.post(
        _action(booking),
        {"token": token, "amount": "360.00", "previewed": "360.00", "note": "", "method": ""},
    )
    assert unsaid.status_code == 200
    assert set(unsaid.context["form"].errors) == {"note", "method"}
    assert "the trace of the payment" in unsaid.content.decode()
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    # a method the form does not offer
    odd = support_client.post(
        _action(booking),
        {"token": token, "amount": "360.00", "previewed": "360.00", "note": "TRF", "method": "cheque"},
    )
    assert odd.status_code == 200 and "cheque is not one of the available choices" in odd.content.decode()
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)

    form = {
        "token": token,
        "amount": "360.00",
        "previewed": "360.00",
        "note": "TRF-2026-001, bank",
        "method": "bank_transfer",
    }
    done = support_client.post(_action(booking), form)
    twice = support_client.post(_action(booking), form)

    assert done.status_code == 302 and twice.status_code == 302
    assert ledger(payment) == (PRICE, ZERO, ZERO, PRICE)
    assert len(support_rows(booking)) == 1
    panel = support_client.get(reverse("admin:bookings_booking_change", args=[booking.pk])).content.decode()
    assert 'id="payment-refunded-outside">360.00 EUR' in panel
    assert 'id="payment-refund-failed"' not in panel
    assert f'data-action="{money.OUTSIDE}"' not in panel
    # each recording on the panel, with how it was paid
    assert re.search(r'<tr data-method="bank_transfer">.*?360\.00 EUR.*?Bank transfer', panel, re.S)
    assert support_rows(booking)[0].data["method"] == "bank_transfer"


# --- the command -----------------------------------------------------------------------------------
def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("record_outside_refund", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_previews_needs_a_method_and_a_note_and_records_once_per_token(ops_user):
    payment = owed_back()
    reference = payment.booking.reference
    who = ("--no-live", "--as", ops_user.username)
    bank = ("--method", "bank_transfer")

    dry = json.loads(_run(reference, "--amount", "360", "--dry-run", "--json", *who))
    [shown] = dry["previews"]
    assert (shown["allowed"], shown["amount"], shown["ours"]["owed_back"]) == (True, "360.00", "360.00")
    with pytest.raises(CommandError, match="needs --method and --note"):
        _run(reference, "--amount", "360", "--yes", *who)
    with pytest.raises(CommandError, match="needs --method"):
        _run(reference, "--amount", "360", "--note", "TRF-9", "--yes", *who)
    with pytest.raises(CommandError, match="invalid choice: 'cheque'"):
        _run(reference, "--amount", "360", "--method", "cheque", "--note", "TRF-9", "--yes", *who)
    out = io.StringIO()
    with pytest.raises(CommandError, match="nothing was done"):
        call_command(
            "record_outside_refund",
            reference,
            "--amount",
            "400",
            *bank,
            "--note",
            "TRF-9",
            "--yes",
            *who,
            stdout=out,
        )
    assert "At most 360.00 EUR is owed back" in out.getvalue()
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)

    said = _run(
        reference, "--amount", "360", *bank, "--note", "TRF-9", "--yes", "--token", "t-outside-1", *who
    )
    again = _run(
        reference, "--amount", "360", *bank, "--note", "TRF-9", "--yes", "--token", "t-outside-1", *who
    )

    assert "paid back another way (bank transfer); nothing is owed back any more" in said
    assert "Already done" in again
    assert ledger(payment) == (PRICE, ZERO, ZERO, PRICE)
    assert [(row.data["note"], row.data["method"]) for row in support_rows(payment.booking)] == [
        ("TRF-9", "bank_transfer")
    ]


def test_the_command_s_json_and_preview_say_how_it_was_paid(ops_user):
    payment = owed_back()
    reference = payment.booking.reference
    who = ("--no-live", "--as", ops_user.username)

    dry = _run(reference, "--amount", "100", "--method", "voucher", "--dry-run", *who)
    done = json.loads(
        _run(reference, "--amount", "100", "--method", "voucher", "--note", "VCH-77", "--yes", "--json", *who)
    )

    assert re.search(r"│ paid by\s*│ Voucher or credit", dry), dry
    assert "by voucher or credit, with the note saying how" in dry
    [outcome] = done["results"]
    assert (outcome["preview"]["method"], outcome["result"]["method"]) == ("voucher", "voucher")
    assert outcome["result"]["message"].startswith("Recorded 100.00 EUR as paid back another way (voucher or")


def test_a_token_used_for_one_method_is_a_conflict_for_another(ops_user):
    payment = owed_back()
    token = new_token()
    record(payment, ops_user, "100.00", token=token)

    with pytest.raises(Conflict):
        record(payment, ops_user, "100.00", token=token, method="cash")

    assert ledger(payment) == (PRICE, ZERO, Decimal("260.00"), Decimal("100.00"))


def test_the_console_s_refund_offers_what_the_refused_refund_owes_not_the_fee_the_policy_keeps(
    support_client,
):
    # Cancelled with a fee of 90.00: the refund of the other 270.00 was refused by the card. A
    # Refund opened without an amount offered all 360.00 refundable (a tester confirmed it by
    # mistake: a proposal giving back the fee too).
    payment = owed_back(Decimal("270.00"))
    Booking.objects.filter(pk=payment.booking_id).update(cancellation_fee=Decimal("90.00"))

    page = support_client.get(
        reverse("admin:bookings_booking_payment_action", args=[payment.booking_id, money.REFUND])
    )

    assert page.status_code == 200
    assert _hidden(page, "previewed") == "270.00"
    assert "Refund 270.00 EUR" in page.content.decode()


# --- the two-person rule -------------------------------------------------------------------------
@pytest.fixture
def two_person(settings):
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("200.00")


def approve(proposal_id, user, *, token=None, note=""):
    return money.support_refund_approve(
        proposal_id=proposal_id, operator=Operator.for_user(user), token=token or new_token(), note=note
    )


def test_above_the_approval_amount_it_is_only_proposed_and_the_customer_told_nothing(
    two_person, support_user
):
    payment = owed_back()
    booking = payment.booking
    version = Booking.objects.get(pk=booking.pk).status_version

    shown = money.payment_preview(
        money.OUTSIDE, booking, operator=Operator.for_user(support_user), amount=PRICE, method="cash"
    )
    proposed = record(payment, support_user, "360.00", method="cash", note="paid at the desk, receipt 4411")

    proposal = RefundProposal.objects.get(payment=payment)
    assert (proposal.kind, proposal.method, proposal.amount, proposal.state, proposal.proposed_by) == (
        ProposalKind.OUTSIDE,
        "cash",
        PRICE,
        ProposalState.PENDING,
        support_user,
    )
    assert (proposed.proposal_id, proposed.method) == (proposal.pk, "cash")
    assert proposed.message == (
        f"Refund paid another way (cash) proposed (#{proposal.pk}): 360.00 EUR paid back another way "
        "is above 200.00 EUR; it is recorded, "
        "and the customer told, once another person approves it."
    )
    assert shown.needs_approval and shown.effects[0].startswith("Above 200.00 EUR: only proposed.")
    assert "by cash" in shown.effects[1]
    assert shown.effects[-1].startswith("The customer is told once it is approved")
    # nothing recorded, nobody told
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    assert money_mails(booking) == []
    booking.refresh_from_db()
    assert (booking.status_version, money_shown(booking).text) == (version, OWED_WORDS)
    [row] = support_rows(booking)
    assert (row.kind, row.data["proposal"], row.data["proposal_kind"], row.data["method"]) == (
        "support.refund_proposed",
        proposal.pk,
        "outside",
        "cash",
    )
    assert row.summary.startswith(
        f"Refund paid another way (cash) of 360.00 EUR proposed by {support_user.username} (#{proposal.pk})"
    )
    assert "payment.refunded_outside" not in kinds(booking)


def test_at_the_approval_amount_it_stays_one_step_and_what_was_paid_back_counts_after(
    two_person, support_user
):
    payment = owed_back()

    first = record(payment, support_user, "200.00")
    second = record(payment, support_user, "160.00", note="the rest, TRF-2")

    assert (first.proposal_id, second.proposal_id is not None) == (None, True)
    assert second.message.startswith(
        f"Refund paid another way (bank transfer) proposed (#{second.proposal_id}): 160.00 EUR paid back "
        "another way, with 200.00 EUR paid back "
        "another way before, comes to 360.00 EUR: above 200.00 EUR"
    )
    assert ledger(payment) == (PRICE, ZERO, Decimal("160.00"), Decimal("200.00"))


def test_money_paid_another_way_counts_with_support_s_refunds_through_the_provider(two_person, support_user):
    """150 paid back by bank transfer, then 60 refunded to the card: 210 given back by support."""
    payment = owed_back(Decimal("150.00"))
    record(payment, support_user, "150.00")

    refunded = money.support_refund(
        booking_id=payment.booking_id,
        operator=Operator.for_user(support_user),
        token=new_token(),
        amount="60.00",
        note="the minibar too",
    )

    assert refunded.proposal_id is not None and not refunded.operation_key
    assert "with 150.00 EUR paid back another way before, comes to 210.00 EUR" in refunded.message


def test_the_proposer_cannot_approve_it_nor_anyone_without_the_approve_permission(
    two_person, support_user, ops_user, groups
):
    payment = owed_back()
    proposed = record(payment, ops_user, "360.00")

    shown = money.proposal_preview(
        money.APPROVE, RefundProposal.objects.get(), operator=Operator.for_user(ops_user), live=False
    )
    with pytest.raises(SupportActionDenied, match="a second person must approve it"):
        approve(proposed.proposal_id, ops_user)
    with pytest.raises(SupportActionDenied, match=r"reconciliation\.approve_refund"):
        approve(proposed.proposal_id, support_user)

    assert (shown.allowed, shown.refusal) == (
        False,
        f"{ops_user.username} proposed it: a second person must approve it.",
    )
    assert RefundProposal.objects.get().state == ProposalState.PENDING
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    assert money_mails(payment.booking) == []


def test_another_person_approves_it_recorded_once_and_the_customer_told_once(
    two_person, support_user, ops_user
):
    payment = owed_back()
    booking = payment.booking
    record(payment, support_user, "360.00", method="bank_transfer", note="TRF-2026-0042")
    proposal = RefundProposal.objects.get()
    token = new_token()

    shown = money.proposal_preview(money.APPROVE, proposal, operator=Operator.for_user(ops_user), live=False)
    approved = approve(proposal.pk, ops_user, token=token, note="checked the bank statement")
    again = approve(proposal.pk, ops_user, token=token)

    assert shown.allowed and shown.method == "bank_transfer"
    assert shown.effects[0] == (
        f"Approve proposal #{proposal.pk} of a refund paid another way (bank transfer) by "
        f"{support_user.username}: TRF-2026-0042"
    )
    assert shown.effects[1].startswith("Record 360.00 EUR of the 360.00 EUR owed back")
    assert "by bank transfer" in shown.effects[1]
    assert (approved.performed, approved.proposal_id, approved.method, again.performed) == (
        True,
        proposal.pk,
        "bank_transfer",
        False,
    )
    assert approved.message == (
        f"Proposal #{proposal.pk} by {support_user.username} approved. Recorded 360.00 EUR as paid back "
        "another way (bank transfer); nothing is owed back any more. The customer is told."
    )
    proposal.refresh_from_db()
    assert (proposal.state, proposal.decided_by, proposal.operation, proposal.decision_note) == (
        ProposalState.APPROVED,
        ops_user,
        None,
        "checked the bank statement",
    )
    assert ledger(payment) == (PRICE, ZERO, ZERO, PRICE)
    assert not PaymentOperation.objects.filter(payment=payment).exclude(seq=1).exists()  # no call
    booking.refresh_from_db()
    assert money_shown(booking).text == ALL_WORDS
    assert [m["code"] for m in money_mails(booking)] == ["refunded_outside"]  # told once, when approved
    assert [k for k in kinds(booking) if k.startswith("support.") or "outside" in k] == [
        "support.refund_proposed",
        "payment.refunded_outside",
        "support.refund_approved",
    ]
    [recorded] = outside_refunds(booking=booking)
    assert (recorded.method, recorded.recorded_by, recorded.approved_by, recorded.proposal) == (
        "bank_transfer",
        support_user.username,
        ops_user.username,
        proposal.pk,
    )
    approval = support_rows(booking)[-1]
    assert (approval.data["proposal_kind"], approval.data["method"], approval.data["proposed_by"]) == (
        "outside",
        "bank_transfer",
        support_user.username,
    )
    assert approval.summary.startswith(
        f"Refund paid another way (bank transfer) of 360.00 EUR (#{proposal.pk}, proposed by "
        f"{support_user.username}) approved by {ops_user.username} and recorded"
    )
    assert plan_for(booking, payment, open_operation=False).step == "nothing"


def test_an_approval_is_refused_when_the_amount_is_no_longer_owed(two_person, support_user, ops_user):
    payment = owed_back()
    proposed = record(payment, support_user, "300.00")
    # meanwhile a refund made since gave 100 of it back (what the one door then writes)
    Payment.objects.filter(pk=payment.pk).update(failed_refunds_owed=Decimal("100.00"))
    proposal = RefundProposal.objects.get()

    shown = money.proposal_preview(money.APPROVE, proposal, operator=Operator.for_user(ops_user), live=False)
    with pytest.raises(InvalidTransition, match=r"Only 100\.00 EUR is owed back now"):
        approve(proposed.proposal_id, ops_user)

    assert (shown.allowed, shown.effects) == (False, [])
    assert shown.refusal == (
        "Only 100.00 EUR is owed back now after refunds that could not be made: 300.00 EUR paid another "
        "way is more than is owed. Reject the proposal (a smaller one may be proposed)."
    )
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.PENDING
    assert ledger(payment) == (PRICE, ZERO, Decimal("100.00"), ZERO)
    assert money_mails(payment.booking) == []


def test_a_proposal_waiting_blocks_any_other_way_of_giving_the_money_back(two_person, support_user, ops_user):
    payment = owed_back()
    proposed = record(payment, support_user, "300.00")

    with pytest.raises(
        InvalidTransition, match=rf"Proposal #{proposed.proposal_id} of a refund paid another"
    ):
        record(payment, ops_user, "10.00")
    with pytest.raises(InvalidTransition, match=rf"Proposal #{proposed.proposal_id} .* waits for approval"):
        money.support_refund(
            booking_id=payment.booking_id,
            operator=Operator.for_user(ops_user),
            token=new_token(),
            amount="10.00",
            note="",
        )

    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    assert not PaymentOperation.objects.filter(payment=payment).exclude(seq=1).exists()


@pytest.mark.parametrize("by", ["proposer", "approver"])
def test_it_is_withdrawn_by_its_proposer_or_rejected_by_an_approver(two_person, support_user, ops_user, by):
    payment = owed_back()
    proposed = record(payment, support_user, "300.00")
    who = support_user if by == "proposer" else ops_user
    how = "withdrawn" if by == "proposer" else "rejected"

    decided = money.support_refund_reject(
        proposal_id=proposed.proposal_id, operator=Operator.for_user(who), token=new_token()
    )
    with pytest.raises(InvalidTransition, match=f"was already rejected by {who.username}"):
        approve(proposed.proposal_id, ops_user if by == "proposer" else UserFactory(is_superuser=True))

    assert decided.message == (
        f"Proposal #{proposed.proposal_id} of a refund paid another way (bank transfer) {how}: nothing was "
        "recorded, and the customer is told nothing."
    )
    assert RefundProposal.objects.get().state == ProposalState.REJECTED
    row = support_rows(payment.booking)[-1]
    assert (row.kind, row.data["proposal_kind"], row.data["withdrawn"]) == (
        "support.refund_rejected",
        "outside",
        by == "proposer",
    )
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    assert money_mails(payment.booking) == []
    # with nothing waiting, it may be recorded (or proposed) again
    assert record(payment, support_user, "100.00").proposal_id is None


def test_the_console_proposes_it_and_another_person_approves_it_from_the_panel(
    two_person, support_client, ops_client, ops_user
):
    payment = owed_back()
    booking = payment.booking
    page = support_client.get(_action(booking))
    assert "Above 200.00 EUR: only proposed." in page.content.decode()
    # its button says so (at or below the amount, it records: test_the_console_previews_then_...)
    assert 'value="Propose a refund paid another way" name="confirm"' in page.content.decode()

    proposed = support_client.post(
        _action(booking),
        {
            "token": _hidden(page, "token"),
            "amount": "360.00",
            "previewed": "360.00",
            "note": "TRF-2026-0042",
            "method": "bank_transfer",
        },
    )
    proposal = RefundProposal.objects.get()
    assert proposed.status_code == 302
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    panel = ops_client.get(reverse("admin:bookings_booking_change", args=[booking.pk])).content.decode()
    assert f'data-proposal="{proposal.pk}" data-proposal-kind="outside"' in panel
    assert "paid another way: Bank transfer" in panel
    approve_url = reverse("admin:bookings_booking_refund_proposal", args=[booking.pk, proposal.pk, "approve"])
    assert approve_url in panel

    preview = ops_client.get(approve_url)
    body = preview.content.decode()
    assert "Approve the refund paid another way" in body
    assert f"Proposal #{proposal.pk} of a refund paid another way (bank transfer): 360.00 EUR" in body
    done = ops_client.post(approve_url, {"token": _hidden(preview, "token"), "note": "seen on the statement"})

    assert done.status_code == 302
    assert ledger(payment) == (PRICE, ZERO, ZERO, PRICE)
    shown = payment_panel(booking, operator=Operator.for_user(ops_user), live=False).as_dict()
    assert [(o["amount"], o["method"], o["approved_by"]) for o in shown["paid_outside"]] == [
        ("360.00", "bank_transfer", ops_user.username)
    ]
    assert [(p["kind"], p["method"], p["state"]) for p in shown["proposals"]] == [
        ("outside", "bank_transfer", "approved")
    ]


def test_the_command_proposes_it_over_the_approval_amount_and_approve_refund_records_it(
    two_person, support_user, ops_user, typed_by
):
    payment = owed_back()
    reference = payment.booking.reference
    typed_by("sam")
    # without a terminal nor --yes, what it would be asked is what it does: propose
    with pytest.raises(CommandError, match=r"^This proposes the recording for another person's approval"):
        _run(reference, "--amount", "360", "--method", "cash", "--note", "receipt", "--no-live")

    proposed = json.loads(
        _run(
            reference,
            *("--amount", "360", "--method", "cash", "--note", "receipt 4411", "--yes", "--json"),
            *("--no-live", "--as", support_user.username),
        )
    )
    [outcome] = proposed["results"]
    proposal_id = outcome["result"]["proposal"]
    assert outcome["preview"]["title"] == "Propose a refund paid another way"
    assert (outcome["preview"]["needs_approval"], outcome["result"]["method"]) == (True, "cash")
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)

    typed_by("olga")  # another person at the shell: the same OS user is the same person
    out = io.StringIO()
    call_command(
        "approve_refund", str(proposal_id), "--dry-run", "--no-live", "--as", ops_user.username, stdout=out
    )
    dry = out.getvalue()
    assert re.search(r"│ paid by\s*│ Cash", dry) and "Refund paid another way (cash): 360.00 EUR" in dry
    out = io.StringIO()
    call_command(
        "approve_refund",
        str(proposal_id),
        *("--yes", "--json", "--no-live", "--as", ops_user.username),
        stdout=out,
    )
    [approved] = json.loads(out.getvalue())["results"]

    assert (approved["result"]["performed"], approved["result"]["method"]) == (True, "cash")
    assert "Recorded 360.00 EUR as paid back another way (cash)" in approved["result"]["message"]
    assert ledger(payment) == (PRICE, ZERO, ZERO, PRICE)
    assert RefundProposal.objects.get(pk=proposal_id).decided_by == ops_user
