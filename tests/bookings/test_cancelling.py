"""What the cancel page tells the customer about their money before they confirm
(bookings/cancelling.py): one case each, against the fee the cancel itself then fixes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from bookings import catalogue
from bookings.cancelling import (
    AtPartner,
    Outcome,
    at_partner,
    cancel_money,
    fee_if_cancelled,
    fee_told,
    stay_policy,
)
from bookings.customer_money import PaymentFacts, money_of
from bookings.models import Actor
from bookings.pricing import cancellation_fee
from bookings.services import BookingRequest, booking_create, booking_request_cancel, quote_create
from bookings.states import BookingState
from tests.factories import BookingFactory, OfferFactory, UserFactory

S = BookingState
PRICE = Decimal("360.00")
START = date(2030, 6, 10)
AT = datetime(2030, 5, 1, 12, tzinfo=UTC)
# Free until a day before the start (cut-off 9 June, ahead of AT), or until 60 days before it
# (cut-off 11 April, behind AT): a quarter of the price, 90.00 EUR, after.
BEFORE_CUT_OFF = {"free_cancellation_hours": 24, "cancellation_fee_percent": Decimal("25")}
AFTER_CUT_OFF = {"free_cancellation_hours": 60 * 24, "cancellation_fee_percent": Decimal("25")}


def told(state: str, charged: str = "0", refunded: str = "0") -> dict:
    return money_of(PaymentFacts(state, "EUR", PRICE, Decimal(charged), Decimal(refunded))).as_json()


def booking(status: str = S.CONFIRMED, money: dict | None = None, **policy):
    offer = OfferFactory(**policy)
    return BookingFactory(offer=offer, status=status, start_date=START, customer_money=money or {})


def test_a_booking_without_a_payment_says_there_is_nothing_to_refund(db):
    money = cancel_money(booking(**AFTER_CUT_OFF), at=AT)

    assert money.outcome == Outcome.NO_PAYMENT
    assert (
        money.text
        == "This booking takes no payment: cancelling costs nothing, and there is nothing to refund."
    )
    assert money.why == ""


def test_a_payment_still_being_authorized_is_released_and_nothing_charged(db):
    money = cancel_money(booking(S.AWAITING_PAYMENT, told("authorizing"), **AFTER_CUT_OFF), at=AT)

    assert money.outcome == Outcome.NOT_TAKEN_YET
    assert money.text == (
        "You have not been charged: we are asking your bank to hold 360.00 EUR. If it does, we "
        "release it once the cancellation is done: you will not be charged."
    )
    assert money.why == "Cancelling is free while the partner has not confirmed your booking."


def test_a_hold_on_a_booking_not_confirmed_yet_is_released_even_after_the_cut_off(db):
    money = cancel_money(booking(S.PENDING_PARTNER, told("held"), **AFTER_CUT_OFF), at=AT)

    assert money.outcome == Outcome.RELEASE
    assert money.text == (
        "Once the cancellation is done, we release the 360.00 EUR we are holding on your card: "
        "you will not be charged."
    )
    assert (money.fee, money.released) == (Decimal("0.00"), PRICE)


def test_a_hold_on_a_confirmed_booking_after_the_cut_off_keeps_the_fee_and_the_rest_comes_back(db):
    # Its charge is due from the confirmation on and may be out to a slow provider: "we release
    # the other 270.00" could be untrue by the time the cancel lands (charged, then refunded).
    money = cancel_money(booking(S.CONFIRMED, told("held"), **AFTER_CUT_OFF), at=AT)

    assert money.outcome == Outcome.RELEASE_OR_REFUND
    assert money.text == (
        "Once the cancellation is done, we keep the cancellation fee of 90.00 EUR and make sure the "
        "other 270.00 EUR comes back to your card. We do not know yet whether the 360.00 EUR was "
        "charged, and finding out may complete the charge: if it is charged, we refund the 270.00 "
        "EUR; if not, we charge only the fee and release the rest of the hold."
    )


def test_a_charged_booking_before_the_cut_off_is_refunded_in_full_and_says_until_when(db):
    money = cancel_money(booking(S.CONFIRMED, told("charged", "360.00"), **BEFORE_CUT_OFF), at=AT)

    assert money.outcome == Outcome.FULL_REFUND
    assert (
        money.text
        == "Once the cancellation is done, we refund the 360.00 EUR you paid to your card, in full."
    )
    assert money.why == (
        "Cancelling is free until 9 Jun 2030, 00:00 UTC (24 hours before the start); from then on "
        "the fee is 25% of the price, 90.00 EUR."
    )


def test_a_charged_booking_after_the_cut_off_is_refunded_less_the_fee_and_says_why(db):
    money = cancel_money(booking(S.CONFIRMED, told("charged", "360.00"), **AFTER_CUT_OFF), at=AT)

    assert money.outcome == Outcome.REFUND_LESS_FEE
    assert money.text == (
        "Once the cancellation is done, we keep the cancellation fee of 90.00 EUR and refund the "
        "other 270.00 EUR of the 360.00 EUR you paid to your card."
    )
    assert money.why == (
        "Free cancellation ended on 11 Apr 2030, 00:00 UTC (1440 hours before the start): the fee "
        "is now 25% of the price, 90.00 EUR."
    )


def test_a_fee_of_the_whole_price_leaves_nothing_to_refund(db):
    policy = {**AFTER_CUT_OFF, "cancellation_fee_percent": Decimal("100")}
    money = cancel_money(booking(S.CONFIRMED, told("charged", "360.00"), **policy), at=AT)

    assert money.outcome == Outcome.NOTHING_TO_REFUND
    assert (
        money.text == "We keep the 360.00 EUR you paid as the cancellation fee: there is nothing to refund."
    )


def test_a_hold_released_already_leaves_nothing_to_refund(db):
    money = cancel_money(booking(S.CONFIRMED, told("released"), **AFTER_CUT_OFF), at=AT)

    assert money.outcome == Outcome.NOTHING_TO_REFUND
    assert money.text == "You have paid nothing for this booking: there is nothing to refund."


def test_an_offer_without_a_fee_says_cancelling_is_free(db):
    policy = {**AFTER_CUT_OFF, "cancellation_fee_percent": Decimal("0")}
    money = cancel_money(booking(S.CONFIRMED, told("charged", "360.00"), **policy), at=AT)

    assert money.outcome == Outcome.FULL_REFUND
    assert money.why == "Cancelling this booking is free."


@pytest.mark.parametrize("policy", [BEFORE_CUT_OFF, AFTER_CUT_OFF], ids=["before", "after"])
def test_the_fee_told_is_the_fee_the_cancel_fixes(db, policy, time_machine):
    # the page and the service share one rule: what was shown is what the cancel stores
    time_machine.move_to(AT, tick=False)
    paid = booking(S.CONFIRMED, told("charged", "360.00"), **policy)
    shown = cancel_money(paid, at=AT)

    cancelled = booking_request_cancel(booking_id=paid.pk, actor=Actor.CUSTOMER)

    assert cancelled.cancellation_fee == shown.fee == fee_if_cancelled(paid, at=AT)
    assert shown.refund == PRICE - cancelled.cancellation_fee


def test_the_fee_is_rounded_in_the_booking_s_currency_even_after_the_offer_s_changed(db):
    """Review: the fee was rounded in the offer's currency; an offer moved from yen to euros
    (partner_upsert may) gave a yen booking a fee of 185.10 JPY, which no capture or refund can
    send, and the payment's operation stayed open for ever."""
    yen = BookingFactory(
        offer=OfferFactory(
            free_cancellation_hours=60 * 24, cancellation_fee_percent=Decimal("15"), currency="EUR"
        ),
        status=S.CONFIRMED,
        start_date=START,
        currency="JPY",
        total_price=Decimal("1234"),
    )

    assert stay_policy(yen).fee == Decimal("185.00")
    fee = cancellation_fee(terms=yen, total=yen.total_price, currency="JPY", start_date=START, at=AT)
    assert fee == Decimal("185.00")


