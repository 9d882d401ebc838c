"""The payment support actions as services: refused without the permission, previewed, bounded by
what was captured and not refunded, once per token, fenced by an open operation, and the
two-person rule (one proposes, another approves; the proposer never approves their own). The
provider is not asked here (the console's path: the run is queued after commit); the same
actions against a real provider are in test_payment_provider.py."""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from bookings.states import BookingState
from config.errors import InvalidTransition, ValidationFailed
from payments.models import OperationKind, OperationState, PaymentOperation, PaymentStatus
from payments.services.operations import operation_open
from reconciliation.models import ProposalState, RefundProposal
from reconciliation.services.support import Operator, SupportActionDenied, new_token
from reconciliation.services.support import payments as money
from tests.factories import UserFactory
from tests.reconciliation.conftest import calls
from tests.reconciliation.paying import kinds, paying_booking, support_rows

S = BookingState
P = PaymentStatus
pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _approval_above(settings):
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("200.00")


@pytest.fixture
def payments_queue(broker) -> str:
    import payments.tasks  # noqa: F401  (declares the payments queue)

    broker.flush("payments")
    yield "payments"
    broker.flush("payments")


def op(user) -> Operator:
    return Operator.for_user(user)


def second_ops(groups):
    user = UserFactory(username=f"ops2-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.groups.set([groups["ops"]])
    return user


def refund(payment, user, amount, *, token=None, note="customer goodwill"):
    return money.support_refund(
        booking_id=payment.booking_id, operator=op(user), token=token or new_token(), amount=amount, note=note
    )


# --- permissions -----------------------------------------------------------------------------
def test_a_user_without_the_permission_is_refused_and_nothing_is_written(db):
    payment = paying_booking()
    nobody = UserFactory(is_staff=True)

    for action in (money.REFUND, money.CAPTURE, money.VOID):
        with pytest.raises(SupportActionDenied):
            money.payment_action_run(
                action, booking_id=payment.booking_id, operator=op(nobody), token=new_token(), amount="10"
            )

    assert support_rows(payment.booking) == []
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_support_may_refund_but_not_capture_void_or_approve(support_user):
    payment = paying_booking(status=S.NEEDS_ATTENTION, payment_status=P.AUTHORIZED)

    for action in (money.CAPTURE, money.VOID):
        with pytest.raises(SupportActionDenied, match="reconciliation"):
            money.payment_action_run(
                action, booking_id=payment.booking_id, operator=op(support_user), token="t1"
            )

    assert op(support_user).can(money.PAYMENT_ACTIONS[money.REFUND]["permission"])
    assert not op(support_user).can(money.PAYMENT_ACTIONS[money.APPROVE]["permission"])
    assert not PaymentOperation.objects.filter(payment=payment).exists()


# --- refund: preview, bounds, once per token --------------------------------------------------
def test_the_refund_preview_shows_what_is_refundable_and_the_provider_side_it_could_read(ops_user):
    payment = paying_booking(refunded=Decimal("60.00"))

    shown = money.payment_preview(
        money.REFUND, payment.booking, operator=op(ops_user), amount=Decimal("40.00"), live=False
    )

    assert (shown.allowed, shown.refusal, shown.refundable, shown.needs_approval) == (
        True,
        "",
        Decimal("300.00"),
        False,
    )
    assert shown.effects[0].startswith(
        "Refund 40.00 EUR of the 360.00 EUR captured (60.00 EUR refunded so far)"
    )
    assert shown.warnings == [
        "After it the customer will have paid 260.00 EUR, less than the 360.00 EUR the booking owes as "
        "confirmed by its policy: automation never charges the difference."
    ]
    assert (shown.provider.live, shown.provider.note) == (
        False,
        "Not asked live; showing the last state the provider told us.",
    )
    as_json = shown.as_dict()
    assert as_json["ours"]["intent"] == payment.provider_intent_id  # ops may see the provider's ids
    assert as_json["ours"]["refundable"] == "300.00"


def test_the_provider_ids_are_shown_only_with_their_permission(support_user):
    payment = paying_booking()

    shown = money.payment_preview(money.REFUND, payment.booking, operator=op(support_user), live=False)

    assert shown.as_dict()["ours"]["intent"] is None
    assert shown.as_dict()["provider"]["intent"] is None


def test_a_refund_is_bounded_by_what_was_captured_and_not_yet_refunded(ops_user):
    payment = paying_booking(refunded=Decimal("300.00"))

    with pytest.raises(
        InvalidTransition, match=r"At most 60.00 EUR can be refunded: 360.00 captured, 300.00"
    ):
        refund(payment, ops_user, "60.01")
    with pytest.raises(ValidationFailed, match="more than nothing"):
        refund(payment, ops_user, "0")
    with pytest.raises(ValidationFailed, match="smallest unit"):
        refund(payment, ops_user, "1.005")
    with pytest.raises(ValidationFailed, match="not an amount"):
        refund(payment, ops_user, "ten")

    assert not PaymentOperation.objects.filter(payment=payment).exists()
    assert support_rows(payment.booking) == []


@pytest.mark.parametrize("typed", ["NaN", "Infinity", "-Infinity", "sNaN"])
def test_an_amount_that_is_no_number_is_said_so_by_the_service_and_the_command(ops_user, typed):
    payment = paying_booking()

    with pytest.raises(ValidationFailed, match=rf"'{typed}' is not a number") as refused:
        refund(payment, ops_user, typed)
    with pytest.raises(CommandError, match=rf"^'{typed}' is not a number\.$"):
        call_command(
            "refund_payment",
            payment.booking.reference,
            f"--amount={typed}",
            "--no-live",
            "--yes",
            "--as",
            ops_user.username,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )

    assert refused.value.fields == {"amount": ["Not a number."]}
    assert not PaymentOperation.objects.filter(payment=payment).exists()


# Decimal() reads all of these; an amount of a customer's money is written in digits 0-9 with at
# most the cents (one rule: the console's form and the commands).
NOT_WRITTEN_AS_AMOUNTS = ["\u0665", "\uff15", "1e1", "1E1", "+5", "1_0", " 5", "5.", ".5", "10.000", "0x10"]


@pytest.mark.parametrize("typed", NOT_WRITTEN_AS_AMOUNTS)
def test_an_amount_not_written_in_digits_and_cents_is_refused_by_the_service_and_the_command(ops_user, typed):
    payment = paying_booking()
    words = "Not an amount: digits 0-9, with a point before the cents (12.50)."

    with pytest.raises(ValidationFailed, match=re.escape(f"{typed!r} is not an amount.")) as refused:
        refund(payment, ops_user, typed)
    for dry_run in (["--dry-run"], []):
        with pytest.raises(CommandError, match=re.escape(f"{typed!r} is not an amount.")):
            call_command(
                "refund_payment",
                payment.booking.reference,
                f"--amount={typed}",
                *dry_run,
                "--no-live",
                "--yes",
                "--as",
                ops_user.username,
                stdout=io.StringIO(),
                stderr=io.StringIO(),
            )

    assert refused.value.fields == {"amount": [words]}
    assert not PaymentOperation.objects.filter(payment=payment).exists()
    assert support_rows(payment.booking) == []


@pytest.mark.parametrize(
    ("typed", "currency", "read"),
    [
        ("1500", "JPY", Decimal("1500.00")),
        ("1500.00", "JPY", Decimal("1500.00")),  # as the console writes a yen amount back
        ("10.500", "KWD", Decimal("10.50")),  # three decimals, as the dinar is written
        ("12.5", "EUR", Decimal("12.50")),
    ],
)
def test_an_amount_is_written_with_at_most_the_currencys_decimals_or_the_cents(typed, currency, read):
    assert money.parse_amount(typed, currency) == read


@pytest.mark.parametrize(
    ("typed", "currency", "refused"),
    [
        ("1500.5", "JPY", "not a whole number of the currency's smallest unit"),
        ("1500.000", "JPY", "is not an amount"),
        ("10.0000", "KWD", "is not an amount"),
        # the provider's unit, but finer than our ledger keeps: it was rounded to 1.00 unsaid
        ("1.005", "KWD", "1.005 KWD is finer than the cent our ledger keeps"),
    ],
)
def test_an_amount_finer_than_its_currency_or_our_ledger_is_refused(typed, currency, refused):
    with pytest.raises(ValidationFailed, match=re.escape(refused)):
        money.parse_amount(typed, currency)


def test_nothing_is_refunded_of_a_payment_never_captured(ops_user):
    payment = paying_booking(status=S.REQUESTED, payment_status=P.AUTHORIZED)

    shown = money.payment_preview(money.REFUND, payment.booking, operator=op(ops_user), live=False)
    with pytest.raises(InvalidTransition, match=r"Nothing captured is left to refund \(0.00 captured"):
        refund(payment, ops_user, "10")

    assert (shown.allowed, shown.effects) == (False, [])


def test_a_refund_opens_the_payments_operation_audits_it_and_queues_the_run_after_commit(
    ops_user, payments_queue, broker, django_capture_on_commit_callbacks
):
    payment = paying_booking()
    token = new_token()

    with django_capture_on_commit_callbacks(execute=True):
        result = refund(payment, ops_user, "45.50", token=token)

    [operation] = PaymentOperation.objects.filter(payment=payment)
    assert (operation.kind, operation.amount, operation.state, operation.idempotency_key) == (
        OperationKind.REFUND,
        Decimal("45.50"),
        OperationState.OPEN,
        f"{payment.pk}:refund:1",
    )
    assert (result.performed, result.operation_key, result.operation_state) == (
        True,
        operation.idempotency_key,
        OperationState.OPEN,
    )
    assert result.message.startswith("Refund of 45.50 EUR queued: a worker asks the provider")
    [row] = support_rows(payment.booking)
    assert (row.kind, row.actor, row.actor_label) == (
        "support.refund_requested",
        "support",
        ops_user.username,
    )
    assert (row.data["action_token"], row.data["idempotency_key"], row.data["amount"]) == (
        token,
        operation.idempotency_key,
        "45.50",
    )
    assert calls(broker, payments_queue) == [("payment_run", [str(payment.booking_id)])]
    payment.refresh_from_db()
    assert payment.next_check_at is not None  # due for the sweeper, should the run be lost


def test_the_same_token_twice_refunds_once(ops_user):
    payment = paying_booking()
    token = new_token()

    first = refund(payment, ops_user, "10.00", token=token)
    again = refund(payment, ops_user, "10.00", token=token)

    assert (first.performed, again.performed) == (True, False)
    assert again.message.startswith(f"Already done by {ops_user.username}")
    assert (again.operation_key, again.operation_state) == (first.operation_key, OperationState.OPEN)
    assert PaymentOperation.objects.filter(payment=payment).count() == 1
    assert len(support_rows(payment.booking)) == 1


def test_no_action_while_an_operation_s_outcome_is_unknown(ops_user):
    payment = paying_booking()
    operation_open(payment, kind=OperationKind.REFUND, amount=Decimal("5.00"))

    with pytest.raises(
        InvalidTransition, match=r"not known yet \(key .*:refund:1\): one operation at a time"
    ):
        refund(payment, ops_user, "10.00")

    assert PaymentOperation.objects.filter(payment=payment).count() == 1


# --- capture and void ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "payment_status", "fields", "why"),
    [
        (S.CONFIRMED, P.CAPTURED, {}, "Only a held authorization can be captured: the payment is captured."),
        (
            S.REQUESTED,
            P.AUTHORIZED,
            {},
            "The partner never confirmed this booking: nothing is captured without a confirmed reservation.",
        ),
        (
            S.CONFIRMED,
            P.AUTHORIZED,
            {"authorization_expires_at": timezone.now() - timedelta(minutes=1)},
            "The hold lapsed at the provider",
        ),
    ],
    ids=["captured", "never-confirmed", "lapsed"],
)
def test_a_capture_is_refused_when_automation_could_not_take_it_either(
    ops_user, status, payment_status, fields, why
):
    payment = paying_booking(status=status, payment_status=payment_status, **fields)

    with pytest.raises(InvalidTransition) as refused:
        money.support_capture(booking_id=payment.booking_id, operator=op(ops_user), token=new_token())

    assert str(refused.value.message).startswith(why)
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_a_capture_takes_what_the_confirmed_booking_owes(ops_user):
    payment = paying_booking(status=S.CONFIRMED, payment_status=P.AUTHORIZED)

    shown = money.payment_preview(money.CAPTURE, payment.booking, operator=op(ops_user), live=False)
    result = money.support_capture(booking_id=payment.booking_id, operator=op(ops_user), token=new_token())

    assert shown.allowed and shown.effects[0].startswith("Capture 360.00 EUR of the 360.00 EUR hold")
    [operation] = PaymentOperation.objects.filter(payment=payment)
    assert (operation.kind, operation.amount, result.operation_key) == (
        OperationKind.CAPTURE,
        Decimal("360.00"),
        operation.idempotency_key,
    )
    assert [r.kind for r in support_rows(payment.booking)] == ["support.capture_requested"]


