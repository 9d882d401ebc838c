"""The payment support actions and ops commands against a real payment provider process (the
sandbox's `payments` profile through the pinned SDK): a refund, a retried capture, a void and an
approved proposal each asked once under the payments app's own key and settled by its run, as the
provider's ground truth shows; the console's live read degrading when the provider is down or slow;
`refund_payment`, `capture_payment`, `void_payment`, `approve_refund` with their preview, permission,
confirmation and JSON; `reconcile_payments` finding planted mismatches (and a clean day settling),
and listing apart, as no mismatch, the money support paid back another way that day; `payment_health`."""

from __future__ import annotations

import io
import json
import re
import uuid
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from bookings.models import Booking
from bookings.services import lock_booking
from bookings.states import BookingState
from payments import connector
from payments.connector import AuthorizeRequest
from payments.models import (
    CallOutcome,
    OperationKind,
    OperationState,
    Payment,
    PaymentOperation,
    PaymentStatus,
)
from payments.services.observations import lock_payment, refund_truth_apply
from payments.services.operations import operation_open
from reconciliation.models import ProposalState, RefundProposal
from reconciliation.selectors.payment_health import payment_health
from reconciliation.services.settlement import settle_day
from reconciliation.services.support import Operator, new_token
from reconciliation.services.support import payments as money
from tests.factories import UserFactory
from tests.helpers import wait_until
from tests.payments import conftest as payments_fixtures
from tests.reconciliation.conftest import CLOSED_PORT_URL
from tests.reconciliation.paying import kinds, paid_at_provider, support_rows

S = BookingState
P = PaymentStatus
# The payment tests' provider process (module-scoped) and its per-test reset, as fixtures here.
provider_process = payments_fixtures.provider_process
provider = payments_fixtures.provider
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120), pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _settings(settings, broker):
    import payments.tasks  # noqa: F401  (declares the payments queue: the broker fixture empties it)

    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("200.00")
    settings.PAYMENTS_CONSOLE_READ_WAIT_S = 5.0


def ops(groups, name: str = "ops"):
    user = UserFactory(username=f"{name}-{uuid.uuid4().hex[:6]}", is_staff=True)
    user.groups.set([groups["ops"]])
    return user


def refunds_at(provider, payment: Payment) -> list[tuple[int, str]]:
    """(amount in minor units, our operation key) of the refunds that gave money back."""
    return [
        (r["amount"], r["metadata"].get("operation")) for r in provider.refunds(payment.provider_intent_id)
    ]


def run(*args, stdin=None) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **({"stdin": stdin} if stdin else {}))
    return out.getvalue()


# --- the actions, inline, against the provider ------------------------------------------------
def test_a_support_refund_is_made_once_at_the_provider_and_told_to_the_customer(provider, groups):
    payment = paid_at_provider()
    user = ops(groups)

    result = money.support_refund(
        booking_id=payment.booking_id,
        operator=Operator.for_user(user),
        token=new_token(),
        amount="45.50",
        note="late check-in",
        inline=True,
    )

    payment.refresh_from_db()
    operation = PaymentOperation.objects.get(payment=payment, kind=OperationKind.REFUND)
    assert (result.operation_state, result.message) == (
        OperationState.SUCCEEDED,
        "Refund of 45.50 EUR: done, the provider confirmed it.",
    )
    assert (payment.status, payment.captured_amount, payment.refunded_amount) == (
        P.CAPTURED,
        Decimal("360.00"),
        Decimal("45.50"),
    )
    assert refunds_at(provider, payment) == [(4550, operation.idempotency_key)]
    booking = Booking.objects.get(pk=payment.booking_id)
    assert booking.customer_money["code"] == "partly_refunded"
    timeline = kinds(booking)
    assert timeline.index("support.refund_requested") < timeline.index("payment.refund.ok")
    assert payment.next_check_at is None  # at rest: short of the price is support's decision


def test_a_confirmed_stay_support_refunded_in_full_is_not_reported_as_unpaid(provider, groups, settings):
    """Goodwill is support's decision: payment health lists confirmed bookings whose money went
    missing, not those support chose to give back."""
    settings.PAYMENTS_REFUND_APPROVAL_ABOVE = Decimal("1000.00")
    payment = paid_at_provider()
    money.support_refund(
        booking_id=payment.booking_id,
        operator=Operator.for_user(ops(groups)),
        token=new_token(),
        amount="360.00",
        note="the room was not cleaned: the stay is on us",
        inline=True,
    )

    payment.refresh_from_db()
    assert (payment.captured_amount, payment.refunded_amount) == (Decimal("360.00"), Decimal("360.00"))
    assert Booking.objects.get(pk=payment.booking_id).status == BookingState.CONFIRMED
    assert payment_health(probe=False).unpaid_confirmed == []