def test_a_cancel_costs_what_the_booking_was_shown_whatever_the_offer_s_terms_become(db):
    """The policy told before Book is the booking's: an offer whose terms change afterwards
    (partner_upsert, the admin) changes what new quotes and bookings are told, not this one."""
    paid = booking(S.CONFIRMED, told("charged", "360.00"), **BEFORE_CUT_OFF)
    shown = cancel_money(paid, at=AT)
    type(paid.offer).objects.filter(pk=paid.offer_id).update(**AFTER_CUT_OFF)
    paid.refresh_from_db()

    assert cancel_money(paid, at=AT).fee == shown.fee == Decimal("0.00")
    assert stay_policy(paid).cut_off == shown_cut_off(BEFORE_CUT_OFF)


def test_a_quote_keeps_the_offer_s_terms_and_its_booking_keeps_the_quote_s(db):
    offer = OfferFactory(**BEFORE_CUT_OFF)
    customer = UserFactory()
    start = timezone.now().date() + timedelta(days=40)
    quote = quote_create(
        customer=customer, offer_id=offer.pk, start_date=start, end_date=start + timedelta(days=2), guests=2
    )
    type(offer).objects.filter(pk=offer.pk).update(**AFTER_CUT_OFF)  # after the quote page showed it
    catalogue.forget_offers()  # the booking path's offer cache, as its TTL would

    made = booking_create(
        customer=customer,
        request=BookingRequest(
            offer_id=offer.pk,
            start_date=start,
            end_date=start + timedelta(days=2),
            guests=2,
            quote_id=quote.pk,
        ),
        idempotency_key="keeps-terms",
    ).booking
    unquoted = booking_create(
        customer=customer,
        request=BookingRequest(
            offer_id=offer.pk, start_date=start, end_date=start + timedelta(days=3), guests=2
        ),
        idempotency_key="offer-terms-now",
    ).booking

    kept = ("free_cancellation_hours", "cancellation_fee_percent")
    assert [getattr(quote, f) for f in kept] == [getattr(made, f) for f in kept] == [24, Decimal("25")]
    assert [getattr(unquoted, f) for f in kept] == [60 * 24, Decimal("25")]


