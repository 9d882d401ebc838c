"""The money rules as pure functions: what a booking owes, what to ask the provider next, and
how a call's outcome and the provider's truth move a payment. No database, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from bookings.states import TERMINAL_STATES, BookingState
from payments.models import CallOutcome, PaymentStatus

S = BookingState
P = PaymentStatus
ZERO = Decimal("0.00")
# Our decline code for an authorization the provider answered neither held nor declined (its
# intent awaits an action we never ask the customer for, such as the bank's authentication).
NOT_AUTHORIZED = "not_authorized"
# An intent's status while the card's bank has not answered its confirmation: neither held nor
# declined yet, and it becomes one of them by itself. Never concluded on: read again later.
AWAITING_BANK = "processing"

# Why support holds a booking the partner confirmed and then took away (the partner side's
# reasons, bookings/customer_view.py words them): the stay will not happen, the money goes back.
PARTNER_TOOK_IT_BACK = frozenset({"partner_cancelled_confirmed", "partner_lost_reservation"})


@dataclass(frozen=True)
class BookingFacts:
    state: str
    # The partner confirmed it at some time (the customer was shown `confirmed`).
    confirmed: bool
    attention_reason: str
    price: Decimal
    # Fixed when a cancel of the confirmed booking was asked for (bookings.pricing).
    cancellation_fee: Decimal | None
    # The end it had reached when support took it up for what the partner still holds of it (a
    # stray reservation it would not release: `Booking.ended_as`), '' otherwise. The customer's
    # booking has ended all the same, and owes what that end owes.
    ended_as: str = ""

    @property
    def owes_as(self) -> str:
        """The state whose rule decides what it owes (`owed`): its end, when support took it up
        after it had ended; else its state."""
        return self.ended_as or self.state


def owed(booking: BookingFacts) -> Decimal | None:
    """What the booking owes now; None while that is not decided (the money waits).

    confirmed: the price. Cancelled: the fee its cancel fixed (nothing when cancelled before the
    partner confirmed). Rejected, failed, expired, and confirmed then taken back by the partner:
    nothing. An end support took up for a stray reservation (`ended_as`): what that end owes,
    support's work at the partner changes nothing of it. Anything still open, and support's
    other cases: not decided.
    """
    state = booking.owes_as
    if state == S.CONFIRMED:
        return booking.price
    if state == S.CANCELLED:
        return booking.cancellation_fee or ZERO
    if state in TERMINAL_STATES:
        return ZERO
    if state == S.NEEDS_ATTENTION and booking.confirmed:
        return ZERO if booking.attention_reason in PARTNER_TOOK_IT_BACK else None
    return None


@dataclass(frozen=True)
class Held:
    """A payment as the provider holds it (our record of its truth)."""

    status: str
    amount: Decimal
    captured: Decimal
    refunded: Decimal
    authorization_expires_at: datetime | None = None
    # Refunds the provider made and then failed (the card refused them), not given back since.
    failed_refunds_owed: Decimal = ZERO
    # What support paid back another way (the card took nothing back): given back, not by us.
    refunded_outside: Decimal = ZERO
    # A refund the provider refused every time it was asked (never made), not given back since.
    refused_refunds_owed: Decimal = ZERO

    @property
    def owed_back(self) -> Decimal:
        """What refunds to the card that could not be made (failed, or refused for good) owe."""
        return self.failed_refunds_owed + self.refused_refunds_owed

    @property
    def paid(self) -> Decimal:
        """What the customer has paid in the end: captured, less what went back to them (by the
        provider, or another way)."""
        return self.captured - self.refunded - self.refunded_outside


class Step(StrEnum):
    NOTHING = "nothing"
    AUTHORIZE = "authorize"
    RESOLVE = "resolve"  # ask again under the open operation's key: its outcome decides
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    ABANDON = "abandon"  # never asked for: the booking ended first


@dataclass(frozen=True)
class Plan:
    step: Step
    amount: Decimal | None = None
    why: str = ""


def next_step(*, booking: BookingFacts, payment: Held, open_operation: bool, lapse_due: bool) -> Plan:
    """What to ask the provider next so that the money matches what the booking owes.

    One operation at a time: while one's outcome is unknown it is asked again under its own key
    (invariant: never a second authorization, never a refund made twice). A capture needs the
    partner's confirmation; a hold nobody decided on is voided before it lapses; money beyond
    what is owed is refunded; money short of it is never asked for again (support's call), and
    neither is a refund the card refused (asked again, the same card refuses it again: support's);
    a refund the provider refused every time it was asked is planned as owed still, and left to
    support by the run (`runs._refused_for_good`), so that it follows what the booking owes.
    """
    if open_operation:
        if payment.status == P.PENDING and booking.state != S.AWAITING_PAYMENT:
            # Every try of the authorization provably did nothing: never ask for it now.
            return Plan(Step.ABANDON, why=f"the booking is {booking.state} before any authorization")
        return Plan(Step.RESOLVE, why="an operation's outcome is not known yet")
    due = owed(booking)
    if payment.status == P.PENDING:
        if booking.state == S.AWAITING_PAYMENT:
            return Plan(Step.AUTHORIZE, payment.amount, "the booking awaits its payment")
        return Plan(Step.ABANDON, why=f"the booking is {booking.state} before any authorization")
    if payment.status == P.AUTHORIZED:
        if due is None:
            if lapse_due:
                return Plan(Step.VOID, why="the hold would lapse before the booking is decided")
            return Plan(Step.NOTHING, why=f"held while the booking is {booking.state}")
        if due > 0 and booking.confirmed:
            return Plan(Step.CAPTURE, min(due, payment.amount), f"owed {due} as {booking.owes_as}")
        return Plan(Step.VOID, why=f"nothing owed as {booking.owes_as}")
    if payment.status == P.CAPTURED and payment.failed_refunds_owed > 0:
        return Plan(
            Step.NOTHING, why=f"a refund of {payment.failed_refunds_owed} failed at the card (support's)"
        )
    if payment.status == P.CAPTURED and due is not None:
        paid = payment.paid
        if paid > due:
            return Plan(Step.REFUND, paid - due, f"paid {paid}, owed {due} as {booking.owes_as}")
        if paid < due:
            return Plan(Step.NOTHING, why=f"short: paid {paid}, owed {due} (support's decision)")
    return Plan(Step.NOTHING, why=f"{payment.status}, owed {due}")


def at_rest(*, booking: BookingFacts, payment: Held) -> bool:
    """The money matches what the booking owes and nothing will change it unless the booking
    moves (a hold awaiting a decision is not at rest: it lapses)."""
    if payment.status in (P.PENDING, P.AUTHORIZING, P.UNKNOWN, P.AUTHORIZED):
        return False
    if payment.status != P.CAPTURED:
        return True  # nothing held: nothing can change
    if payment.owed_back > 0:
        return True  # a refund the card or the provider refused: support's, nothing automatic changes it
    due = owed(booking)
    return due is None or payment.paid <= due


# --- the provider's truth ---------------------------------------------------------------------
def status_of_intent(*, intent_status: str, cancellation_reason: str, declined: bool) -> str | None:
    """Our payment status for what the provider says of its intent; None when it says nothing
    we act on (an intent awaiting a method, without a decline)."""
    if intent_status == "requires_capture":
        return P.AUTHORIZED
    if intent_status == "succeeded":
        return P.CAPTURED
    if intent_status == "canceled":
        return P.LAPSED if cancellation_reason == "automatic" else P.VOIDED
    if intent_status == "requires_payment_method" and declined:
        return P.DECLINED
    return None


# What a capture or a void leaves its intent as, once made (a lapse is the provider's own release
# of the hold, never our void).
MADE_AS = {"capture": P.CAPTURED, "void": P.VOIDED}


def read_shows_made(kind: str, *, intent_status: str, cancellation_reason: str) -> bool:
    """Whether a read of the intent shows that a capture or void (`kind`) was made."""
    shown = status_of_intent(
        intent_status=intent_status, cancellation_reason=cancellation_reason, declined=False
    )
    return shown == MADE_AS[kind]


# The transition that takes a payment to each status the provider's truth can put it in.
TRANSITION_TO = {
    P.AUTHORIZED: "mark_authorized",
    P.CAPTURED: "mark_captured",
    P.VOIDED: "mark_voided",
    P.LAPSED: "mark_lapsed",
    P.DECLINED: "mark_declined",
}


class AfterCall(StrEnum):
    APPLY = "apply"  # the answer is the provider's truth: through the one door
    DECLINE = "decline"  # the provider refused the authorization (the card, or our request)
    RETRY = "retry"  # nothing happened: ask again later under the same key
    UNKNOWN = "unknown"  # it may have happened: the operation stays open, asked again later
    REFUSED = "refused"  # nothing happened, and asking again would change nothing


def after_call(outcome: str, *, authorize: bool) -> AfterCall:
    """What a call's outcome means for its operation."""
    if outcome == CallOutcome.OK:
        return AfterCall.APPLY
    if outcome == CallOutcome.DECLINED or (outcome == CallOutcome.REFUSED and authorize):
        return AfterCall.DECLINE
    if outcome == CallOutcome.TRANSIENT:
        return AfterCall.RETRY
    if outcome == CallOutcome.REFUSED:
        return AfterCall.REFUSED
    return AfterCall.UNKNOWN