def test_a_capture_of_a_cancellation_fee_says_how_much_of_the_hold_is_released(ops_user):
    payment = paying_booking(status=S.CANCELLED, payment_status=P.AUTHORIZED)
    type(payment.booking).objects.filter(pk=payment.booking_id).update(
        confirmed_shown_at=timezone.now(), cancellation_fee=Decimal("36.00")
    )

    shown = money.payment_preview(money.CAPTURE, payment.booking, operator=op(ops_user), live=False)

    assert shown.allowed and shown.effects[0] == (
        "Capture 36.00 EUR of the 360.00 EUR hold under a new key <payment>:<kind>:<n>, committed before "
        "the call; the rest, 324.00 EUR, is released."
    )
    assert shown.effects[1] == "The booking owes 36.00 EUR as cancelled."


@pytest.mark.parametrize(
    ("status", "why"),
    [
        (S.CONFIRMED, "The booking owes 360.00 EUR as confirmed: capture it, or cancel the booking"),
        (S.PENDING_PARTNER, "The booking is still pending_partner: the partner may yet confirm it."),
    ],
)
def test_a_hold_the_booking_owes_or_may_still_need_is_not_voided(ops_user, status, why):
    payment = paying_booking(status=status, payment_status=P.AUTHORIZED)

    with pytest.raises(InvalidTransition) as refused:
        money.support_void(booking_id=payment.booking_id, operator=op(ops_user), token=new_token())

    assert refused.value.message.startswith(why)
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_a_hold_of_a_booking_with_support_may_be_voided_with_a_warning(ops_user):
    payment = paying_booking(status=S.NEEDS_ATTENTION, payment_status=P.AUTHORIZED)

    shown = money.payment_preview(money.VOID, payment.booking, operator=op(ops_user), live=False)
    result = money.support_void(
        booking_id=payment.booking_id, operator=op(ops_user), token=new_token(), note="n"
    )

    assert shown.warnings == [
        "Once released the hold cannot be captured: should the booking be confirmed later, it is not paid."
    ]
    assert PaymentOperation.objects.get(payment=payment).kind == OperationKind.VOID
    assert result.operation_state == OperationState.OPEN