def shown_cut_off(policy: dict):
    return datetime.combine(START, datetime.min.time(), tzinfo=UTC) - timedelta(
        hours=policy["free_cancellation_hours"]
    )


def test_a_refund_the_card_refused_is_support_s_and_a_cancel_refunds_nothing_by_itself(db):
    facts = PaymentFacts("charged", "EUR", PRICE, PRICE, Decimal("0.00"), refund_failed=PRICE)
    disrupted = booking(S.NEEDS_ATTENTION, money_of(facts).as_json(), **BEFORE_CUT_OFF)

    money = cancel_money(disrupted, at=AT)

    assert money.outcome == Outcome.REFUND_WITH_SUPPORT
    assert money.text == (
        "A refund to your card could not be made and we still owe you 360.00 EUR, so our support team "
        "settles your money: cancelling refunds nothing by itself, and they will be in touch to give "
        "back what you are owed."
    )
    assert (money.paid, money.refund, money.fee) == (PRICE, Decimal("0.00"), Decimal("0.00"))


def test_a_confirmed_bookings_cancel_with_a_refund_support_owes_tells_the_fee_it_fixes(db):
    """A refund of 100 the card refused is support's; cancelling the confirmed booking after its
    cut-off still fixes the policy's fee (a quarter of 360): the fee told is that one, which is
    also the most a cancel confirmed on the page may take (`booking_request_cancel`)."""
    facts = PaymentFacts("charged", "EUR", PRICE, PRICE, Decimal("0.00"), refund_failed=Decimal("100.00"))
    confirmed = booking(S.CONFIRMED, money_of(facts).as_json(), **AFTER_CUT_OFF)

    money = cancel_money(confirmed, at=AT)

    assert (money.outcome, money.fee) == (Outcome.REFUND_WITH_SUPPORT, Decimal("90.00"))
    assert money.text == (
        "A refund to your card could not be made and we still owe you 100.00 EUR, so our support team "
        "settles your money: cancelling refunds nothing by itself, and they will be in touch to give "
        "back what you are owed, less the cancellation fee of 90.00 EUR we keep."
    )
    assert fee_told(confirmed, at=AT) == fee_if_cancelled(confirmed, at=AT) == Decimal("90.00")


@pytest.mark.parametrize(
    ("owed", "outside", "outcome", "paid"),
    [
        ("260.00", "100.00", Outcome.REFUND_WITH_SUPPORT, "260.00"),
        ("0.00", "360.00", Outcome.NOTHING_TO_REFUND, "0.00"),
    ],
    ids=["part-paid-another-way", "all-paid-another-way"],
)
def test_money_support_paid_back_another_way_is_not_paid_by_the_customer_any_more(
    db, owed, outside, outcome, paid
):
    """The card refused a refund of 360; support paid 100, then all of it, by bank transfer. A
    cancel must not count it as still paid (nor, all of it paid, say "refunded to your card")."""
    facts = PaymentFacts(
        "charged",
        "EUR",
        PRICE,
        PRICE,
        Decimal("0.00"),
        refund_failed=Decimal(owed),
        refunded_outside=Decimal(outside),
    )
    held = booking(S.NEEDS_ATTENTION, money_of(facts).as_json(), **BEFORE_CUT_OFF)

    money = cancel_money(held, at=AT)

    assert (money.outcome, money.paid) == (outcome, Decimal(paid))
    assert "to your card, in full" not in money.text


