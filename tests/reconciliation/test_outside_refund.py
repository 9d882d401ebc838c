"""Recording a refund the card refused as paid another way (a bank transfer: the card takes nothing
back), as a service, in the console and as a command: refused unless a refund the card refused owes
money (and only up to that, with a note saying how it was paid, by an operator with the refund
permission, once per token); recorded, the ledger counts it as given back (owed back down,
`refunded_outside` up, the provider's refunds untouched), the customer is told once per recording
in true words, automation stays at rest, and payment health lists the payment only while money is
owed. The provider is not running here and is never asked; the whole story against a real provider
process, its card that refuses refunds and a worker is in tests/payments/test_refund_failed.py."""

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
from payments.services.runs import plan_for
from reconciliation.models import RefundProposal
from reconciliation.selectors.payment_health import payment_health
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


def record(payment, user, amount, *, token=None, note="bank transfer ref TRF-2026-001"):
    return money.support_record_outside(
        booking_id=payment.booking_id,
        operator=Operator.for_user(user),
        token=token or new_token(),
        amount=amount,
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
    with pytest.raises(InvalidTransition, match="No refund the card refused is owed back"):
        record(payment, ops_user, "10.00")

    assert (shown.allowed, shown.effects) == (False, [])
    assert ledger(payment) == (PRICE, PRICE, ZERO, ZERO)
    assert support_rows(payment.booking) == []


@pytest.mark.parametrize(
    ("typed", "refused"),
    [
        ("360.01", "At most 360.00 EUR is owed back after refunds the card refused: 360.01 EUR is more"),
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

    assert part.message.startswith("Recorded 100.00 EUR as paid back another way; 260.00 EUR is owed still")
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

    full = record(payment, ops_user, "260.00")

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
    assert 'id="owed-back">360.00 EUR' in body
    assert _hidden(page, "previewed") == "360.00"
    token = _hidden(page, "token")

    # another amount than previewed: nothing done, that amount previewed instead
    changed = support_client.post(
        _action(booking), {"token": token, "amount": "100.00", "previewed": "360.00", "note": "TRF-1"}
    )
    assert changed.status_code == 200 and "The amount changed" in changed.content.decode()
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)
    # no note: said beside the field, nothing done
    unsaid = support_client.post(
        _action(booking), {"token": token, "amount": "360.00", "previewed": "360.00", "note": ""}
    )
    assert unsaid.status_code == 200 and "how it was paid" in unsaid.content.decode()
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)

    form = {"token": token, "amount": "360.00", "previewed": "360.00", "note": "TRF-2026-001, bank"}
    done = support_client.post(_action(booking), form)
    twice = support_client.post(_action(booking), form)

    assert done.status_code == 302 and twice.status_code == 302
    assert ledger(payment) == (PRICE, ZERO, ZERO, PRICE)
    assert len(support_rows(booking)) == 1
    panel = support_client.get(reverse("admin:bookings_booking_change", args=[booking.pk])).content.decode()
    assert 'id="payment-refunded-outside">360.00 EUR' in panel
    assert 'id="payment-refund-failed"' not in panel
    assert f'data-action="{money.OUTSIDE}"' not in panel


# --- the command -----------------------------------------------------------------------------------
def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("record_outside_refund", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_the_command_previews_needs_a_note_and_records_once_per_token(ops_user):
    payment = owed_back()
    reference = payment.booking.reference
    who = ("--no-live", "--as", ops_user.username)

    dry = json.loads(_run(reference, "--amount", "360", "--dry-run", "--json", *who))
    [shown] = dry["previews"]
    assert (shown["allowed"], shown["amount"], shown["ours"]["owed_back"]) == (True, "360.00", "360.00")
    with pytest.raises(CommandError, match="needs --note"):
        _run(reference, "--amount", "360", "--yes", *who)
    out = io.StringIO()
    with pytest.raises(CommandError, match="nothing was done"):
        call_command(
            "record_outside_refund",
            reference,
            "--amount",
            "400",
            "--note",
            "TRF-9",
            "--yes",
            *who,
            stdout=out,
        )
    assert "At most 360.00 EUR is owed back" in out.getvalue()
    assert ledger(payment) == (PRICE, ZERO, PRICE, ZERO)

    said = _run(reference, "--amount", "360", "--note", "TRF-9", "--yes", "--token", "t-outside-1", *who)
    again = _run(reference, "--amount", "360", "--note", "TRF-9", "--yes", "--token", "t-outside-1", *who)

    assert "nothing is owed back any more" in said and "Already done" in again
    assert ledger(payment) == (PRICE, ZERO, ZERO, PRICE)
    assert [row.data["note"] for row in support_rows(payment.booking)] == ["TRF-9"]


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