# --- the two-person rule -------------------------------------------------------------------------
def test_a_refund_above_the_approval_amount_is_only_proposed(ops_user):
    payment = paying_booking()

    shown = money.payment_preview(
        money.REFUND, payment.booking, operator=op(ops_user), amount=Decimal("200.01"), live=False
    )
    result = refund(payment, ops_user, "200.01", note="the room was not cleaned")

    assert shown.needs_approval and shown.effects[0].startswith("Above 200.00 EUR: only proposed.")
    proposal = RefundProposal.objects.get(payment=payment)
    assert (proposal.state, proposal.amount, proposal.proposed_by, proposal.note) == (
        ProposalState.PENDING,
        Decimal("200.01"),
        ops_user,
        "the room was not cleaned",
    )
    assert (result.performed, result.proposal_id, result.operation_key) == (True, proposal.pk, "")
    assert result.message.startswith(
        f"Refund proposed (#{proposal.pk}): a refund of 200.01 EUR is above 200.00 EUR"
    )
    assert not PaymentOperation.objects.filter(payment=payment).exists()  # nothing asked of the provider
    [row] = support_rows(payment.booking)
    assert (row.kind, row.data["proposal"], row.data["amount"]) == (
        "support.refund_proposed",
        proposal.pk,
        "200.01",
    )


def test_the_approval_amount_itself_needs_no_second_person(ops_user):
    payment = paying_booking()

    result = refund(payment, ops_user, "200.00")

    assert result.proposal_id is None and result.operation_key
    assert not RefundProposal.objects.exists()