# --- a booking the partner confirmed, then took away or changed: customer status `disrupted` ---
def disrupted(message: str, money: dict, **policy):
    """Confirmed, then sent to support by what the partner did (`message`), as the customer sees it."""
    reason = {
        "disrupted_partner_cancelled": "partner_cancelled_confirmed",
        "disrupted_partner_lost": "partner_lost_reservation",
        "disrupted_partner_changed": "partner_mismatch",
    }[message]
    return BookingFactory(
        offer=OfferFactory(**policy),
        status=S.NEEDS_ATTENTION,
        attention_reason=reason,
        start_date=START,
        submission_count=1,
        confirmed_shown_at=AT - timedelta(days=1),
        customer_status="disrupted",
        customer_message=message,
        customer_money=money,
    )


@pytest.mark.parametrize("message", ["disrupted_partner_cancelled", "disrupted_partner_lost"])
def test_a_booking_the_partner_took_back_and_refunded_says_so_not_that_it_was_never_confirmed(db, message):
    taken_back = disrupted(message, told("charged", charged="360.00", refunded="360.00"), **AFTER_CUT_OFF)

    money = cancel_money(taken_back, at=AT)

    assert at_partner(taken_back) == AtPartner.LET_GO
    assert money.outcome == Outcome.NOTHING_TO_REFUND
    assert money.text == (
        "We have already refunded the 360.00 EUR we charged to your card, in full: there is nothing "
        "more to refund."
    )
    assert money.why == "Cancelling is free: the partner no longer holds the booking they confirmed."


def test_the_money_of_a_booking_the_partner_took_back_goes_back_whether_or_not_it_is_cancelled(db):
    charged = disrupted("disrupted_partner_cancelled", told("charged", charged="360.00"), **AFTER_CUT_OFF)
    held = disrupted("disrupted_partner_cancelled", told("held"), **AFTER_CUT_OFF)

    refund, release = cancel_money(charged, at=AT), cancel_money(held, at=AT)

    assert (refund.outcome, refund.refund) == (Outcome.FULL_REFUND, PRICE)
    assert refund.text == (
        "We are refunding the 360.00 EUR you paid to your card, in full, as the partner no longer "
        "holds your booking: whether or not you cancel."
    )
    # still held: its confirmation's capture may be out (a slow provider), and the partner taking
    # it back does not call that back, so all of it comes back, released or refunded
    assert (release.outcome, release.fee, release.released) == (Outcome.RELEASE_OR_REFUND, 0, 0)
    assert release.text == (
        "We are making sure the 360.00 EUR comes back to your card in full, as the partner no longer "
        "holds your booking, whether or not you cancel. We do not know yet whether it was charged, "
        "and finding out may complete the charge: if it is charged, we refund it in full; if not, we "
        "release the hold."
    )


@pytest.mark.parametrize(
    "message", ["disrupted_partner_cancelled", "disrupted_partner_lost", "disrupted_partner_changed"]
)
def test_a_hold_on_a_booking_once_confirmed_never_promises_it_is_not_charged(db, message):
    """Review F2: the confirmation's capture was out when the partner took the booking back (or
    changed it); the page said "you will not be charged", while the cancel itself, under the
    payment's lock, said the charge is not known yet, and the capture then took 360.00."""
    held = disrupted(message, told("held"), **AFTER_CUT_OFF)

    money = cancel_money(held, at=AT)

    assert money.outcome == Outcome.RELEASE_OR_REFUND
    assert "not be charged" not in money.text
    assert "finding out may complete the charge: if it is charged, we refund it in full" in money.text


def test_a_hold_never_confirmed_is_still_released_with_support(db):
    # never confirmed: no capture can have been asked (`payments.decisions.next_step`)
    held = booking(S.NEEDS_ATTENTION, told("held"), **AFTER_CUT_OFF)

    assert cancel_money(held, at=AT).outcome == Outcome.RELEASE


# --- a cancel asked again: the first one fixed the fee, the partner would not cancel ------------
def asked_again(money: dict, fee: str, **policy):
    """Confirmed, cancelled with `fee` fixed; the partner would not cancel it: support has it."""
    return BookingFactory(
        offer=OfferFactory(**policy),
        status=S.NEEDS_ATTENTION,
        attention_reason="compensation_failed",
        start_date=START,
        submission_count=1,
        confirmed_shown_at=AT - timedelta(days=2),
        cancellation_fee=Decimal(fee),
        customer_status="disrupted",
        customer_message="disrupted",
        customer_money=money,
    )