def test_a_proposed_refund_runs_once_another_person_approves_it(provider, groups):
    payment = paid_at_provider()
    proposer, approver = ops(groups), ops(groups, "approver")
    proposed = money.support_refund(
        booking_id=payment.booking_id,
        operator=Operator.for_user(proposer),
        token=new_token(),
        amount="300.00",
        note="the stay was cut short",
        inline=True,
    )
    assert refunds_at(provider, payment) == []  # proposed only: nothing asked of the provider

    approved = money.support_refund_approve(
        proposal_id=proposed.proposal_id, operator=Operator.for_user(approver), token=new_token(), inline=True
    )

    payment.refresh_from_db()
    assert approved.operation_state == OperationState.SUCCEEDED
    assert refunds_at(provider, payment) == [(30000, approved.operation_key)]
    assert payment.refunded_amount == Decimal("300.00")
    assert RefundProposal.objects.get().state == ProposalState.APPROVED
    assert [r.kind for r in support_rows(payment.booking)] == [
        "support.refund_proposed",
        "support.refund_approved",
    ]


def test_a_retried_capture_takes_the_hold(provider, groups):
    payment = paid_at_provider(capture=False)  # confirmed, the hold not captured yet

    result = money.support_capture(
        booking_id=payment.booking_id, operator=Operator.for_user(ops(groups)), token=new_token(), inline=True
    )

    payment.refresh_from_db()
    assert (result.operation_state, payment.status, payment.captured_amount) == (
        OperationState.SUCCEEDED,
        P.CAPTURED,
        Decimal("360.00"),
    )
    assert provider.intent(payment.provider_intent_id)["amount_received"] == 36000


def test_a_void_releases_the_hold_of_a_booking_support_holds(provider, groups):
    payment = paid_at_provider(capture=False)
    Booking.objects.filter(pk=payment.booking_id).update(
        status=S.NEEDS_ATTENTION, confirmed_shown_at=None, attention_reason="partner_mismatch"
    )

    result = money.support_void(
        booking_id=payment.booking_id, operator=Operator.for_user(ops(groups)), token=new_token(), inline=True
    )

    payment.refresh_from_db()
    assert (result.operation_state, payment.status) == (OperationState.SUCCEEDED, P.VOIDED)
    assert provider.intent(payment.provider_intent_id)["status"] == "canceled"
    assert Booking.objects.get(pk=payment.booking_id).customer_money["code"] == "released"


# --- the provider's live answer in a preview -----------------------------------------------------
def test_a_preview_shows_the_provider_live_beside_ours(provider, groups):
    payment = paid_at_provider()

    shown = money.payment_preview(money.REFUND, payment.booking, operator=Operator.for_user(ops(groups)))

    side = shown.provider
    assert (side.live, side.status, side.captured, side.refunded) == (
        True,
        "succeeded",
        Decimal("360.00"),
        Decimal("0.00"),
    )
    assert [(p.name, p.ours, p.theirs, p.mismatch) for p in side.pairs] == [
        ("status", "captured", "captured", False),
        ("provider status", "succeeded", "succeeded", False),
        ("captured", "360.00", "360.00", False),
        ("refunded", "0.00", "0.00", False),
    ]


def test_a_preview_shows_the_last_known_state_when_the_provider_is_down(provider, groups, settings):
    payment = paid_at_provider()
    settings.STRIPE_API_BASE = CLOSED_PORT_URL

    shown = money.payment_preview(money.REFUND, payment.booking, operator=Operator.for_user(ops(groups)))

    assert shown.allowed  # what we hold decides; the provider's answer is only shown
    assert (shown.provider.live, shown.provider.status) == (False, "succeeded")
    assert shown.provider.note.startswith("Live read failed, ambiguous")
    assert shown.provider.note.endswith("Showing the last state it told us.")


def test_payment_health_says_a_provider_slower_than_its_wait_is_slow_not_down(provider, settings):
    # A tester's provider answered every payment in 2-5 s; the command said "DOWN: timeout",
    # and an on-call reading that would open an incident for a slow provider.
    paid_at_provider()
    settings.PAYMENTS_CONSOLE_READ_WAIT_S = 0.2
    provider.set_faults(latency_ms=[1500, 1500])

    health = json.loads(run("payment_health", "--json"))
    text = run("payment_health")

    assert (health["provider"]["reachable"], health["provider"]["outcome"]) == (None, "slow")
    assert health["problems"][0] == (
        "The provider is slow: no answer within 0.2 s, not known to be down; payments may take longer."
    )
    assert "DOWN" not in text and "slow: no answer within 0.2 s" in text