def test_a_dinar_refund_is_held_to_the_dinar_s_own_approval_amount(ops_user, settings):
    """Reviewer: the approval amount was one number in any currency: 200 KWD (about 600 EUR) was
    refunded by one person alone, under a rule meant to stop at 200 EUR."""
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY = {"KWD": Decimal("60")}
    payment = paying_booking(price=Decimal("360.00"), currency="KWD")

    shown = money.payment_preview(
        money.REFUND, payment.booking, operator=op(ops_user), amount=Decimal("200.00"), live=False
    )
    result = refund(payment, ops_user, "200.00", note="the room was not cleaned")

    assert shown.needs_approval and shown.effects[0].startswith("Above 60 KWD: only proposed.")
    assert shown.as_dict()["approval_above"] == "60"
    proposal = RefundProposal.objects.get(payment=payment)
    assert result.message.startswith(
        f"Refund proposed (#{proposal.pk}): a refund of 200.00 KWD is above 60 KWD"
    )
    assert not PaymentOperation.objects.filter(payment=payment).exists()
    assert refund(paying_booking(currency="KWD"), ops_user, "60.00").proposal_id is None  # 60 itself: alone


def test_a_yen_refund_under_the_yen_s_approval_amount_needs_no_second_person(ops_user, settings):
    """Reviewer: 200 was compared with yen too, so a refund of 5000 JPY (about 30 EUR) needed
    two people."""
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY = {"JPY": Decimal("30000")}
    payment = paying_booking(price=Decimal("15000.00"), currency="JPY")

    shown = money.payment_preview(
        money.REFUND, payment.booking, operator=op(ops_user), amount=Decimal("5000"), live=False
    )
    result = refund(payment, ops_user, "5000")

    assert not shown.needs_approval
    assert result.proposal_id is None and result.operation_key
    assert PaymentOperation.objects.get(payment=payment).amount == Decimal("5000.00")
    assert not RefundProposal.objects.exists()


def test_a_currency_with_no_approval_amount_needs_a_second_person_for_any_refund(ops_user, settings):
    """No amount set for the payment's currency: none is small enough for one person (the
    default currency's number is not one of it)."""
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE_BY_CURRENCY = {"JPY": Decimal("30000")}
    payment = paying_booking(price=Decimal("360.00"), currency="KWD")

    shown = money.payment_preview(
        money.REFUND, payment.booking, operator=op(ops_user), amount=Decimal("1.00"), live=False
    )
    with pytest.raises(ValidationFailed, match="no approval amount is set for KWD: it needs a note"):
        refund(payment, ops_user, "1.00", note="")
    result = refund(payment, ops_user, "1.00", note="a late check-in")

    assert shown.needs_approval
    assert shown.effects[0].startswith("Any amount of KWD (no approval amount is set for it): only proposed.")
    assert shown.as_dict()["approval_above"] is None
    assert result.proposal_id == RefundProposal.objects.get(payment=payment).pk
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_a_proposal_needs_a_note_saying_why(ops_user):
    payment = paying_booking()

    with pytest.raises(ValidationFailed, match="needs a note saying why"):
        refund(payment, ops_user, "300.00", note="  ")

    assert not RefundProposal.objects.exists()


def test_the_proposer_cannot_approve_their_own_refund(ops_user):
    payment = paying_booking()
    proposed = refund(payment, ops_user, "300.00")
    proposal = RefundProposal.objects.get(pk=proposed.proposal_id)

    shown = money.proposal_preview(money.APPROVE, proposal, operator=op(ops_user), live=False)
    with pytest.raises(SupportActionDenied, match="a second person must approve it"):
        money.support_refund_approve(proposal_id=proposal.pk, operator=op(ops_user), token=new_token())

    assert (shown.allowed, shown.refusal) == (
        False,
        f"{ops_user.username} proposed it: a second person must approve it.",
    )
    proposal.refresh_from_db()
    assert proposal.state == ProposalState.PENDING
    assert not PaymentOperation.objects.filter(payment=payment).exists()
    assert [r.kind for r in support_rows(payment.booking)] == ["support.refund_proposed"]


def test_the_same_shell_operator_cannot_approve_their_own_either(db):
    payment = paying_booking()
    shell = Operator(label="ops:alice")
    proposed = money.support_refund(
        booking_id=payment.booking_id, operator=shell, token=new_token(), amount="300", note="why"
    )

    with pytest.raises(SupportActionDenied):
        money.support_refund_approve(proposal_id=proposed.proposal_id, operator=shell, token=new_token())

    assert not PaymentOperation.objects.filter(payment=payment).exists()


@pytest.fixture
def at_shell_as(typed_by):
    """The shell operator `manage.py … [--as USER]` is, typed by this OS user."""

    def shell(os_user: str, as_user=None) -> Operator:
        typed_by(os_user)
        return Operator.shell(as_user.username if as_user is not None else None)

    return shell


def propose(payment, operator: Operator) -> int:
    return money.support_refund(
        booking_id=payment.booking_id, operator=operator, token=new_token(), amount="300", note="goodwill"
    ).proposal_id


def test_a_shell_proposal_is_not_approved_by_the_same_os_user_acting_as_someone_else(at_shell_as, groups):
    payment = paying_booking()
    proposal = propose(payment, at_shell_as("root"))  # refund_payment … as OS user root

    with pytest.raises(SupportActionDenied, match="a second person must approve it"):
        money.support_refund_approve(  # approve_refund 1 --as ops-…, still typed by root
            proposal_id=proposal, operator=at_shell_as("root", second_ops(groups)), token=new_token()
        )

    assert RefundProposal.objects.get().state == ProposalState.PENDING
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_a_console_user_is_the_same_person_as_the_os_user_of_their_name(ops_user, at_shell_as, groups):
    console_first, shell_first = paying_booking(), paying_booking()
    in_console = propose(console_first, op(ops_user))
    at_shell = propose(shell_first, at_shell_as(ops_user.username))

    with pytest.raises(SupportActionDenied):  # alice in the admin, then ops:alice without --as
        money.support_refund_approve(
            proposal_id=in_console, operator=at_shell_as(ops_user.username), token=new_token()
        )
    with pytest.raises(SupportActionDenied):  # and the other way round
        money.support_refund_approve(proposal_id=at_shell, operator=op(ops_user), token=new_token())
    with pytest.raises(SupportActionDenied):  # their account, --as from another OS user
        money.support_refund_approve(
            proposal_id=in_console, operator=at_shell_as("root", ops_user), token=new_token()
        )

    shown = money.proposal_preview(
        money.APPROVE, RefundProposal.objects.get(pk=at_shell), operator=op(ops_user), live=False
    )
    assert shown.allowed is False
    assert RefundProposal.objects.filter(state=ProposalState.PENDING).count() == 2