def test_a_cancel_asked_again_keeps_the_fee_the_first_one_fixed_and_says_so(db):
    """Review F1: the first cancel, after the cut-off, fixed 90.00; the partner would not cancel.
    Asked again, the page said "free, refunded in full", and the payment side kept the 90.00."""
    again = asked_again(told("charged", "360.00"), "90.00", **AFTER_CUT_OFF)

    money = cancel_money(again, at=AT)

    assert fee_if_cancelled(again, at=AT) == Decimal("90.00")
    assert (money.outcome, money.fee, money.refund) == (Outcome.REFUND_LESS_FEE, Decimal("90.00"), 270)
    assert money.text == (
        "Once the cancellation is done, we keep the cancellation fee of 90.00 EUR and refund the "
        "other 270.00 EUR of the 360.00 EUR you paid to your card."
    )
    assert money.why == (
        "You first asked to cancel after free cancellation ended on 11 Apr 2030, 00:00 UTC (1440 "
        "hours before the start): the fee of 25% of the price, 90.00 EUR, was fixed then and stands."
    )


def test_a_cancel_asked_free_before_the_cut_off_stays_free_when_asked_again_after_it(db):
    # the first cancel came before the cut-off (0.00 fixed); asked again after it, still nothing
    again = asked_again(told("charged", "360.00"), "0.00", **AFTER_CUT_OFF)

    money = cancel_money(again, at=AT)

    assert (money.outcome, money.refund) == (Outcome.FULL_REFUND, PRICE)
    assert money.why == (
        "You first asked to cancel before free cancellation ended on 11 Apr 2030, 00:00 UTC (1440 "
        "hours before the start): cancelling costs nothing."
    )


def test_a_cancel_asked_again_stores_the_fee_the_page_showed(db, time_machine):
    time_machine.move_to(AT, tick=False)
    again = asked_again(told("charged", "360.00"), "90.00", **AFTER_CUT_OFF)
    shown = cancel_money(again, at=AT)

    cancelled = booking_request_cancel(booking_id=again.pk, actor=Actor.CUSTOMER)

    assert cancelled.status == S.CANCEL_REQUESTED
    assert cancelled.cancellation_fee == shown.fee == Decimal("90.00")


def test_a_booking_the_partner_changed_is_free_to_cancel_while_the_problem_lasts(db):
    changed = disrupted("disrupted_partner_changed", told("charged", charged="360.00"), **AFTER_CUT_OFF)

    money = cancel_money(changed, at=AT)

    # the partner may still hold it, changed: the cancel asks them, and refunds once it is done
    assert at_partner(changed) == AtPartner.ASK
    assert money.outcome == Outcome.FULL_REFUND
    assert (
        money.text
        == "Once the cancellation is done, we refund the 360.00 EUR you paid to your card, in full."
    )
    assert money.why == "Cancelling is free while there is a problem with your confirmed booking."
    assert fee_if_cancelled(changed, at=AT) is None


def test_a_hold_whose_cancel_is_asked_again_keeps_the_fee_and_the_rest_comes_back(db):
    # held still (no capture asked while the cancel was under way): the fee from the hold, or,
    # should a capture from the confirmation have been out, the rest refunded
    again = asked_again(told("held"), "90.00", **AFTER_CUT_OFF)

    money = cancel_money(again, at=AT)

    assert (money.outcome, money.fee) == (Outcome.RELEASE_OR_REFUND, Decimal("90.00"))
    assert "we keep the cancellation fee of 90.00 EUR and make sure the other 270.00 EUR" in money.text


def test_a_fee_left_on_a_confirmed_booking_is_not_the_fee_a_cancel_fixes(db, time_machine):
    """A confirmed booking carries no fee (confirming drops one); one left by older code (a
    rolling deploy running the old `confirm` after migration 0018) must not be reused: before the
    cut-off the cancel is free, and the stale fee is replaced, not kept for the payment side."""
    time_machine.move_to(AT, tick=False)
    stale = booking(S.CONFIRMED, told("charged", "360.00"), **BEFORE_CUT_OFF)
    stale.cancellation_fee = Decimal("90.00")
    stale.save(update_fields=["cancellation_fee"])

    assert fee_if_cancelled(stale, at=AT) == Decimal("0.00")  # before the cut-off: free
    assert cancel_money(stale, at=AT).outcome == Outcome.FULL_REFUND
    cancelled = booking_request_cancel(booking_id=stale.pk, actor=Actor.CUSTOMER)
    assert cancelled.cancellation_fee == Decimal("0.00")