def test_a_slow_provider_costs_the_console_its_wait_then_the_last_known_state(provider, groups, settings):
    payment = paid_at_provider()
    settings.PAYMENTS_CONSOLE_READ_WAIT_S = 0.2
    provider.set_faults(latency_ms=[1500, 1500])

    shown = money.payment_preview(money.VOID, payment.booking, operator=Operator.for_user(ops(groups)))

    assert (shown.provider.live, shown.provider.note) == (
        False,
        "The provider did not answer within 0.2 s. Showing the last state it told us.",
    )


# --- the commands ---------------------------------------------------------------------------
def test_refund_payment_previews_asks_to_confirm_then_refunds_once(provider, groups):
    payment = paid_at_provider()
    reference = payment.booking.reference
    user = ops(groups)

    dry = json.loads(
        run("refund_payment", reference, "--amount", "20", "--dry-run", "--json", "--as", user.username)
    )
    with pytest.raises(CommandError, match="Not confirmed"):
        run("refund_payment", reference, "--amount", "20", "--as", user.username)
    done = json.loads(
        run(
            "refund_payment",
            reference,
            "--amount",
            "20",
            "--yes",
            "--json",
            "--token",
            "t-1",
            "--as",
            user.username,
        )
    )
    again = json.loads(
        run(
            "refund_payment",
            reference,
            "--amount",
            "20",
            "--yes",
            "--json",
            "--token",
            "t-1",
            "--as",
            user.username,
        )
    )

    [preview] = dry["previews"]
    assert (
        preview["allowed"],
        preview["amount"],
        preview["needs_approval"],
        preview["provider"]["live"],
    ) == (
        True,
        "20.00",
        False,
        True,
    )
    [result] = done["results"]
    assert (result["result"]["performed"], result["result"]["operation_state"]) == (True, "succeeded")
    assert again["results"][0]["result"]["performed"] is False
    payment.refresh_from_db()
    assert refunds_at(provider, payment) == [(2000, result["result"]["operation"])]
    assert payment.refunded_amount == Decimal("20.00")


def test_refund_payment_with_a_used_token_and_another_amount_exits_non_zero_and_refunds_nothing(
    provider, groups, typed_by
):
    payment = paid_at_provider()
    reference = payment.booking.reference
    user = ops(groups)
    typed_by("olga")
    done = json.loads(
        run(
            "refund_payment",
            reference,
            "--amount",
            "20",
            "--yes",
            "--json",
            "--token",
            "t-2",
            "--as",
            user.username,
        )
    )

    out = io.StringIO()
    with pytest.raises(CommandError, match=r"refund_payment: nothing was done \(1 refused\)"):
        call_command(
            "refund_payment",
            reference,
            *("--amount", "30", "--yes", "--json", "--token", "t-2", "--as", user.username),
            stdout=out,
            stderr=io.StringIO(),
        )

    [refused] = json.loads(out.getvalue())["results"]
    assert refused["error"]["code"] == "token_reused"
    assert (
        f"refund_payment of {reference} (amount 20) by ops:olga as {user.username}"
        in refused["error"]["message"]
    )
    payment.refresh_from_db()
    assert refunds_at(provider, payment) == [(2000, done["results"][0]["result"]["operation"])]
    assert payment.refunded_amount == Decimal("20.00")


def test_refund_payment_needs_an_amount_to_act_and_refuses_beyond_the_bound(provider, groups):
    payment = paid_at_provider()
    reference = payment.booking.reference

    with pytest.raises(CommandError, match="refund_payment needs --amount"):
        run("refund_payment", reference, "--yes")
    with pytest.raises(CommandError, match="nothing was done"):
        run("refund_payment", reference, "--amount", "360.01", "--yes")

    assert refunds_at(provider, payment) == []


def test_a_large_refund_is_proposed_by_one_and_approved_by_another_from_the_shell(provider, groups, typed_by):
    payment = paid_at_provider()
    proposer, approver = ops(groups), ops(groups, "approver")
    typed_by("pam")

    proposed = json.loads(
        run(
            "refund_payment",
            payment.booking.reference,
            "--amount",
            "250",
            "--note",
            "flood in the room",
            "--yes",
            "--json",
            "--as",
            proposer.username,
        )
    )
    proposal_id = proposed["results"][0]["result"]["proposal"]
    with pytest.raises(CommandError, match=r"nothing was done \(1 refused\)"):  # said on its line
        run("approve_refund", str(proposal_id), "--yes", "--as", proposer.username)
    typed_by("ann")  # another person at the shell: the same OS user would be the same person
    # the preview puts the proposer's why in our column, not the provider's
    preview = run("approve_refund", str(proposal_id), "--dry-run", "--as", approver.username)
    assert re.search(r"│ why\s*│ flood in the room\s*│\s*│", preview), preview
    approved = json.loads(
        run("approve_refund", str(proposal_id), "--yes", "--json", "--as", approver.username)
    )

    assert approved["results"][0]["result"]["operation_state"] == "succeeded"
    payment.refresh_from_db()
    assert [amount for amount, _ in refunds_at(provider, payment)] == [25000]
    assert RefundProposal.objects.get(pk=proposal_id).decided_by == approver