def test_a_shell_proposal_row_from_before_the_os_user_was_recorded_reads_it_from_its_label(
    at_shell_as, groups
):
    payment = paying_booking()
    proposal = propose(payment, at_shell_as("root"))
    RefundProposal.objects.filter(pk=proposal).update(proposed_by_os_user="")  # as the column's default

    with pytest.raises(SupportActionDenied):
        money.support_refund_approve(
            proposal_id=proposal, operator=at_shell_as("root", second_ops(groups)), token=new_token()
        )


def test_two_people_at_the_shell_acting_as_console_users_are_both_named(at_shell_as, groups):
    payment = paying_booking()
    bob, alice = second_ops(groups), second_ops(groups)
    proposal = propose(payment, at_shell_as("root", bob))

    approved = money.support_refund_approve(
        proposal_id=proposal, operator=at_shell_as("carol", alice), token=new_token()
    )

    assert approved.performed is True
    decided = RefundProposal.objects.get()
    assert (decided.proposed_by, decided.proposed_by_os_user, decided.proposed_by_label) == (
        bob,
        "root",
        f"ops:root as {bob.username}",
    )
    assert (decided.decided_by, decided.decided_by_os_user, decided.decided_by_label) == (
        alice,
        "carol",
        f"ops:carol as {alice.username}",
    )
    rows = support_rows(payment.booking)
    assert [(r.kind, r.actor_label) for r in rows] == [
        ("support.refund_proposed", f"ops:root as {bob.username}"),
        ("support.refund_approved", f"ops:carol as {alice.username}"),
    ]
    assert f"proposed by ops:root as {bob.username}" in rows[1].summary


def test_the_environment_does_not_make_the_proposer_at_the_shell_another_person(groups, monkeypatch):
    """`USER=bob manage.py approve_refund 5 --as …`, typed by the OS user who proposed it: the OS
    user is the process's real uid's account, never what LOGNAME, USER, LNAME or USERNAME say."""
    payment = paying_booking()
    quiet = {"stdout": io.StringIO(), "stderr": io.StringIO()}
    call_command(
        "refund_payment", payment.booking.reference, "--amount", "300", "--note", "goodwill",
        "--no-live", "--yes", **quiet,
    )  # fmt: skip
    proposal = RefundProposal.objects.get()
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(variable, "bob")
    out = io.StringIO()

    with pytest.raises(CommandError, match="nothing was done"):
        call_command(
            "approve_refund", str(proposal.pk), "--as", second_ops(groups).username,
            "--no-live", "--yes", "--json", stdout=out, stderr=io.StringIO(),
        )  # fmt: skip

    me = pwd.getpwuid(os.getuid()).pw_name
    assert proposal.proposed_by_label == f"ops:{me}"
    error = json.loads(out.getvalue())["results"][0]["error"]
    assert error["code"] == "permission_denied"
    assert f"typed at the shell as OS user {me}" in error["message"]
    assert RefundProposal.objects.get().state == ProposalState.PENDING
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_two_people_sharing_one_os_account_are_told_how_to_approve(at_shell_as, groups):
    """`sudo -u app` (or `docker exec` as root) for both: one OS account is one person at the
    shell. The refusal, and the preview, say the way out."""
    payment = paying_booking()
    bob, alice = second_ops(groups), second_ops(groups)
    proposal = propose(payment, at_shell_as("app", bob))
    way_out = (
        "Both were typed at the shell as OS user app, one person to the rule (--as takes no credential): "
        "approve it in the console, or from your own OS account."
    )

    with pytest.raises(SupportActionDenied) as refused:
        money.support_refund_approve(
            proposal_id=proposal, operator=at_shell_as("app", alice), token=new_token()
        )
    shown = money.proposal_preview(
        money.APPROVE, RefundProposal.objects.get(), operator=at_shell_as("app", alice), live=False
    )

    assert refused.value.message.endswith(f"a second person must approve it. {way_out}")
    assert shown.allowed is False and shown.refusal.endswith(way_out)
    # The way out is taken: alice in the console is another person.
    assert money.support_refund_approve(proposal_id=proposal, operator=op(alice), token=new_token()).performed


def _decided_proposals(payment, count: int, at_shell_as, groups) -> None:
    """`count` proposals of the payment, each made and withdrawn at the shell by another OS user."""
    for n in range(count):
        proposer = at_shell_as(f"pam{n}", second_ops(groups))
        proposal = propose(payment, proposer)
        money.support_refund_reject(proposal_id=proposal, operator=proposer, token=new_token())


