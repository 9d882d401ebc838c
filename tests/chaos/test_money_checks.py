"""The money checks (chaos/checks/money.py) on hand-made snapshots: each violation provoked once
beside a clean record, which must pass, with the evidence a reader needs (the booking, our
payment row, the provider's history)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from chaos.checks.money import (
    check_captured_only_when_confirmed,
    check_money_owed,
    check_no_refund_twice,
    check_nothing_held,
    check_one_authorization,
    money_checks,
)
from chaos.money_truth import MoneyTruth, PaymentRow
from tests.chaos.test_checks import clean_snapshot, truth

BOOKING = "BK-AAAAAA"  # confirmed at the partner in clean_snapshot()


def row(**changes: Any) -> PaymentRow:
    paid = PaymentRow(
        booking=BOOKING,
        payment="pay-1",
        status="captured",
        amount=Decimal("360.00"),
        currency="EUR",
        captured=Decimal("360.00"),
        refunded=Decimal("0.00"),
        provider_intent="pi_1",
        booking_status="confirmed",
        confirmed_ever=True,
    )
    return replace(paid, **changes)


def intent(
    id: str = "pi_1", *, status: str = "succeeded", received: int = 36_000, payment: str = "pay-1", **extra
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "payment_intent",
        "status": status,
        "amount": 36_000,
        "amount_received": received,
        "metadata": {"payment": payment, "booking": extra.get("booking", BOOKING)},
        "history": [
            {
                "version": 1,
                "at": "2027-01-01T12:00:01.000+00:00",
                "cause": "confirm",
                "idempotency_key": f"{payment}:authorize",
                "object": {"status": "requires_capture", "amount_received": 0},
            },
            {
                "version": 2,
                "at": "2027-01-01T12:00:03.000+00:00",
                "cause": "capture",
                "idempotency_key": f"{payment}:capture",
                "object": {"status": status, "amount_received": received},
            },
        ],
    }


def refund(
    id: str = "re_1",
    *,
    amount: int = 27_000,
    operation: str = "op-refund-1",
    moved: bool = True,
    status: str = "succeeded",
):
    return {
        "id": id,
        "payment_intent": "pi_1",
        "amount": amount,
        "balance_transaction": "txn_1" if moved else None,
        "metadata": {"operation": operation},
        "created": 1,
        "status": status,
    }


def snapshot_with(payments: list[PaymentRow], intents: list[dict], refunds: list[dict] | None = None):
    snapshot = clean_snapshot()
    snapshot.money = MoneyTruth.from_ground_truth(
        payments, {"payment_intents": intents, "charges": [], "refunds": refunds or []}
    )
    return snapshot


def kinds(result) -> list[str]:
    return [v.kind for v in result.violations]


def test_a_clean_paid_booking_passes_every_money_check():
    results = money_checks(snapshot_with([row()], [intent()]))

    assert {r.name: kinds(r) for r in results} == {r.name: [] for r in results}
    assert len(results) == 5


def test_a_run_without_payments_is_not_observed_and_passes():
    results = money_checks(clean_snapshot())

    assert all(r.passed and r.notes == ["no payments in this run: not observed"] for r in results)


# --- never captured without a confirmed reservation -----------------------------------------------
def test_a_capture_without_a_confirmed_reservation_is_a_violation_with_the_provider_s_history():
    snapshot = snapshot_with([row()], [intent()])
    snapshot.truth[:] = [truth(status="rejected")]  # the partner never confirmed it

    result = check_captured_only_when_confirmed(snapshot)

    [violation] = result.violations
    assert (violation.kind, violation.booking) == ("captured_without_confirmed_reservation", BOOKING)
    assert violation.evidence["ours"].startswith("payment pay-1 captured 360.00 EUR")
    assert violation.evidence["provider"][0] == "intent pi_1 succeeded amount 36000 received 36000"
    assert any("capture → succeeded" in line for line in violation.evidence["provider"])
    assert violation.evidence["partner_truth"] and violation.evidence["timeline"]


def test_a_capture_of_a_confirmed_reservation_passes():
    assert check_captured_only_when_confirmed(snapshot_with([row()], [intent()])).passed


# --- captured - refunded = owed -------------------------------------------------------------------
def test_a_confirmed_booking_charged_nothing_owes_the_price():
    snapshot = snapshot_with([row(captured=Decimal("0.00"))], [intent(status="canceled", received=0)])

    result = check_money_owed(snapshot)

    assert kinds(result) == ["money_owed_mismatch"]  # ours agrees with the provider: both wrong
    assert "owes 360.00 EUR" in result.violations[0].message


def test_a_cancelled_booking_keeps_only_the_fee_fixed_at_its_cancel():
    cancelled = row(booking_status="cancelled", cancellation_fee=Decimal("90.00"), refunded=Decimal("270.00"))

    assert check_money_owed(snapshot_with([cancelled], [intent()], [refund()])).passed
    refunded_all = replace(cancelled, refunded=Decimal("360.00"))
    result = check_money_owed(snapshot_with([refunded_all], [intent()], [refund(amount=36_000)]))
    assert kinds(result) == ["money_owed_mismatch"]


def test_a_refund_the_card_refused_after_it_was_made_is_not_refunded():
    cancelled = row(booking_status="cancelled", cancellation_fee=Decimal("0.00"))
    failed = refund(amount=36_000, status="failed")

    # the customer still paid it all: owed nothing, so a mismatch, and our row agrees
    result = check_money_owed(snapshot_with([cancelled], [intent()], [failed]))
    assert kinds(result) == ["money_owed_mismatch"]
    assert "refunded 0 = 36000" in result.violations[0].message
    # support refunded again, under a new operation: settled, and nothing refunded twice
    again = refund("re_2", amount=36_000, operation="op-refund-2")
    settled = snapshot_with([replace(cancelled, refunded=Decimal("360.00"))], [intent()], [failed, again])
    assert check_money_owed(settled).passed
    assert check_no_refund_twice(settled).passed


def test_a_refund_the_card_refused_paid_back_another_way_settles_what_is_owed():
    cancelled = row(booking_status="cancelled", cancellation_fee=Decimal("0.00"))
    failed = refund(amount=36_000, status="failed")

    # support paid the 360 by bank transfer: the provider still says nothing was refunded, ours too
    paid_outside = replace(cancelled, refunded_outside=Decimal("360.00"))
    assert check_money_owed(snapshot_with([paid_outside], [intent()], [failed])).passed
    # only part of it: the rest is still owed
    part = replace(cancelled, refunded_outside=Decimal("100.00"))
    result = check_money_owed(snapshot_with([part], [intent()], [failed]))
    assert kinds(result) == ["money_owed_mismatch"]
    assert "paid back another way 10000 = 26000" in result.violations[0].message


def test_an_unconfirmed_booking_owes_nothing_and_a_hold_s_release_moves_no_money():
    failed = row(status="voided", booking_status="rejected", confirmed_ever=False, captured=Decimal("0.00"))
    released = snapshot_with(
        [failed], [intent(status="canceled", received=0)], [refund(amount=36_000, moved=False)]
    )

    assert check_money_owed(released).passed
    captured = snapshot_with([failed], [intent()])
    assert "money_owed_mismatch" in kinds(check_money_owed(captured))


def test_a_booking_the_partner_took_back_owes_nothing_and_one_still_open_is_not_judged():
    disrupted = row(booking_status="needs_attention", attention_reason="partner_cancelled_confirmed")
    assert kinds(check_money_owed(snapshot_with([disrupted], [intent()]))) == ["money_owed_mismatch"]

    open_case = replace(disrupted, attention_reason="amended_by_partner")
    result = check_money_owed(snapshot_with([open_case], [intent()]))
    assert result.passed and result.figures["undecided"] == 1


def test_an_ended_booking_support_took_up_for_a_stray_owes_what_its_end_owes():
    # cancelled with a fee, then support got its stray: the refund less the fee is owed, as without
    cancelled = row(
        booking_status="needs_attention",
        attention_reason="compensation_failed",
        attention_from="cancelled",
        cancellation_fee=Decimal("90.00"),
    )
    assert kinds(check_money_owed(snapshot_with([cancelled], [intent()])))[0] == "money_owed_mismatch"
    refunded = replace(cancelled, refunded=Decimal("270.00"))
    assert check_money_owed(snapshot_with([refunded], [intent()], [refund()])).passed
    # expired before the partner confirmed: a hold left is left held, not undecided
    expired = replace(
        cancelled,
        status="authorized",
        captured=Decimal("0.00"),
        attention_from="expired",
        confirmed_ever=False,
        cancellation_fee=None,
    )
    held = intent(status="requires_capture", received=0)
    assert kinds(check_nothing_held(snapshot_with([expired], [held]))) == ["authorization_left_held"]
    # support got it before it ended (from pending_partner): still support's, not judged
    pending = replace(
        expired, attention_from="pending_partner", status="captured", captured=Decimal("360.00")
    )
    result = check_money_owed(snapshot_with([pending], [intent()]))
    assert result.passed and result.figures["undecided"] == 1


def test_our_row_disagreeing_with_the_provider_is_a_violation():
    result = check_money_owed(snapshot_with([row(refunded=Decimal("10.00"))], [intent()]))

    assert kinds(result) == ["money_ledger_disagrees"]


# --- one live authorization -----------------------------------------------------------------------
def test_two_live_authorizations_for_one_booking_are_a_violation():
    snapshot = snapshot_with([row()], [intent(), intent("pi_2", status="requires_capture", received=0)])

    result = check_one_authorization(snapshot)

    [violation] = result.violations
    assert violation.kind == "authorizations_live_twice" and "pi_2" in violation.message
    assert result.figures["most_intents_per_booking"] == 2


def test_a_voided_second_intent_is_not_live_but_one_for_a_payment_we_do_not_have_is_reported():
    voided = intent("pi_2", status="canceled", received=0)
    assert check_one_authorization(snapshot_with([row()], [intent(), voided])).passed

    stray = intent("pi_3", status="canceled", received=0, payment="pay-unknown", booking="BK-ZZZZZZ")
    result = check_one_authorization(snapshot_with([row()], [intent(), stray]))
    assert kinds(result) == ["intent_without_payment"]


# --- nothing held at rest -------------------------------------------------------------------------
def test_an_authorization_left_held_at_rest_is_a_violation():
    held = row(status="authorized", captured=Decimal("0.00"))
    snapshot = snapshot_with([held], [intent(status="requires_capture", received=0)])

    result = check_nothing_held(snapshot)

    [violation] = result.violations
    assert violation.kind == "authorization_left_held" and violation.evidence["ours"].startswith(
        "payment pay-1 authorized"
    )
    assert check_nothing_held(snapshot_with([row()], [intent()])).passed


# --- no refund twice ------------------------------------------------------------------------------
def test_one_refund_operation_refunded_twice_is_a_violation():
    cancelled = row(booking_status="cancelled", cancellation_fee=Decimal("0.00"), refunded=Decimal("360.00"))
    twice = [refund("re_1", amount=18_000), refund("re_2", amount=18_000)]

    result = check_no_refund_twice(snapshot_with([cancelled], [intent()], twice))

    assert kinds(result) == ["refund_made_twice"]
    assert "re_1" in "\n".join(result.violations[0].evidence["provider"])


def test_more_refunded_than_captured_is_a_violation_and_two_operations_are_not():
    two_operations = [refund("re_1", amount=18_000), refund("re_2", amount=18_000, operation="op-refund-2")]
    assert check_no_refund_twice(snapshot_with([row()], [intent()], two_operations)).passed

    too_much = [refund("re_1", amount=36_000), refund("re_2", amount=9_000, operation="op-refund-2")]
    result = check_no_refund_twice(snapshot_with([row()], [intent()], too_much))
    assert kinds(result) == ["refunded_more_than_captured"]


# --- a paying booking's timeline ------------------------------------------------------------------
def test_a_paying_booking_created_awaiting_its_payment_has_a_timeline_that_starts_with_its_creation():
    from chaos.checks.timelines import allowed_transitions, check_timelines
    from tests.chaos.test_checks import confirmed_booking, events

    snapshot = clean_snapshot()
    snapshot.bookings[BOOKING] = replace(
        confirmed_booking(),
        events=events(
            ("", "awaiting_payment", 0),
            ("awaiting_payment", "requested", 0.3),
            ("requested", "submitting", 0.5),
            ("submitting", "confirmed", 2.0),
        ),
    )

    assert check_timelines(snapshot, allowed=allowed_transitions()).passed
    no_creation = events(("awaiting_payment", "requested", 0.3), ("requested", "confirmed", 2))
    snapshot.bookings[BOOKING] = replace(confirmed_booking(), events=no_creation)
    assert "no_creation_event" in kinds(check_timelines(snapshot, allowed=allowed_transitions()))


def test_a_share_of_the_run_pays_most_with_a_card_that_succeeds_decided_by_the_seed():
    from chaos.payments import payment_method, provider_faults

    methods = [payment_method(20270101, index) for index in range(2000)]

    assert methods == [payment_method(20270101, index) for index in range(2000)]
    paying = [m for m in methods if m]
    assert 0.3 < len(paying) / len(methods) < 0.5
    assert 0.7 < paying.count("pm_card_visa") / len(paying) < 0.9
    assert {"pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"} < set(paying)
    assert provider_faults(fault_rate=0, time_scale=60, seed=1)["error_5xx_rate"] == 0
    assert provider_faults(fault_rate=1, time_scale=60, seed=1)["webhook_duplicate_rate"] == 0.2


def test_the_provider_s_holds_outlast_the_margin_at_which_we_void_them_at_the_run_s_time_scale():
    from chaos.payments import PaymentProvider, provider_faults

    provider = PaymentProvider(faults=provider_faults(fault_rate=1, time_scale=60, seed=1))
    env = provider.env(read_timeout_s=2, retry_max_s=5, run_grace_s=4)

    hold_s = 7 * 24 * 3600 / 60  # the sandbox's 7 days, scaled
    assert float(env["PAYMENTS_LAPSE_MARGIN_S"]) == 24 * 3600 / 60 < hold_s
    assert float(env["PAYMENTS_HOLD_RECHECK_S"]) == 60
    assert env["STRIPE_API_BASE"] == provider.base_url and env["PAYMENTS_READ_TIMEOUT_S"] == "2"


def test_the_run_s_short_server_error_grace_fits_a_provider_that_makes_nothing_after_a_500():
    """The product reads an operation whose key replays a 500 for an hour before it concludes
    "not made" (the provider may still make it); the run's provider never does after a 500 of its
    plan, so the run waits seconds, and its plan cannot turn on the fault that would."""
    from chaos.faults import KNOWN_KEYS, PAYMENT_KEYS
    from chaos.payments import PaymentProvider, provider_faults

    faults = provider_faults(fault_rate=1, time_scale=60, seed=1)
    env = PaymentProvider(faults=faults).env(read_timeout_s=2, retry_max_s=5, run_grace_s=4)

    assert float(env["PAYMENTS_SERVER_ERROR_GRACE_S"]) == 5
    assert faults["error_500_saved_rate"] > 0
    assert not any(k.startswith("error_500_reconciled") for k in {*faults, *PAYMENT_KEYS, *KNOWN_KEYS})


def test_a_hold_of_a_booking_support_has_not_decided_may_stay_if_we_look_again_before_it_lapses():
    from datetime import UTC, datetime, timedelta

    lapses = datetime(2027, 1, 1, 15, 0, tzinfo=UTC)
    undecided = row(
        status="authorized",
        captured=Decimal("0.00"),
        booking_status="needs_attention",
        attention_reason="partner_403",
        confirmed_ever=False,
        next_check_at=lapses - timedelta(minutes=24),
    )
    held = intent(status="requires_capture", received=0)
    held["sandbox"] = {"authorization_lapses_at": lapses.isoformat()}

    result = check_nothing_held(snapshot_with([undecided], [held]))
    assert result.passed and result.figures["held_undecided"] == 1

    forgotten = replace(undecided, next_check_at=None)
    result = check_nothing_held(snapshot_with([forgotten], [held]))
    assert kinds(result) == ["hold_left_to_lapse"]
    late = replace(undecided, next_check_at=lapses + timedelta(minutes=1))
    assert kinds(check_nothing_held(snapshot_with([late], [held]))) == ["hold_left_to_lapse"]


# --- a refund the provider refused every time it was asked ----------------------------------------
REFUSALS = ("pay-1:refund:1", "pay-1:refund:2")
OWED_BACK = Decimal("270.00")
TOLD = {
    "code": "refund_failed",
    "currency": "EUR",
    "amount": "360.00",
    "charged": "360.00",
    "refunded": "0.00",
    "refund_failed": "270.00",
}
MAILED = (
    "Hello c1,\n\nYour booking is cancelled.\n\nA refund to your card could not be made. We still owe you "
    "270.00 EUR; our support team will be in touch to give it back to you.\n"
)


def refused_for_good(
    *,
    owed_back: Decimal = OWED_BACK,
    told: dict[str, str] | None = None,
    mailed: str = MAILED,
    refunds: list[dict] | None = None,
    answers: tuple[int, ...] = (400, 400),
    left_to_support: bool = True,
    **changes: Any,
):
    """A confirmed booking charged 360, cancelled for a fee of 90 (its customer's cancel, v4), whose
    refund of 270 the provider refused twice: left to support, owed back, and told so (v5, mailed)."""
    from chaos.model import EventRow, MailRow, NotificationRow
    from tests.chaos.test_checks import at, confirmed_booking

    told = dict(TOLD) if told is None else told
    booking = confirmed_booking()
    view = {"from": "cancelled", "to": "cancelled", "message": "cancelled", "status_version": 5}
    timeline = [
        *booking.events,
        EventRow(5, "booking.cancelled", "customer", "confirmed", "cancelled", at(20)),
        EventRow(6, "payment.operation_refused", "worker", "", "", at(21)),
        EventRow(7, "payment.operation_refused", "worker", "", "", at(23)),
        EventRow(
            8,
            "customer.view_changed",
            "worker",
            "",
            "",
            at(24),
            data={"customer_view": {**view, "money": told}},
        ),
    ]
    if left_to_support:
        left = {"step": "refund", "amount": "270.00"}
        timeline.append(EventRow(9, "payment.left_to_support", "worker", "", "", at(24), data=left))
    snapshot = snapshot_with(
        [
            row(
                status="captured",
                booking_status="cancelled",
                cancellation_fee=Decimal("90.00"),
                refused_refunds_owed=owed_back,
                refund_refusals=REFUSALS,
                **changes,
            )
        ],
        [intent()],
        refunds,
    )
    assert snapshot.money is not None
    snapshot.money = replace(snapshot.money, answers=dict(zip(REFUSALS, answers, strict=False)))
    snapshot.bookings[BOOKING] = replace(
        booking,
        status="cancelled",
        events=tuple(timeline),
        view_status="cancelled",
        view_version=5,
        view_money=told,
    )
    snapshot.mails = [MailRow(BOOKING, 5, "money", "<n-5@localhost>", at(25), "000001.eml", text=mailed)]
    snapshot.notifications = [NotificationRow(BOOKING, 5, "money", "cancelled", "sent", 1, at(24))]
    return snapshot


def test_a_refund_refused_for_good_owed_back_left_to_support_and_told_is_no_violation_and_counted():
    result = check_money_owed(refused_for_good())

    assert kinds(result) == []
    assert (result.figures["refunds_refused_for_good"], result.figures["refund_asks_refused"]) == (1, 2)
    # the provider holds 360 - 0 = 270 more than the fee: without the refusal, a mismatch
    assert kinds(check_money_owed(refused_for_good(owed_back=Decimal("0.00")))) == ["money_owed_mismatch"]


def test_a_refund_refused_for_good_told_in_the_status_mail_before_it_is_told():
    # Given v5 (refund_failed) included in a status mail of v4 (its own row `included`)
    from chaos.model import MailRow, NotificationRow
    from tests.chaos.test_checks import at

    snapshot = refused_for_good()
    snapshot.mails = [
        MailRow(BOOKING, 4, "cancelled", "<n-4@localhost>", at(25), "000001.eml", text=MAILED, included=(5,))
    ]
    snapshot.notifications = [
        NotificationRow(BOOKING, 4, "cancelled", "cancelled", "sent", 1, at(24)),
        NotificationRow(BOOKING, 5, "money", "cancelled", "included", 0, at(24)),
    ]

    assert kinds(check_money_owed(snapshot)) == []
    # and with that mail's delivery unknown and not in the sink, it is not this check's to judge
    snapshot.mails = []
    snapshot.notifications[0] = replace(snapshot.notifications[0], state="delivery_unknown")
    assert kinds(check_money_owed(snapshot)) == []
    # but with that mail said sent and not in the sink, the words are unsaid
    snapshot.notifications[0] = replace(snapshot.notifications[0], state="sent")
    assert kinds(check_money_owed(snapshot)) == ["refused_refund_untold"]


def test_a_refund_refused_for_good_whose_amount_owed_back_differs_is_a_mismatch():
    result = check_money_owed(refused_for_good(owed_back=Decimal("260.00")))

    assert kinds(result) == ["money_owed_mismatch"]
    assert "owes back 260.00 refused for good" in result.violations[0].message
    assert result.figures["refunds_refused_for_good"] == 0


def test_a_refund_refused_for_good_the_customer_was_told_was_refunded_is_untold():
    refunded = {**TOLD, "code": "refunded"}
    del refunded["refund_failed"]
    mailed = "We refunded the 360.00 EUR we charged to your card: you paid nothing."

    result = check_money_owed(refused_for_good(told=refunded, mailed=mailed))

    [violation] = result.violations
    assert violation.kind == "refused_refund_untold"
    assert "shown refunded of their money, not refund_failed 270.00" in violation.message
    assert violation.evidence["customer_money"]["code"] == "refunded"
    assert any(mailed in line for line in violation.evidence["mails"])


def test_a_refund_refused_for_good_told_with_another_amount_or_never_mailed_is_untold():
    other = {**TOLD, "refund_failed": "360.00"}
    assert kinds(check_money_owed(refused_for_good(told=other))) == ["refused_refund_untold"]

    wrong_words = MAILED.replace("270.00 EUR", "360.00 EUR")
    result = check_money_owed(refused_for_good(mailed=wrong_words))
    assert kinds(result) == ["refused_refund_untold"]
    assert "the mail of version 5 (1 in the sink, outbox sent)" in result.violations[0].message

    unmailed = refused_for_good()
    unmailed.mails = []
    assert kinds(check_money_owed(unmailed)) == ["refused_refund_untold"]
    # a mail that may have been handed over (sent at most once), or still owed when the run ended
    # (late): told on the page; the mail check judges the mail
    for state in ("delivery_unknown", "queued"):
        unmailed.notifications = [replace(unmailed.notifications[0], state=state)]
        assert check_money_owed(unmailed).passed
    unmailed.notifications = [replace(unmailed.notifications[0], state="failed")]
    assert kinds(check_money_owed(unmailed)) == ["refused_refund_untold"]


def test_a_refund_refused_for_good_the_provider_made_after_all_is_a_violation():
    made = refund(amount=27_000, operation=REFUSALS[1])

    # the provider gave it back (our row counts it), yet we hold it owed back and refused
    result = check_money_owed(refused_for_good(refunds=[made], refunded=Decimal("270.00")))

    assert kinds(result) == ["money_owed_mismatch", "refused_refund_made"]
    assert "re_1" in result.violations[1].message
    assert result.violations[1].evidence["provider_answers"] == [f"{k}: 400" for k in REFUSALS]
    # made under another key: still given back, still not owed back
    again = refund(amount=27_000, operation="pay-1:refund:3")
    result = check_money_owed(refused_for_good(refunds=[again], refunded=Decimal("270.00")))
    assert kinds(result) == ["money_owed_mismatch"]


def test_a_refund_the_provider_did_not_refuse_every_time_is_no_refusal_for_good():
    once = check_money_owed(refused_for_good(answers=(400,)))  # the second ask: nothing saved
    assert kinds(once) == ["refused_refund_made"]
    assert "refused 1 of its asks" in once.violations[0].message

    answered = check_money_owed(refused_for_good(answers=(400, 200)))
    assert kinds(answered) == ["refused_refund_made"]


def test_a_refund_refused_for_good_not_left_to_support_is_a_violation():
    result = check_money_owed(refused_for_good(left_to_support=False))
    assert kinds(result) == ["refused_refund_not_left_to_support"]

    from datetime import UTC, datetime

    still_asked = check_money_owed(refused_for_good(next_check_at=datetime(2027, 1, 1, tzinfo=UTC)))
    assert kinds(still_asked) == ["refused_refund_not_left_to_support"]


def test_every_money_check_passes_a_refund_refused_for_good():
    results = money_checks(refused_for_good())

    assert {r.name: kinds(r) for r in results} == {r.name: [] for r in results}


# --- a release the provider refused every time it was asked --------------------------------------
VOID_REFUSALS = ("pay-1:void:1", "pay-1:void:2")
LAPSES = "2027-01-01T14:48:00.000+00:00"  # the provider's lapse of the hold (7 days / 60)
HELD_TOLD = {
    "code": "release_refused",
    "currency": "EUR",
    "amount": "360.00",
    "charged": "0.00",
    "refunded": "0.00",
    "lapses_at": "2027-01-01T14:48:00+00:00",
}
RELEASE_MAILED = (
    "Hello c1,\n\nWe could not release the 360.00 EUR held on your card: our payment provider refused\n"
    "it. The hold ends by 1 Jan 2027, 14:48 UTC at the latest, and you will not be charged.\n"
)


def held_intent(*, changed_under: str = "") -> dict[str, Any]:
    """The provider's intent of a hold nobody released: authorized (and changed under the key
    `changed_under`, if given)."""
    held = intent(status="requires_capture", received=0)
    held["history"] = held["history"][:1]
    if changed_under:
        change = {**held["history"][0], "version": 2, "cause": "cancel", "idempotency_key": changed_under}
        held["history"].append({**change, "object": {"status": "canceled", "amount_received": 0}})
    held["sandbox"] = {"authorization_lapses_at": LAPSES}
    return held


def release_refused_for_good(
    *,
    told: dict[str, str] | None = None,
    mailed: str = RELEASE_MAILED,
    answers: tuple[int, ...] = (400, 400),
    left_to_support: bool = True,
    intents: list[dict] | None = None,
    **changes: Any,
):
    """A booking paid by a hold of 360, cancelled by its customer before the partner confirmed
    (v3: nothing owed), whose release the provider refused twice: left to support, still held at
    the provider, and the customer told so (v4, mailed), with when the hold lapses."""
    from chaos.model import EventRow, MailRow, NotificationRow
    from tests.chaos.test_checks import at, events

    told = dict(HELD_TOLD) if told is None else told
    view = {"from": "cancelled", "to": "cancelled", "message": "cancelled", "status_version": 4}
    told_view = {**view, "money": told}
    timeline = [
        *events(
            ("", "awaiting_payment", 0),
            ("awaiting_payment", "requested", 0.3),
            ("requested", "submitting", 0.5),
            ("submitting", "pending", 1),
        ),
        EventRow(5, "booking.cancelled", "customer", "pending", "cancelled", at(20)),
        EventRow(6, "payment.operation_refused", "worker", "", "", at(21)),
        EventRow(7, "payment.operation_refused", "worker", "", "", at(23)),
        EventRow(8, "customer.view_changed", "worker", "", "", at(24), data={"customer_view": told_view}),
    ]
    if left_to_support:
        left = {"step": "void", "amount": None}
        timeline.append(EventRow(9, "payment.left_to_support", "worker", "", "", at(24), data=left))
    snapshot = snapshot_with(
        [
            row(
                **{
                    "status": "authorized",
                    "captured": Decimal("0.00"),
                    "booking_status": "cancelled",
                    "confirmed_ever": False,
                    "release_refused": True,
                    "void_refusals": VOID_REFUSALS,
                    **changes,
                }
            )
        ],
        [held_intent()] if intents is None else intents,
    )
    assert snapshot.money is not None
    snapshot.money = replace(snapshot.money, answers=dict(zip(VOID_REFUSALS, answers, strict=False)))
    snapshot.truth[:] = [truth(status="cancelled")]  # the partner's, cancelled before it confirmed
    booking = snapshot.bookings[BOOKING]
    snapshot.bookings[BOOKING] = replace(
        booking,
        status="cancelled",
        events=tuple(timeline),
        view_status="cancelled",
        view_version=4,
        view_money=told,
    )
    snapshot.mails = [MailRow(BOOKING, 4, "money", "<n-4@localhost>", at(25), "000001.eml", text=mailed)]
    snapshot.notifications = [NotificationRow(BOOKING, 4, "money", "cancelled", "sent", 1, at(24))]
    return snapshot


def test_a_release_refused_for_good_left_to_support_and_told_passes_every_money_check_and_is_counted():
    results = money_checks(release_refused_for_good())

    assert {r.name: kinds(r) for r in results} == {r.name: [] for r in results}
    held = next(r for r in results if r.name == "money_nothing_held")
    assert (held.figures["releases_refused_for_good"], held.figures["release_asks_refused"]) == (1, 2)
    assert held.figures["intents_requires_capture"] == 1


def test_a_hold_our_row_does_not_say_was_refused_for_good_is_left_held_whatever_else_says_so():
    result = check_nothing_held(release_refused_for_good(release_refused=False))

    [violation] = result.violations
    assert violation.kind == "authorization_left_held" and "neither captured nor voided" in violation.message
    assert (result.figures["releases_refused_for_good"], result.figures["release_asks_refused"]) == (0, 2)


@pytest.mark.parametrize(
    ("changes", "missing"),
    [
        # the provider's ground truth
        ({"answers": (400,)}, "the provider refused 1 of its asks, not every one of at least 2"),
        ({"answers": (400, 200)}, "(its saved answers: pay-1:void:1 400, pay-1:void:2 200)"),
        ({"void_refusals": ()}, "refused 0 of its asks, not every one of at least 2 (its saved answers: no "),
        (
            {"intents": [held_intent(changed_under="pay-1:void:2")]},
            "the provider changed pi_1 under voids we hold refused: pay-1:void:2",
        ),
        # our timeline and row
        ({"left_to_support": False}, "no payment.left_to_support row of a void on its timeline"),
        (
            {"next_check_at": datetime(2027, 1, 1, 13, tzinfo=UTC)},
            "left to support, yet our next look is at 2027-01-01 13:00:00+00:00",
        ),
        ({"booking_status": "confirmed", "confirmed_ever": True}, "the booking owes 360.00, not nothing"),
        # what the customer is told
        (
            {"told": {**HELD_TOLD, "code": "released"}},
            "the customer is shown released 360.00 of their money, not release_refused 360.00",
        ),
        (
            {"told": {**HELD_TOLD, "amount": "300.00"}},
            "shown release_refused 300.00 of their money, not release_refused 360.00",
        ),
        (
            {"told": {**HELD_TOLD, "lapses_at": "2027-01-01T15:48:00+00:00"}},
            "told the hold lapses at 2027-01-01T15:48:00+00:00, the provider says 2027-01-01T14:48:00+00:00",
        ),
        (
            {"told": {k: v for k, v in HELD_TOLD.items() if k != "lapses_at"}},
            "told the hold lapses at no time",
        ),
        (
            {"mailed": RELEASE_MAILED.replace("14:48", "15:48")},
            "the mail of version 4 (1 in the sink, outbox sent) does not say 'We could not release the "
            "360.00 EUR held on your card' and 'The hold ends by 1 Jan 2027, 14:48 UTC at the latest'",
        ),
        ({"mailed": "We released the 360.00 EUR we were holding"}, "the mail of version 4"),
    ],
)
def test_a_hold_left_held_without_the_evidence_of_a_release_refused_for_good_is_left_held(changes, missing):
    result = check_nothing_held(release_refused_for_good(**changes))

    [violation] = result.violations
    assert violation.kind == "authorization_left_held"
    assert "its release refused for good by our row, but " in violation.message
    assert missing in violation.message
    assert result.figures["releases_refused_for_good"] == 0
    assert any(missing in problem for problem in violation.evidence["release_refused"])
    assert violation.evidence["customer_money"] == changes.get("told", HELD_TOLD)


def test_a_release_refused_for_good_unmailed_is_the_mail_check_s_only_while_the_outbox_may_still_send_it():
    unmailed = release_refused_for_good()
    unmailed.mails = []
    [violation] = check_nothing_held(unmailed).violations
    assert "the mail of version 4 (0 in the sink, outbox sent)" in violation.message
    for state in ("delivery_unknown", "queued", "sending"):
        unmailed.notifications = [replace(unmailed.notifications[0], state=state)]
        assert check_nothing_held(unmailed).passed
    unmailed.notifications = [replace(unmailed.notifications[0], state="failed")]
    assert kinds(check_nothing_held(unmailed)) == ["authorization_left_held"]


def test_a_release_refused_for_good_by_our_row_that_the_provider_released_is_a_hold_told_that_is_gone():
    released = intent(status="canceled", received=0)

    result = check_nothing_held(release_refused_for_good(intents=[released]))

    [violation] = result.violations
    assert violation.kind == "release_refused_not_held"
    assert "the provider holds nothing: intent pi_1 canceled amount 36000 received 0" in violation.message
    assert violation.evidence["provider_answers"] == [f"{k}: 400" for k in VOID_REFUSALS]


def test_the_report_counts_the_releases_refused_for_good_and_those_without_their_evidence():
    from chaos.report import release_refused_line

    judged = check_nothing_held(release_refused_for_good())
    assert release_refused_line(judged) == "Releases refused for good: 1, each left to support and told"
    unproven = check_nothing_held(release_refused_for_good(left_to_support=False))
    assert release_refused_line(unproven) == (
        "Releases refused for good: 0, each left to support and told; 1 more not so (money_nothing_held "
        "violations)"
    )


def test_the_sink_s_mails_are_read_with_the_words_the_customer_read(tmp_path):
    from email.message import EmailMessage

    from chaos import mailbox

    message = EmailMessage()
    message["X-Booking-Reference"], message["X-Booking-Status-Version"] = BOOKING, "5"
    message["X-Notification-Kind"], message["Message-ID"] = "money", "<n-5@localhost>"
    message.set_content(MAILED)
    message.add_alternative("<p>A refund to your card could not be made.</p>", subtype="html")
    (tmp_path / "20270101T120000.000000Z-1-000001.eml").write_bytes(message.as_bytes())

    [read] = mailbox.read(tmp_path)

    assert (read.reference, read.version, read.kind) == (BOOKING, 5, "money")
    assert "We still owe you 270.00 EUR" in read.text