def _proposed(payment: Payment, user) -> int:
    return money.support_refund(
        booking_id=payment.booking_id,
        operator=Operator.for_user(user),
        token=new_token(),
        amount="300.00",
        note="the stay was cut short",
    ).proposal_id


def _decide_as(user, *args: str) -> tuple[CommandError, dict]:
    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command(
            "approve_refund", *args, "--as", user.username, "--yes", "--no-live", "--json",
            stdout=out, stderr=io.StringIO(),
        )  # fmt: skip
    return failed.value, json.loads(out.getvalue())


def test_approve_refund_over_several_approves_the_others_when_one_is_the_operator_s_own(
    provider, groups, typed_by
):
    theirs_paid, mine_paid = paid_at_provider(), paid_at_provider()
    me, other = ops(groups), ops(groups, "other")
    typed_by("olga")
    theirs, mine = _proposed(theirs_paid, other), _proposed(mine_paid, me)

    failed, report = _decide_as(me, str(theirs), str(mine))

    assert str(failed) == "approve_refund: 1 of 2 refused, the others done."
    assert failed.returncode == 1
    done, refused = report["results"]
    assert done["result"]["operation_state"] == "succeeded"
    assert refused["error"] == {
        "code": "permission_denied",
        "message": f"Refund #{mine} was proposed by {me.username}, the same person as ops:olga as "
        f"{me.username}: a second person must approve it.",
    }
    assert [amount for amount, _ in refunds_at(provider, theirs_paid)] == [30000]
    assert refunds_at(provider, mine_paid) == []
    assert RefundProposal.objects.get(pk=theirs).state == ProposalState.APPROVED
    assert RefundProposal.objects.get(pk=mine).state == ProposalState.PENDING


def test_reject_over_several_withdraws_the_operator_s_own_when_it_may_not_reject_the_others(provider, groups):
    mine_paid, theirs_paid = paid_at_provider(), paid_at_provider()
    support = UserFactory(username=f"support-{uuid.uuid4().hex[:6]}", is_staff=True)
    support.groups.set([groups["support"]])  # may refund (and withdraw), may not reject another's
    mine, theirs = _proposed(mine_paid, support), _proposed(theirs_paid, ops(groups))

    failed, report = _decide_as(support, str(mine), str(theirs), "--reject")

    assert str(failed) == "reject_refund: 1 of 2 refused, the others done."
    withdrawn, refused = report["results"]
    assert withdrawn["result"]["performed"] is True
    assert refused["error"]["code"] == "permission_denied"
    assert RefundProposal.objects.get(pk=mine).withdrawn
    assert RefundProposal.objects.get(pk=theirs).state == ProposalState.PENDING


def test_refund_payment_cannot_split_a_refund_under_the_approval_amount(provider, groups):
    payment = paid_at_provider(price=Decimal("500.00"))
    reference = payment.booking.reference
    support_user = UserFactory(username=f"support-{uuid.uuid4().hex[:6]}", is_staff=True)
    support_user.groups.set([groups["support"]])
    as_support = ("--yes", "--json", "--as", support_user.username)

    first = json.loads(run("refund_payment", reference, "--amount", "200", *as_support))
    dry = json.loads(run("refund_payment", reference, "--amount", "200", "--dry-run", *as_support[1:]))
    with pytest.raises(CommandError, match="nothing was done"):  # no note: it is a proposal now
        run("refund_payment", reference, "--amount", "200", *as_support)
    second = json.loads(
        run("refund_payment", reference, "--amount", "200", "--note", "the rest", *as_support)
    )
    with pytest.raises(CommandError, match="nothing was done"):  # a proposal waits
        run("refund_payment", reference, "--amount", "100", *as_support)

    assert first["results"][0]["result"]["operation_state"] == "succeeded"
    [preview] = dry["previews"]
    assert preview["needs_approval"] is True
    assert "with 200.00 EUR support refunded before, comes to 400.00 EUR" in preview["effects"][0]
    proposal = RefundProposal.objects.get(pk=second["results"][0]["result"]["proposal"])
    assert (proposal.amount, proposal.state) == (Decimal("200.00"), ProposalState.PENDING)
    payment.refresh_from_db()
    assert [amount for amount, _ in refunds_at(provider, payment)] == [20000]
    assert payment.refunded_amount == Decimal("200.00")