def test_the_payment_panel_reads_who_is_who_in_one_query_however_many_proposals(
    ops_user, at_shell_as, groups
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from reconciliation.selectors.payment_panel import payment_panel

    one, six = paying_booking(), paying_booking()
    _decided_proposals(one, 1, at_shell_as, groups)
    _decided_proposals(six, 6, at_shell_as, groups)

    def queries(payment) -> tuple[int, list]:
        operator = op(type(ops_user).objects.get(pk=ops_user.pk))  # as the console builds it: per request
        with CaptureQueriesContext(connection) as captured:
            panel = payment_panel(payment.booking, operator=operator, live=False)
            shown = [
                (row["own"], row["may_approve"], row["proposal"].withdrawn) for row in panel.proposal_rows
            ]
            panel.as_dict()
        return len(captured), shown

    counted_one, shown_one = queries(one)
    counted_six, shown_six = queries(six)

    assert shown_six == [(False, False, True)] * 6 and shown_one == [(False, False, True)]
    assert counted_six == counted_one


def test_approving_needs_the_approve_permission(ops_user, support_user):
    payment = paying_booking()
    proposed = refund(payment, ops_user, "300.00")

    with pytest.raises(SupportActionDenied, match=r"reconciliation\.approve_refund"):
        money.support_refund_approve(proposal_id=proposed.proposal_id, operator=op(support_user), token="tok")

    assert RefundProposal.objects.get().state == ProposalState.PENDING


def test_another_person_approves_and_the_refund_is_asked_once(ops_user, groups):
    payment = paying_booking()
    approver = second_ops(groups)
    proposed = refund(payment, ops_user, "300.00")
    token = new_token()

    approved = money.support_refund_approve(
        proposal_id=proposed.proposal_id, operator=op(approver), token=token, note="checked the photos"
    )
    again = money.support_refund_approve(proposal_id=proposed.proposal_id, operator=op(approver), token=token)

    proposal = RefundProposal.objects.get()
    [operation] = PaymentOperation.objects.filter(payment=payment)
    assert (proposal.state, proposal.decided_by, proposal.operation, proposal.decision_note) == (
        ProposalState.APPROVED,
        approver,
        operation,
        "checked the photos",
    )
    assert (operation.kind, operation.amount) == (OperationKind.REFUND, Decimal("300.00"))
    assert (approved.performed, approved.operation_key, approved.proposal_id) == (
        True,
        operation.idempotency_key,
        proposal.pk,
    )
    assert again.performed is False
    rows = support_rows(payment.booking)
    assert [(r.kind, r.actor_label) for r in rows] == [
        ("support.refund_proposed", ops_user.username),
        ("support.refund_approved", approver.username),
    ]
    assert (rows[1].data["proposal"], rows[1].data["proposed_by"], rows[1].data["idempotency_key"]) == (
        proposal.pk,
        ops_user.username,
        operation.idempotency_key,
    )


def test_an_approval_is_bounded_again_by_what_is_refundable_then(ops_user, groups):
    payment = paying_booking()
    proposed = refund(payment, ops_user, "300.00")
    type(payment).objects.filter(pk=payment.pk).update(
        refunded_amount=Decimal("100.00")
    )  # refunded meanwhile

    with pytest.raises(InvalidTransition, match=r"At most 260.00 EUR can be refunded.*Reject the proposal"):
        money.support_refund_approve(
            proposal_id=proposed.proposal_id, operator=op(second_ops(groups)), token=new_token()
        )

    assert RefundProposal.objects.get().state == ProposalState.PENDING
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def short_of_owed(paid: str, owed: str, state: str = "confirmed") -> str:
    return (
        f"After it the customer will have paid {paid} EUR, less than the {owed} EUR the booking owes as "
        f"{state} by its policy: automation never charges the difference."
    )


def approve_dry_run(proposal_id: int, approver, *extra: str) -> str:
    out = io.StringIO()
    call_command(
        "approve_refund",
        str(proposal_id),
        "--dry-run",
        "--no-live",
        "--as",
        approver.username,
        *extra,
        stdout=out,
        stderr=io.StringIO(),
    )
    return out.getvalue()


def test_the_approver_is_warned_as_the_proposer_was_that_the_customer_pays_less_than_owed(ops_user, groups):
    payment = paying_booking()
    approver = second_ops(groups)

    proposing = money.payment_preview(
        money.REFUND, payment.booking, operator=op(ops_user), amount=Decimal("300.00"), live=False
    )
    proposed = refund(payment, ops_user, "300.00")
    proposal = RefundProposal.objects.get(pk=proposed.proposal_id)
    approving = money.proposal_preview(money.APPROVE, proposal, operator=op(approver), live=False)
    rejecting = money.proposal_preview(money.REJECT, proposal, operator=op(approver), live=False)
    as_json = json.loads(approve_dry_run(proposal.pk, approver, "--json"))
    as_text = " ".join(approve_dry_run(proposal.pk, approver).split())

    warned = short_of_owed("60.00", "360.00")
    assert proposing.warnings == [warned]
    assert (approving.allowed, approving.warnings) == (True, [warned])
    assert as_json["previews"][0]["warnings"] == [warned]
    assert f"! {warned}" in as_text
    assert rejecting.warnings == []  # rejecting refunds nothing
    assert RefundProposal.objects.get().state == ProposalState.PENDING  # a dry run decides nothing


def test_the_approver_s_warning_is_read_from_the_rows_as_they_are_when_approving(ops_user, groups):
    # Cancelled with a 90.00 fee, nothing refunded yet: a refund of 250.00 leaves 110.00 paid,
    # more than owed, and the proposer is not warned.
    payment = paying_booking(status=S.CANCELLED)
    type(payment.booking).objects.filter(pk=payment.booking_id).update(cancellation_fee=Decimal("90.00"))
    approver = second_ops(groups)
    proposed = refund(payment, ops_user, "250.00", note="the pool was closed")
    proposal = RefundProposal.objects.get(pk=proposed.proposal_id)
    before = money.proposal_preview(money.APPROVE, proposal, operator=op(approver), live=False)
    # Meanwhile 40.00 was refunded at the provider (its dashboard) and read: approved now, the
    # customer would have paid 70.00 of the 90.00 they owe.
    type(payment).objects.filter(pk=payment.pk).update(refunded_amount=Decimal("40.00"))

    after = money.proposal_preview(money.APPROVE, proposal, operator=op(approver), live=False)
    as_json = json.loads(approve_dry_run(proposal.pk, approver, "--json"))

    assert before.warnings == []
    warned = short_of_owed("70.00", "90.00", "cancelled")
    assert (after.allowed, after.warnings) == (True, [warned])
    assert as_json["previews"][0]["warnings"] == [warned]


def test_one_proposal_waits_at_a_time_and_its_proposer_may_withdraw_it(ops_user, groups):
    payment = paying_booking()
    first = refund(payment, ops_user, "300.00")

    with pytest.raises(InvalidTransition, match=rf"Refund proposal #{first.proposal_id} of 300.00 EUR by"):
        refund(payment, second_ops(groups), "250.00")
    withdrawn = money.support_refund_reject(proposal_id=first.proposal_id, operator=op(ops_user), token="w1")
    second = refund(payment, ops_user, "250.00")

    assert withdrawn.message == f"Refund proposal #{first.proposal_id} withdrawn: nothing was refunded."
    assert [p.state for p in RefundProposal.objects.order_by("id")] == [
        ProposalState.REJECTED,
        ProposalState.PENDING,
    ]
    assert second.proposal_id != first.proposal_id
    assert "support.refund_rejected" in kinds(payment.booking)
    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_a_decided_proposal_cannot_be_decided_again(ops_user, groups):
    payment = paying_booking()
    proposed = refund(payment, ops_user, "300.00")
    approver = second_ops(groups)
    money.support_refund_reject(proposal_id=proposed.proposal_id, operator=op(approver), token=new_token())

    with pytest.raises(InvalidTransition, match="was already rejected by"):
        money.support_refund_approve(
            proposal_id=proposed.proposal_id, operator=op(approver), token=new_token()
        )

    assert not PaymentOperation.objects.filter(payment=payment).exists()


def _reject_as(user, proposal_id: int, *mode: str) -> tuple[CommandError | None, dict]:
    out = io.StringIO()
    args = (
        "approve_refund",
        str(proposal_id),
        "--reject",
        *mode,
        "--no-live",
        "--json",
        "--as",
        user.username,
    )
    try:
        call_command(*args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc, json.loads(out.getvalue())
    return None, json.loads(out.getvalue())


def test_approve_refund_reject_asks_another_s_proposal_for_the_approve_permission_as_the_run_does(
    ops_user, support_user
):
    # support may refund (the permission the command checked), not decide another's proposal: its
    # dry run said "possible" and the run then refused it
    proposed = refund(paying_booking(), ops_user, "300.00").proposal_id

    refused, printed = _reject_as(support_user, proposed, "--dry-run")
    done, report = _reject_as(support_user, proposed, "--yes")

    said = f"{support_user.username} lacks the permission reconciliation.approve_refund."
    assert refused is not None and "nothing would be done (1 refused)" in str(refused)
    [preview] = printed["previews"]
    assert preview["allowed"] is False and preview["refusal"].endswith(said)
    assert done is not None and report["results"][0]["error"]["code"] == "permission_denied"
    assert RefundProposal.objects.get().state == ProposalState.PENDING


def test_approve_refund_reject_lets_the_proposer_withdraw_with_no_permission(support_user):
    # as in the console: withdrawing one's own proposal asks no permission (it asked refund_payment)
    proposed = refund(paying_booking(), support_user, "300.00").proposal_id
    support_user.groups.clear()

    refused, printed = _reject_as(support_user, proposed, "--dry-run")
    failed, report = _reject_as(support_user, proposed, "--yes")

    assert refused is None and printed["previews"][0]["allowed"] is True
    assert printed["previews"][0]["title"] == money.WITHDRAW_TITLE
    assert failed is None and report["results"][0]["result"]["performed"] is True
    assert RefundProposal.objects.get().withdrawn


def test_only_approvers_or_the_proposer_reject(ops_user, support_user):
    payment = paying_booking()
    proposed = refund(payment, ops_user, "300.00")

    with pytest.raises(SupportActionDenied):
        money.support_refund_reject(proposal_id=proposed.proposal_id, operator=op(support_user), token="r")

    assert RefundProposal.objects.get().state == ProposalState.PENDING


# --- the two-person rule counts support's refunds of the payment together -----------------------
def settle(result, state=OperationState.SUCCEEDED) -> None:
    """The provider's answer to a support refund, as its run would apply it."""
    operation = PaymentOperation.objects.get(idempotency_key=result.operation_key)
    PaymentOperation.objects.filter(pk=operation.pk).update(state=state, closed_at=timezone.now())
    if state == OperationState.SUCCEEDED:
        payment = operation.payment
        type(payment).objects.filter(pk=payment.pk).update(
            refunded_amount=payment.refunded_amount + operation.amount
        )


def test_refunds_split_under_the_approval_amount_still_need_a_second_person(support_user):
    payment = paying_booking(price=Decimal("500.00"))
    settle(refund(payment, support_user, "200.00", note=""))

    shown = money.payment_preview(
        money.REFUND, payment.booking, operator=op(support_user), amount=Decimal("0.01"), live=False
    )
    with pytest.raises(ValidationFailed, match="needs a note saying why"):
        refund(payment, support_user, "200.00", note="")
    second = refund(payment, support_user, "200.00", note="the rest of the goodwill")
    with pytest.raises(InvalidTransition, match=rf"Refund proposal #{second.proposal_id} of 200.00 EUR"):
        refund(payment, support_user, "100.00", note="")

    assert shown.needs_approval
    assert shown.effects[0].startswith("Above 200.00 EUR: only proposed.")
    assert "200.00 EUR support refunded before" in shown.effects[0]
    assert second.message.startswith(
        f"Refund proposed (#{second.proposal_id}): a refund of 200.00 EUR, with 200.00 EUR support refunded "
        "before, comes to 400.00 EUR: above 200.00 EUR"
    )
    assert [o.amount for o in PaymentOperation.objects.filter(payment=payment)] == [Decimal("200.00")]
    [row] = [r for r in support_rows(payment.booking) if r.kind == "support.refund_proposed"]
    assert row.data["support_refunded"] == "200.00"


def test_no_refund_at_all_while_a_proposal_waits_for_the_payment(ops_user, groups):
    payment = paying_booking()
    proposed = refund(payment, ops_user, "300.00")

    for who in (ops_user, second_ops(groups)):
        with pytest.raises(InvalidTransition, match=rf"Refund proposal #{proposed.proposal_id} of 300.00"):
            refund(payment, who, "10.00", note="")

    assert not PaymentOperation.objects.filter(payment=payment).exists()


def test_an_approved_refund_counts_as_support_s_too(ops_user, groups):
    payment = paying_booking()
    proposed = refund(payment, ops_user, "250.00")
    settle(
        money.support_refund_approve(
            proposal_id=proposed.proposal_id, operator=op(second_ops(groups)), token=new_token()
        )
    )

    after = refund(payment, ops_user, "10.00", note="and the minibar")

    assert after.proposal_id is not None and not after.operation_key


def test_an_open_support_refund_counts_and_a_refused_one_does_not(ops_user):
    payment = paying_booking()
    first = refund(payment, ops_user, "150.00", note="")
    s = money.PaymentSituation(payment.booking, payment)
    assert (s.support_refunded, s.needs_approval(Decimal("50.01"))) == (Decimal("150.00"), True)

    settle(first, OperationState.REFUSED)
    again = refund(payment, ops_user, "200.00", note="")

    assert again.proposal_id is None and again.operation_key


def test_refunds_automation_made_are_not_support_s(ops_user):
    payment = paying_booking(price=Decimal("500.00"))
    automatic = operation_open(payment, kind=OperationKind.REFUND, amount=Decimal("300.00"))
    PaymentOperation.objects.filter(pk=automatic.pk).update(state=OperationState.SUCCEEDED)
    type(payment).objects.filter(pk=payment.pk).update(refunded_amount=Decimal("300.00"))

    result = refund(payment, ops_user, "200.00", note="")

    assert result.proposal_id is None and result.operation_key


@pytest.mark.parametrize(
    "command",
    [
        "refund_payment",
        "record_outside_refund",
        "capture_payment",
        "void_payment",
        "approve_refund",
        "reconcile_payments",
        "payment_health",
    ],
)
def test_every_payment_command_has_help_and_json(command):
    from django.core.management import load_command_class

    text = load_command_class("reconciliation", command).create_parser("manage.py", command).format_help()

    assert "--json" in text
    if command not in ("reconcile_payments", "payment_health"):
        assert all(option in text for option in ("--dry-run", "--yes", "--as", "--token", "--note"))
    if command == "record_outside_refund":
        assert "--method {bank_transfer,cash,voucher,other}" in text


# --- a refund that will only be proposed says so --------------------------------------------------
def test_a_refund_above_the_approval_amount_is_previewed_as_a_proposal_by_the_service_s_rule(ops_user):
    # A tester confirmed "Refund" of 250.00 and found it only proposed: the preview's title (the
    # console's button, the command's table) said "Refund". It follows needs_approval, the rule
    # the action itself applies, to the cent.
    payment = paying_booking()

    def title(amount: str, action: str = money.REFUND) -> str:
        return money.payment_preview(
            action, payment.booking, operator=op(ops_user), amount=Decimal(amount), live=False
        ).title

    assert [title("200.00"), title("200.01")] == ["Refund", "Propose a refund"]
    assert title("10.00", money.CAPTURE) == "Retry the capture"  # only what gives money back


def test_refund_payment_says_it_proposes_in_its_preview_and_its_question(ops_user):
    payment = paying_booking()
    reference = payment.booking.reference
    asked = ("--amount", "250", "--no-live", "--as", ops_user.username)
    out = io.StringIO()

    call_command("refund_payment", reference, *asked, "--dry-run", stdout=out, stderr=io.StringIO())
    dry = json.loads(run_json("refund_payment", reference, *asked, "--dry-run"))
    with pytest.raises(CommandError) as unconfirmed:  # no terminal: the question is in the refusal
        call_command("refund_payment", reference, *asked, stdout=io.StringIO(), stderr=io.StringIO())

    assert f"Propose a refund: {reference}" in out.getvalue()
    assert (dry["previews"][0]["title"], dry["previews"][0]["needs_approval"]) == ("Propose a refund", True)
    assert str(unconfirmed.value).startswith(
        "This proposes the refund for another person's approval: no money moves until they approve it."
    )
    assert not RefundProposal.objects.exists()


def run_json(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, "--json", stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.parametrize("typed", ["1e999999", "9e999998"])
def test_an_amount_too_large_to_scale_is_refused_by_the_service_and_the_command(ops_user, typed):
    payment = paying_booking()
    refused = rf"^'?{re.escape(str(Decimal(typed)))} EUR is outside what one payment may be"

    with pytest.raises(ValidationFailed, match=refused):
        refund(payment, ops_user, typed)
    with pytest.raises(CommandError, match=refused):
        call_command(
            "refund_payment",
            payment.booking.reference,
            f"--amount={typed}",
            "--no-live",
            "--yes",
            "--as",
            ops_user.username,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
    assert not PaymentOperation.objects.filter(payment=payment).exists()
