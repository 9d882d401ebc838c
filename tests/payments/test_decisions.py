"""The money rules as pure functions: what a booking owes in each state, and the one step asked
of the provider next (never two operations at once, never a capture before the partner
confirmed, never a refund of more than was paid beyond what is owed)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bookings.states import BookingState
from payments.decisions import BookingFacts, Held, Step, at_rest, next_step, owed
from payments.models import PaymentStatus

S = BookingState
P = PaymentStatus
PRICE = Decimal("360.00")
ZERO = Decimal("0.00")


def facts(
    state: str, *, confirmed: bool = False, reason: str = "", fee: Decimal | None = None
) -> BookingFacts:
    return BookingFacts(
        state=state, confirmed=confirmed, attention_reason=reason, price=PRICE, cancellation_fee=fee
    )


def held(status: str, captured: Decimal = ZERO, refunded: Decimal = ZERO) -> Held:
    return Held(
        status=status, amount=PRICE, captured=captured, refunded=refunded, authorization_expires_at=None
    )


@pytest.mark.parametrize(
    ("booking", "due"),
    [
        (facts(S.CONFIRMED, confirmed=True), PRICE),
        (facts(S.CANCELLED, confirmed=True, fee=Decimal("90.00")), Decimal("90.00")),
        (facts(S.CANCELLED), ZERO),  # cancelled before the partner confirmed
        (facts(S.REJECTED), ZERO),
        (facts(S.FAILED), ZERO),
        (facts(S.EXPIRED), ZERO),
        (facts(S.NEEDS_ATTENTION, confirmed=True, reason="partner_cancelled_confirmed"), ZERO),
        (facts(S.NEEDS_ATTENTION, confirmed=True, reason="partner_lost_reservation"), ZERO),
        (facts(S.NEEDS_ATTENTION, confirmed=True, reason="partner_mismatch"), None),  # support decides
        (facts(S.PENDING_PARTNER), None),
        (facts(S.CANCEL_REQUESTED, confirmed=True, fee=ZERO), None),
        (facts(S.AWAITING_PAYMENT), None),
    ],
)
def test_what_a_booking_owes(booking, due):
    assert owed(booking) == due


# --- an ended booking support took up for a stray reservation (`Booking.ended_as`) ---------------
FEE = Decimal("90.00")
# What each end owes, confirmed first or not, with a fee fixed by a cancel or none.
OWED_AT_END = {
    (S.CANCELLED, True, FEE): FEE,
    (S.CANCELLED, True, None): ZERO,  # cancelled for free, or after the partner took it back
    (S.CANCELLED, False, None): ZERO,
    **{
        (end, confirmed, None): ZERO
        for end in (S.REJECTED, S.FAILED, S.EXPIRED)
        for confirmed in (False, True)
    },
}


def with_support(end: str, *, confirmed: bool, fee: Decimal | None, reason: str) -> BookingFacts:
    """The booking as support has it: in needs_attention, for `reason`, from `end`."""
    return replace(
        facts(end, confirmed=confirmed, fee=fee),
        state=S.NEEDS_ATTENTION,
        attention_reason=reason,
        ended_as=end,
    )


@pytest.mark.parametrize(("end", "confirmed", "fee"), sorted(OWED_AT_END, key=str))
@pytest.mark.parametrize(
    "reason", ["compensation_failed", "partner_mismatch", "partner_cancelled_confirmed", "worker_gave_up"]
)
def test_an_end_support_takes_up_owes_what_that_end_owes(end, confirmed, fee, reason):
    """The customer's booking has ended all the same: support's reason for the stray, whatever it
    is, decides nothing of its money (it waited, undecided, for support to resolve the stray)."""
    due = OWED_AT_END[(end, confirmed, fee)]

    assert owed(facts(end, confirmed=confirmed, fee=fee)) == due
    assert owed(with_support(end, confirmed=confirmed, fee=fee, reason=reason)) == due


@pytest.mark.parametrize("confirmed", [False, True])
def test_support_still_decides_the_money_of_a_booking_that_had_not_ended(confirmed):
    # from pending_partner, confirmed, cancel_requested: `Booking.ended_as` is '' for them
    booking = BookingFacts(
        state=S.NEEDS_ATTENTION,
        confirmed=confirmed,
        attention_reason="compensation_failed",
        price=PRICE,
        cancellation_fee=None,
        ended_as="",
    )

    assert owed(booking) is None


@pytest.mark.parametrize(
    ("booking", "payment", "step", "amount"),
    [
        # cancelled and charged: the refund less the fee, as without support
        (
            with_support(S.CANCELLED, confirmed=True, fee=FEE, reason="compensation_failed"),
            held(P.CAPTURED, PRICE),
            Step.REFUND,
            PRICE - FEE,
        ),
        # refunded already: nothing more (no refund twice)
        (
            with_support(S.CANCELLED, confirmed=True, fee=FEE, reason="compensation_failed"),
            held(P.CAPTURED, PRICE, PRICE - FEE),
            Step.NOTHING,
            None,
        ),
        # cancelled with a fee and held: the fee captured, the rest released, as without support
        (
            with_support(S.CANCELLED, confirmed=True, fee=FEE, reason="compensation_failed"),
            held(P.AUTHORIZED),
            Step.CAPTURE,
            FEE,
        ),
        *(
            (
                with_support(end, confirmed=False, fee=None, reason="compensation_failed"),
                held(P.AUTHORIZED),
                Step.VOID,
                None,
            )
            for end in (S.CANCELLED, S.REJECTED, S.FAILED, S.EXPIRED)
        ),
    ],
)
def test_an_end_support_takes_up_is_refunded_or_released_at_once(booking, payment, step, amount):
    plan = next_step(booking=booking, payment=payment, open_operation=False, lapse_due=False)

    assert (plan.step, plan.amount) == (step, amount)
    assert plan.why.endswith(f"as {booking.ended_as}") or step == Step.NOTHING
    assert at_rest(booking=booking, payment=payment) is (step == Step.NOTHING)


@pytest.mark.parametrize(
    ("booking", "payment", "step", "amount"),
    [
        (facts(S.AWAITING_PAYMENT), held(P.PENDING), Step.AUTHORIZE, PRICE),
        (facts(S.EXPIRED), held(P.PENDING), Step.ABANDON, None),
        (facts(S.PENDING_PARTNER), held(P.AUTHORIZED), Step.NOTHING, None),
        (facts(S.CONFIRMED, confirmed=True), held(P.AUTHORIZED), Step.CAPTURE, PRICE),
        (
            facts(S.CANCELLED, confirmed=True, fee=Decimal("90.00")),
            held(P.AUTHORIZED),
            Step.CAPTURE,
            Decimal("90.00"),
        ),
        (facts(S.REJECTED), held(P.AUTHORIZED), Step.VOID, None),
        (facts(S.CANCELLED), held(P.AUTHORIZED), Step.VOID, None),
        (facts(S.CONFIRMED, confirmed=True), held(P.CAPTURED, PRICE), Step.NOTHING, None),
        (
            facts(S.CANCELLED, confirmed=True, fee=Decimal("90.00")),
            held(P.CAPTURED, PRICE),
            Step.REFUND,
            Decimal("270.00"),
        ),
        (
            facts(S.NEEDS_ATTENTION, confirmed=True, reason="partner_cancelled_confirmed"),
            held(P.CAPTURED, PRICE, Decimal("100.00")),
            Step.REFUND,
            Decimal("260.00"),
        ),
        # refunded already down to what is owed: nothing more, ever
        (
            facts(S.CANCELLED, confirmed=True, fee=Decimal("90.00")),
            held(P.CAPTURED, PRICE, Decimal("270.00")),
            Step.NOTHING,
            None,
        ),
        # short of what is owed (a hold released early): never asked for again automatically
        (facts(S.CONFIRMED, confirmed=True), held(P.VOIDED), Step.NOTHING, None),
        (facts(S.CONFIRMED, confirmed=True), held(P.DECLINED), Step.NOTHING, None),
    ],
)
def test_the_next_step(booking, payment, step, amount):
    plan = next_step(booking=booking, payment=payment, open_operation=False, lapse_due=False)

    assert (plan.step, plan.amount) == (step, amount)


def test_an_open_operation_is_asked_again_before_anything_else():
    for payment in (held(P.UNKNOWN), held(P.AUTHORIZED), held(P.CAPTURED, PRICE)):
        plan = next_step(
            booking=facts(S.CANCELLED, confirmed=True, fee=ZERO),
            payment=payment,
            open_operation=True,
            lapse_due=False,
        )
        assert plan.step == Step.RESOLVE


def test_an_authorization_that_provably_never_ran_is_abandoned_once_the_booking_ended():
    plan = next_step(booking=facts(S.EXPIRED), payment=held(P.PENDING), open_operation=True, lapse_due=False)

    assert plan.step == Step.ABANDON


def test_a_capture_needs_the_partners_confirmation():
    # a booking owing money it was never confirmed for (cancelled with a fee before confirming
    # cannot happen: the fee is fixed only for a confirmed booking) is voided, not captured
    plan = next_step(
        booking=facts(S.CANCELLED, fee=Decimal("90.00")),
        payment=held(P.AUTHORIZED),
        open_operation=False,
        lapse_due=False,
    )

    assert plan.step == Step.VOID


def test_a_hold_about_to_lapse_while_undecided_is_voided():
    payment = Held(P.AUTHORIZED, PRICE, ZERO, ZERO, datetime(2027, 1, 1, tzinfo=UTC))

    assert (
        next_step(
            booking=facts(S.PENDING_PARTNER), payment=payment, open_operation=False, lapse_due=True
        ).step
        == Step.VOID
    )


@pytest.mark.parametrize(
    ("booking", "payment", "rest"),
    [
        (facts(S.PENDING_PARTNER), held(P.AUTHORIZED), False),  # a hold lapses: never at rest
        (facts(S.CONFIRMED, confirmed=True), held(P.CAPTURED, PRICE), True),
        (facts(S.CANCELLED, confirmed=True, fee=ZERO), held(P.CAPTURED, PRICE), False),  # owes a refund
        (facts(S.REJECTED), held(P.VOIDED), True),
        (facts(S.AWAITING_PAYMENT), held(P.UNKNOWN), False),
    ],
)
def test_at_rest(booking, payment, rest):
    assert at_rest(booking=booking, payment=payment) is rest


def test_a_refund_the_card_refused_is_never_asked_again_and_rests_with_support():
    # cancelled for free, the refund of it all made and then refused by the card
    cancelled = facts(S.CANCELLED, confirmed=True, fee=ZERO)
    refused = Held(status=P.CAPTURED, amount=PRICE, captured=PRICE, refunded=ZERO, failed_refunds_owed=PRICE)

    plan = next_step(booking=cancelled, payment=refused, open_operation=False, lapse_due=False)

    assert (plan.step, plan.why) == (Step.NOTHING, "a refund of 360.00 failed at the card (support's)")
    assert at_rest(booking=cancelled, payment=refused) is True
    # given back by support's refund: at rest as the booking owes
    given_back = Held(status=P.CAPTURED, amount=PRICE, captured=PRICE, refunded=PRICE)
    assert next_step(booking=cancelled, payment=given_back, open_operation=False, lapse_due=False).step == (
        Step.NOTHING
    )