def test_capture_and_void_payment_commands_check_the_operator_s_permission(provider, groups):
    payment = paid_at_provider(capture=False)
    support_user = UserFactory(username=f"support-{uuid.uuid4().hex[:6]}", is_staff=True)
    support_user.groups.set([groups["support"]])

    with pytest.raises(CommandError, match=r"lacks the permission reconciliation\.capture_payment"):
        run("capture_payment", payment.booking.reference, "--yes", "--as", support_user.username)
    out = run("capture_payment", payment.booking.reference, "--yes")  # ops at the server
    printed = io.StringIO()
    with pytest.raises(CommandError, match="nothing would be done"):  # refused, as the void would be
        call_command("void_payment", payment.booking.reference, "--dry-run", "--json", stdout=printed)
    void = json.loads(printed.getvalue())

    assert "Capture of 360.00 EUR: done, the provider confirmed it." in out
    assert (
        void["previews"][0]["refusal"] == "Only a held authorization can be voided: the payment is captured."
    )


# --- reconcile_payments ---------------------------------------------------------------------
def _reconcile(day: str) -> tuple[dict, int]:
    out = io.StringIO()
    try:
        call_command("reconcile_payments", "--date", day, "--json", stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return json.loads(out.getvalue()), exc.returncode
    return json.loads(out.getvalue()), 0


def test_a_day_that_settles_has_no_mismatch(provider, groups):
    payment = paid_at_provider()
    money.support_refund(
        booking_id=payment.booking_id, operator=Operator.shell(), token=new_token(), amount="10", inline=True
    )

    report, code = _reconcile(timezone.now().date().isoformat())
    text = run("reconcile_payments", "--date", timezone.now().date().isoformat())

    assert (code, report["mismatches"]) == (0, [])
    assert "The day settles: no mismatch." in text
    assert (report["paid_outside"], report["paid_outside_totals"]) == ([], {})
    assert f"Paid back another way on {timezone.now().date().isoformat()}: nothing." in text
    assert (report["intents_compared"], report["refunds_compared"]) == (1, 1)
    assert report["totals"]["EUR"] == {
        "currency": "EUR",
        "captured_ours": "360.00",
        "captured_provider": "360.00",
        "refunded_on_day_ours": "10.00",
        "refunded_on_day_provider": "10.00",
    }


def test_a_refund_the_card_refused_settles_as_failed_on_both_sides_and_as_given_back_by_neither(
    provider, groups
):
    payment = paid_at_provider(method="pm_card_refundFail")
    provider.set_faults(time_scale=30)  # the refund fails one second after it is made
    money.support_refund(
        booking_id=payment.booking_id, operator=Operator.shell(), token=new_token(), amount="10", inline=True
    )
    [failed] = wait_until(
        lambda: [
            r for r in provider.payments(payment.provider_intent_id)["refunds"] if r["status"] == "failed"
        ],
        what="the refund to fail at the provider",
    )
    day = timezone.now().date().isoformat()

    # until we know, the provider's failed refund is not the one we hold succeeded
    before, code = _reconcile(day)
    assert code == 1
    assert [(m["kind"], m["ours"], m["theirs"]) for m in before["mismatches"]] == [
        ("amount_differs", "10.00", "0.00"),
        ("refund_differs", "10.00 succeeded", "10.00 failed"),
    ]

    # once the provider's word is through the one door, the day settles
    with transaction.atomic():
        booking = lock_booking(payment.booking_id)
        refund_truth_apply(
            booking=booking,
            payment=lock_payment(booking),
            refund=connector.refund_truth(failed, "EUR"),
            source="test",
            actor="worker",
        )
    after, code = _reconcile(day)

    assert (code, after["mismatches"], after["refunds_compared"]) == (0, [], 1)
    assert after["totals"]["EUR"]["refunded_on_day_ours"] == "0.00"
    assert after["totals"]["EUR"]["refunded_on_day_provider"] == "0.00"


def test_money_paid_back_another_way_is_listed_apart_and_is_no_mismatch(provider, groups, typed_by):
    """A refund of 300 (proposed, approved) the card refuses; support pays the customer 100 by bank
    transfer (one step) and 200 in cash (proposed, approved): the provider never saw either, so
    neither is a mismatch, and the day's report lists both, how and by whom, in text and JSON.
    Before, the report said nothing of them: money left the business with no line for finance."""
    payment = paid_at_provider(method="pm_card_refundFail")
    proposer, approver = ops(groups), ops(groups, "approver")
    provider.set_faults(time_scale=30)  # the refund fails one second after it is made
    proposed = money.support_refund(
        booking_id=payment.booking_id,
        operator=Operator.for_user(proposer),
        token=new_token(),
        amount="300",
        note="the stay was cut short",
    )
    money.support_refund_approve(
        proposal_id=proposed.proposal_id, operator=Operator.for_user(approver), token=new_token(), inline=True
    )
    [failed] = wait_until(
        lambda: [
            r for r in provider.payments(payment.provider_intent_id)["refunds"] if r["status"] == "failed"
        ],
        what="the refund to fail at the provider",
    )
    with transaction.atomic():
        booking = lock_booking(payment.booking_id)
        refund_truth_apply(
            booking=booking,
            payment=lock_payment(booking),
            refund=connector.refund_truth(failed, "EUR"),
            source="test",
            actor="worker",
        )
    payment.refresh_from_db()
    assert payment.failed_refunds_owed == Decimal("300.00")
    reference = payment.booking.reference
    typed_by("pam")
    run(
        "record_outside_refund",
        reference,
        *("--amount", "100", "--method", "bank_transfer", "--note", "TRF-2026-0007", "--yes"),
        *("--as", proposer.username),
    )
    cash = json.loads(
        run(
            "record_outside_refund",
            reference,
            *("--amount", "200", "--method", "cash", "--note", "receipt 4411", "--yes", "--json"),
            *("--as", proposer.username),
        )
    )
    typed_by("ann")
    run("approve_refund", str(cash["results"][0]["result"]["proposal"]), "--yes", "--as", approver.username)
    day = timezone.now().date().isoformat()

    report, code = _reconcile(day)
    text = run("reconcile_payments", "--date", day)
    # at the shell, each row names who typed it beside whom it acted as
    by_pam, by_ann = f"ops:pam as {proposer.username}", f"ops:ann as {approver.username}"

    assert (code, report["mismatches"]) == (0, [])
    assert [
        (o["booking"], o["amount"], o["method"], o["recorded_by"], o["approved_by"])
        for o in report["paid_outside"]
    ] == [
        (reference, "100.00", "bank_transfer", by_pam, None),
        (reference, "200.00", "cash", by_pam, by_ann),
    ]
    assert report["paid_outside_totals"] == {"EUR": "300.00"}
    # the provider's figures stay the provider's: nothing given back there
    assert report["totals"]["EUR"]["refunded_on_day_ours"] == "0.00"
    assert report["totals"]["EUR"]["refunded_on_day_provider"] == "0.00"
    assert "The day settles: no mismatch." in text
    assert f"Paid back another way on {day} (not through the provider: not compared, no mismatch)" in text
    assert re.search(rf"{reference}\s*│ 100\.00 EUR\s*│ Bank transfer\s*│ {by_pam}\s*│ -", text), text
    assert re.search(rf"{reference}\s*│ 200\.00 EUR\s*│ Cash\s*│ {by_pam}\s*│ {by_ann}", text)
    assert "2 recording(s), 300.00 EUR in all." in text


def test_reconcile_payments_finds_every_planted_mismatch(provider, groups):
    settled = paid_at_provider()
    drifted = paid_at_provider()
    # 1. our ledger counts a refund the provider never made
    Payment.objects.filter(pk=drifted.pk).update(refunded_amount=Decimal("15.00"))
    # 2. an authorization nobody of ours made
    stray = connector.authorize(
        AuthorizeRequest(
            payment_id=str(uuid.uuid4()),
            booking_reference="BK-STRAY1",
            amount=Decimal("99.00"),
            currency="EUR",
            payment_method="pm_card_visa",
        ),
        key=f"stray-{uuid.uuid4()}",
    )
    assert stray.outcome == CallOutcome.OK
    # 3. a refund made at the provider outside our operations (e.g. in its dashboard)
    made = connector.refund(
        settled.provider_intent_id, amount=Decimal("5.00"), currency="EUR", key=f"dashboard-{uuid.uuid4()}"
    )
    assert made.outcome == CallOutcome.OK

    report, code = _reconcile(timezone.now().date().isoformat())
    with pytest.raises(CommandError, match=r"4 mismatch\(es\) on "):
        run("reconcile_payments", "--date", timezone.now().date().isoformat())

    found = sorted(
        (m["kind"], m["booking"], m["field"], m["ours"], m["theirs"]) for m in report["mismatches"]
    )
    assert code == 1
    assert found == sorted(
        [
            ("amount_differs", drifted.booking.reference, "refunded", "15.00", "0.00"),
            ("amount_differs", settled.booking.reference, "refunded", "0.00", "5.00"),
            ("intent_unknown_to_us", "", "", "", "requires_capture 9900 eur"),
            ("refund_unknown_to_us", settled.booking.reference, "", "", "5.00 succeeded"),
        ]
    )


@pytest.mark.parametrize("edge", ["closed-after-1am", "asked-before-midnight"])
def test_a_refund_across_midnight_settles_on_the_day_the_provider_made_it(provider, groups, edge):
    """Review: ours were matched by when they closed, the provider's by when it made them; a
    refund whose answer was lost and read more than an hour after midnight was reported as
    unknown to us that day (and, the next, as missing at the provider)."""
    payment = paid_at_provider()
    money.support_refund(
        booking_id=payment.booking_id, operator=Operator.shell(), token=new_token(), amount="10", inline=True
    )
    today = timezone.now().date()
    midnight = datetime.combine(today, time.min, tzinfo=UTC)
    refund = PaymentOperation.objects.filter(payment=payment, kind=OperationKind.REFUND)
    if edge == "closed-after-1am":  # its answer lost, read and closed at 02:00 the next day
        refund.update(closed_at=midnight + timedelta(days=1, hours=2))
    else:  # asked at 23:30 the day before, made when its call was asked again today
        refund.update(opened_at=midnight - timedelta(minutes=30))

    # the day before, the day, and the next (the service: the command settles no day ahead)
    days = (today - timedelta(days=1), today, today + timedelta(days=1))
    reports = {day: settle_day(day).as_dict() for day in days}

    assert {day: report["mismatches"] for day, report in reports.items()} == {day: [] for day in days}
    made_today = reports[today]
    assert made_today["refunds_compared"] == 1
    assert made_today["totals"]["EUR"]["refunded_on_day_ours"] == "10.00"
    assert made_today["totals"]["EUR"]["refunded_on_day_provider"] == "10.00"


def test_a_refund_made_while_our_operation_is_still_open_is_ours_and_flagged_open(provider, groups):
    """Review: the provider's refund of an operation still open (its answer not recorded yet) was
    reported as unknown to us, without the open operation's flag."""
    payment = paid_at_provider()
    refund = operation_open(payment, kind=OperationKind.REFUND, amount=Decimal("10.00"), claimed=True)
    made = connector.refund(
        payment.provider_intent_id, amount=Decimal("10.00"), currency="EUR", key=refund.idempotency_key
    )
    assert made.outcome == CallOutcome.OK  # made; our run has not recorded its answer yet

    report, code = _reconcile(timezone.now().date().isoformat())

    found = sorted(
        (m["kind"], m["field"], m["ours"], m["theirs"], m["open_operation"]) for m in report["mismatches"]
    )
    assert code == 1
    assert found == [
        ("amount_differs", "refunded", "0.00", "10.00", True),
        ("refund_differs", "refund", "10.00 open", "10.00 succeeded", True),
    ]
    assert report["totals"]["EUR"]["refunded_on_day_ours"] == "0.00"  # not counted until it closes
    assert report["totals"]["EUR"]["refunded_on_day_provider"] == "10.00"


def test_reconcile_payments_says_when_the_provider_cannot_be_listed(provider, settings):
    settings.STRIPE_API_BASE = CLOSED_PORT_URL

    report, code = _reconcile("2026-01-01")

    assert (code, report["mismatches"]) == (2, None)
    assert report["error"]["code"] == "provider_unavailable"
    assert report["error"]["message"].startswith(
        "The provider could not be read after 3 tries: APIConnectionError"
    )


def test_reconcile_payments_with_our_database_not_answering_exits_75_not_1_for_mismatches(provider):
    # A cron job alerts on 1 (mismatches to chase); an outage is no mismatch: 75, EX_TEMPFAIL, try
    # again. A process of its own, the provider answering, our database a closed port.
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere",
        "STRIPE_API_BASE": provider.base_url,
        "STRIPE_API_KEY": payments_fixtures.API_KEY,
    }

    ran = subprocess.run(
        [sys.executable, "manage.py", "reconcile_payments", "--date", "2026-01-05", "--json"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert ran.returncode == 75, ran.stderr[-2000:]
    assert json.loads(ran.stdout)["error"]["code"] == "service_unavailable"
    assert "Traceback" not in ran.stderr
    assert "CommandError: The database is not answering (OperationalError:" in ran.stderr


@pytest.fixture
def quick_reads(monkeypatch):
    """The backoff between a read's tries, shortened: the tries are what is tested."""
    monkeypatch.setattr(connector, "READ_BACKOFF_S", 0.01)


def _gets(provider) -> dict[str, int]:
    return {call: n for call, n in provider.stats()["calls"].items() if call.startswith("GET /v1/")}


def _reconcile_failing(day: str) -> CommandError:
    with pytest.raises(CommandError) as failed:
        call_command("reconcile_payments", "--date", day, stdout=io.StringIO(), stderr=io.StringIO())
    return failed.value


# Under this seed the provider's dice at a 30% 5xx rate fail eight calls over the five runs
# below: the listing of intents twice in a row, the listing of refunds once and then twice in a
# row, the read of an intent by its id twice in a row and then once; never a call three times in a
# row (the sandbox's dice are seeded: the same calls meet the same faults on every run). Without
# the tries, three of the five runs fail, as the QA round saw.
FLAKY_SEED = 19


def test_reconcile_payments_reads_through_a_flaky_provider(provider, quick_reads):
    day = timezone.now().date().isoformat()
    paid_at_provider()  # listed: made today at the provider
    provider.set_faults(clock_skew_s=-2 * 86400)
    paid_at_provider()  # made "two days ago" at the provider, touched today: read by its id
    provider.set_faults(clock_skew_s=0, error_5xx_rate=0.3, seed=FLAKY_SEED)
    before = provider.stats()["faults"]

    runs = [_reconcile(day) for _ in range(5)]

    faults = provider.stats()["faults"]
    met = sum(
        faults.get(kind, 0) - before.get(kind, 0)
        for kind in ("error_5xx_before_commit", "error_5xx_after_commit")
    )
    assert [code for _, code in runs] == [0] * 5
    assert [(report["mismatches"], report["intents_compared"]) for report, _ in runs] == [([], 2)] * 5
    assert met == 8  # the provider failed eight calls, and each was asked again:
    assert _gets(provider) == {
        "GET /v1/payment_intents": 5 + 2,
        "GET /v1/refunds": 5 + 3,
        "GET /v1/payment_intents/<intent>": 5 + 3,
    }


def test_reconcile_payments_gives_up_after_three_tries_in_one_line(provider, quick_reads):
    provider.set_faults(error_5xx_rate=1.0)
    before = _gets(provider)

    failed = _reconcile_failing(timezone.now().date().isoformat())
    report, code = _reconcile(timezone.now().date().isoformat())

    assert failed.returncode == 2
    assert re.fullmatch(r"The provider could not be read after 3 tries: APIError: [^\n]+", str(failed))
    assert (code, report["mismatches"], report["tries"]) == (2, None, 3)
    assert report["error"]["code"] == "provider_unavailable"
    assert re.fullmatch(
        r"The provider could not be read after 3 tries: APIError: [^\n]+", report["error"]["message"]
    )
    listed = _gets(provider).get("GET /v1/payment_intents", 0) - before.get("GET /v1/payment_intents", 0)
    assert listed == 6  # three tries, twice


def test_reconcile_payments_asks_again_after_a_timeout(provider, quick_reads):
    provider.set_faults(latency_ms=[1500, 1500])  # past our read timeout (1 s here), every time

    failed = _reconcile_failing(timezone.now().date().isoformat())

    assert failed.returncode == 2
    assert str(failed).startswith("The provider could not be read after 3 tries: APIConnectionError: ")
    assert _gets(provider) == {"GET /v1/payment_intents": 3}


def test_reconcile_payments_does_not_ask_again_what_would_be_answered_the_same(provider, quick_reads):
    provider.set_faults(auth_failure_window_s=[0, 600])  # the provider refuses our key: a 401
    before = provider.stats()["faults"].get("auth_failure", 0)

    failed = _reconcile_failing(timezone.now().date().isoformat())

    assert failed.returncode == 2
    assert str(failed).startswith("The provider could not be read after 1 try: AuthenticationError: ")
    assert provider.stats()["faults"]["auth_failure"] - before == 1


def test_reconcile_payments_refuses_a_date_that_is_no_day(db):
    with pytest.raises(CommandError, match="is not a day"):
        run("reconcile_payments", "--date", "yesterday")


# --- payment_health -------------------------------------------------------------------------
def test_payment_health_reports_the_provider_and_what_is_open(provider, groups, settings):
    payment = paid_at_provider()
    money.support_refund(
        booking_id=payment.booking_id, operator=Operator.shell(), token=new_token(), amount="5"
    )

    up = json.loads(run("payment_health", "--json"))
    text = run("payment_health")
    settings.STRIPE_API_BASE = CLOSED_PORT_URL
    down = json.loads(run("payment_health", "--json"))

    assert (up["provider"]["reachable"], up["provider"]["http_status"]) == (True, 200)
    assert up["open_operations"] == {"refund": 1}  # queued for a worker, not asked yet
    assert [o["booking"] for o in up["oldest_open"]] == [payment.booking.reference]
    assert up["problems"] == []
    assert "answers (HTTP 200" in text and "refund=1" in text
    assert (down["provider"]["reachable"], down["provider"]["outcome"]) == (False, "ambiguous")
    assert down["problems"][0].startswith("The provider does not answer")
