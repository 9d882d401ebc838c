"""What cancelling a booking does to the customer's money, told before they confirm (the cancel
page, the API's `if_cancelled`), in the mails that follow the cancel (`after_cancel`) and, once
it is done, beside the money on the booking's page and in the API (`money_words`).

The fee is the offer's policy (`bookings.pricing.cancellation_fee`), and `fee_if_cancelled` is
the one rule of when it applies: `booking_request_cancel` fixes it with it, and the cancel page
shows it with it (`fee_told`: the fee as the money can pay it). What was shown can change before
the customer confirms (the partner confirms, the cut-off passes): the page and the API send back
the fee they showed, and a cancel that would now take more is refused, never charged. Fixed
once, by the cancel of the confirmed booking, it stands for the cancel support asks again on the
customer's behalf after the first one did not complete (the partner would not cancel), as the
payment side owes it once cancelled. The rest is what the payment side then does for a cancelled
booking (`payments.decisions.next_step`, owing the fee): a hold is released, or charged for the
fee and the rest released; what was paid beyond the fee is refunded; nothing more is ever
charged. While a charge's outcome is not known (`charge_unknown`), which of those it will be is
not known either: the customer is told their money comes back, as a release or a refund; but a
charge of the fee alone from the hold (`Money.charging`) can take no more than the fee, and the
rest of the hold is released whatever its answer, never charged and refunded. What the provider
holds is read from what the customer was last told (`customer_money.Money`): no query, and the
page never contradicts its own money line.

The policy itself is put into words here too (`Policy`, `StayPolicy`), once for every place that
shows it: the offers and the quote's page before Book, the API's offers and quotes, the cancel
page's `why` and the mails after a cancel.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from bookings import ports
from bookings.customer_money import MONEY_HELD, Money, money_shown, refund_due, shown_at
from bookings.models import Booking, CancellationTerms, Quote
from bookings.pricing import amount_text, cancellation_cut_off, cancellation_fee
from bookings.states import TERMINAL_STATES, BookingState, CustomerMoney, CustomerStatus

ZERO = Decimal("0.00")
_PAID = frozenset(
    {
        CustomerMoney.CHARGED,
        CustomerMoney.PARTLY_REFUNDED,
        CustomerMoney.REFUNDED,
        CustomerMoney.REFUNDED_OUTSIDE,
    }
)


def _percent(share: Decimal) -> str:
    return f"{share.normalize():f}%"


# --- the offer's policy, in words -------------------------------------------------------------
# When a fee can be taken at all (`fee_if_cancelled`): only from a card payment (a booking
# without one takes no money), and only once the partner confirmed. Told before Book.
FEE_ONLY_WHEN = (
    "A fee is only ever taken from the card you book with, and only once the partner has "
    "confirmed your booking: until then, cancelling is free."
)


@dataclass(frozen=True)
class Policy:
    """An offer's cancellation policy (`bookings.pricing.cancellation_fee`): free until `hours`
    before the start, then `fee_percent` of the price. Without dates, only the rule."""

    hours: int
    fee_percent: Decimal

    @property
    def free(self) -> bool:
        return self.fee_percent == 0

    @property
    def text(self) -> str:
        if self.free:
            return "Cancelling is free."
        return (
            f"Cancelling is free until {self.hours} hours before the start; from then on the fee "
            f"is {_percent(self.fee_percent)} of the price."
        )


@dataclass(frozen=True)
class StayPolicy(Policy):
    """The policy for one stay at its price (a quote's, a booking's): when free cancellation
    ends (`cut_off`; None when cancelling is free) and the fee from then on, in money."""

    currency: str
    cut_off: datetime | None
    fee: Decimal

    def words(self, *, at: datetime) -> str:
        """The policy with the stay's cut-off and fee, as they stand at `at`."""
        if self.cut_off is None:
            return "Cancelling this booking is free."
        when = f"{shown_at(self.cut_off)} ({self.hours} hours before the start)"
        share, fee = _percent(self.fee_percent), amount_text(self.fee, self.currency)
        if at < self.cut_off:
            return f"Cancelling is free until {when}; from then on the fee is {share} of the price, {fee}."
        return f"Free cancellation ended on {when}: the fee is now {share} of the price, {fee}."

    def terms(self, *, at: datetime) -> str:
        """What the customer agrees to on Book: the policy, and when a fee is taken at all."""
        words = self.words(at=at)
        return words if self.cut_off is None else f"{words} {FEE_ONLY_WHEN}"


def offer_policy(terms: CancellationTerms) -> Policy:
    """The policy of an offer now (or of the terms a quote or a booking kept)."""
    return Policy(hours=terms.free_cancellation_hours, fee_percent=terms.cancellation_fee_percent)


def stay_policy(stay: Quote | Booking) -> StayPolicy:
    """The policy the stay was made under (the terms its quote or booking kept, as the customer
    was shown them before Book), for its dates and its price."""
    rule = offer_policy(stay)
    if rule.free:
        return StayPolicy(rule.hours, rule.fee_percent, stay.currency, cut_off=None, fee=ZERO)
    cut_off = cancellation_cut_off(terms=stay, start_date=stay.start_date)
    fee = cancellation_fee(
        terms=stay, total=stay.total_price, currency=stay.currency, start_date=stay.start_date, at=cut_off
    )
    return StayPolicy(rule.hours, rule.fee_percent, stay.currency, cut_off=cut_off, fee=fee)


# --- before a cancel: what it would do to the money -------------------------------------------
def fee_if_cancelled(booking: Booking, *, at: datetime) -> Decimal | None:
    """The fee a cancel asked for `at` fixes; None when none can be owed: the booking takes no
    payment, or the partner has not confirmed it (cancelling is free until then, and while a
    problem at the partner lasts).

    A fee an earlier cancel fixed is the fee: that cancel was asked of the confirmed booking, the
    customer agreed to its fee then, and the cut-off is judged when they asked, not when the
    partner answers. It did not complete (the partner would not cancel: support has it), and
    cancelled in the end, the booking owes it (`payments.decisions.owed`), so the cancel support
    asks again on the customer's behalf keeps it, and its preview says so. A move off that
    cancel's road drops it (`Booking._cancel_dropped`: confirmed again, the price is owed and
    this rule starts afresh)."""
    if not ports.pays(booking):
        return None
    if booking.status != BookingState.CONFIRMED:
        return booking.cancellation_fee  # None when no cancel fixed one
    # Confirmed, no fee can stand (a move back to confirmed drops it); one still stored was left by
    # code before that rule (a rolling deploy): the cancel asked now decides afresh.
    return cancellation_fee(
        terms=booking,
        total=booking.total_price,
        currency=booking.currency,
        start_date=booking.start_date,
        at=at,
    )


class AtPartner(StrEnum):
    """What cancelling does at the partner, as the cancel page says it."""

    NOT_SENT = "not_sent"  # never sent to them: stopped before they hear of it
    ASK = "ask"  # they may hold it: asked to cancel it, `cancelling` until they confirm
    # They took it away after confirming it (`Booking.partner_let_go`): nothing to ask them.
    LET_GO = "let_go"


def at_partner(booking: Booking) -> AtPartner:
    if not booking.sent_to_partner:
        return AtPartner.NOT_SENT
    return AtPartner.LET_GO if booking.partner_let_go else AtPartner.ASK


class Outcome(StrEnum):
    NO_PAYMENT = "no_payment"  # the booking takes no payment
    NOT_TAKEN_YET = "not_taken_yet"  # the bank is being asked to hold it
    RELEASE = "release"  # held, not charged: let go
    # A charge of the hold may or may not have been made: the rest comes back, released or refunded.
    RELEASE_OR_REFUND = "release_or_refund"
    FULL_REFUND = "full_refund"
    REFUND_LESS_FEE = "refund_less_fee"
    NOTHING_TO_REFUND = "nothing_to_refund"
    # A refund the card refused is owed: support settles the money, a cancel refunds nothing itself.
    REFUND_WITH_SUPPORT = "refund_with_support"


@dataclass(frozen=True)
class CancelMoney:
    """What cancelling now does to the money (`text`), and why it costs what it does (`why`)."""

    outcome: Outcome
    currency: str
    held: Decimal = ZERO  # on the card, not charged
    paid: Decimal = ZERO  # charged less refunded
    fee: Decimal = ZERO  # kept from what was paid, or charged from the hold
    refund: Decimal = ZERO
    released: Decimal = ZERO
    refund_failed: Decimal = ZERO  # a refund that could not be made: owed, support's
    refunded: Decimal = ZERO  # given back already, when nothing is left to refund
    # The money goes back whether or not the customer cancels: the partner took the booking away.
    returned_anyway: bool = False
    why: str = ""
    # When free cancellation ends under the offer's policy; None without a payment or a fee.
    cut_off: datetime | None = None

    def _shown(self, value: Decimal) -> str:
        return amount_text(value, self.currency)

    @property
    def text(self) -> str:
        held, paid, fee = self._shown(self.held), self._shown(self.paid), self._shown(self.fee)
        if self.outcome == Outcome.NO_PAYMENT:
            return "This booking takes no payment: cancelling costs nothing, and there is nothing to refund."
        if self.outcome == Outcome.NOT_TAKEN_YET:
            return (
                f"You have not been charged: we are asking your bank to hold {held}. If it does, we "
                "release it once the cancellation is done: you will not be charged."
            )
        if self.outcome == Outcome.RELEASE and self.returned_anyway:
            return (
                f"We are releasing the {held} we are holding on your card, as the partner no longer "
                "holds your booking: you will not be charged, whether or not you cancel."
            )
        if self.outcome == Outcome.RELEASE:
            return (
                f"Once the cancellation is done, we release the {held} we are holding on your card: "
                "you will not be charged."
            )
        if self.outcome == Outcome.RELEASE_OR_REFUND:
            return release_or_refund(
                self.held, self.fee, self.currency, asked=False, anyway=self.returned_anyway
            )
        if self.outcome == Outcome.REFUND_WITH_SUPPORT:
            kept = f", less the cancellation fee of {fee} we keep" if self.fee > 0 else ""
            return (
                f"A refund to your card could not be made and we still owe you "
                f"{self._shown(self.refund_failed)}, so our support team settles your money: "
                "cancelling refunds nothing by itself, and they will be in touch to give back what you "
                f"are owed{kept}."
            )
        if self.outcome == Outcome.FULL_REFUND and self.returned_anyway:
            return (
                f"We are refunding the {paid} you paid to your card, in full, as the partner no "
                "longer holds your booking: whether or not you cancel."
            )
        if self.outcome == Outcome.FULL_REFUND:
            return f"Once the cancellation is done, we refund the {paid} you paid to your card, in full."
        if self.outcome == Outcome.REFUND_LESS_FEE:
            return (
                f"Once the cancellation is done, we keep the cancellation fee of {fee} and refund "
                f"the other {self._shown(self.refund)} of the {paid} you paid to your card."
            )
        if self.paid > 0:
            return f"We keep the {paid} you paid as the cancellation fee: there is nothing to refund."
        if self.refunded > 0:
            return (
                f"We have already refunded the {self._shown(self.refunded)} we charged to your card, "
                "in full: there is nothing more to refund."
            )
        return "You have paid nothing for this booking: there is nothing to refund."


def _why(booking: Booking, *, fee: Decimal | None, policy: StayPolicy, at: datetime) -> str:
    """Why cancelling costs what it does: the policy with the cut-off that decides the fee (the
    one an earlier cancel fixed: when that was asked), or why no fee can be owed
    (`fee_if_cancelled`), as the customer's status says it."""
    if fee is not None and booking.cancellation_fee is not None:
        return _fixed_why(policy, fee)
    if fee is not None:
        return policy.words(at=at)
    if booking.partner_let_go:
        return "Cancelling is free: the partner no longer holds the booking they confirmed."
    if booking.customer_status == CustomerStatus.DISRUPTED:  # confirmed, then a problem support sorts out
        return "Cancelling is free while there is a problem with your confirmed booking."
    return "Cancelling is free while the partner has not confirmed your booking."


def _being_charged(booking: Booking, money: Money) -> bool:
    """A hold still shown held on a booking the partner confirmed, whatever it shows now: its
    charge is due from the confirmation on (`payments.decisions.next_step` captures only then)
    and may be out to a slow provider, and a later move (the partner took it back, a problem at
    the partner) does not call back a call already made. So a cancel may find it charged in full,
    or not yet. Which is only known at the cancel (`payments.services.runs.money_at_cancel`: an
    open capture, under the payment's lock, is `charge_unknown`); before it, both are said, and
    never "you will not be charged". No query: the list previews every booking alike."""
    return money.code in MONEY_HELD and booking.confirmed_shown_at is not None


def cancel_money(booking: Booking, *, at: datetime) -> CancelMoney:
    """What cancelling the booking at `at` would do to its money, as the payment side will do it."""
    money: Money | None = money_shown(booking)
    if money is None:
        return CancelMoney(Outcome.NO_PAYMENT, booking.currency)
    fee = fee_if_cancelled(booking, at=at)
    owed = fee or ZERO
    policy = stay_policy(booking)
    told = {
        "currency": money.currency,
        "why": _why(booking, fee=fee, policy=policy, at=at),
        "cut_off": policy.cut_off,
    }
    if money.code == CustomerMoney.AUTHORIZING:
        return CancelMoney(Outcome.NOT_TAKEN_YET, held=money.amount, **told)
    anyway = booking.partner_let_go  # its money goes back in full (payments.decisions.owed)
    if money.code == CustomerMoney.CHARGE_UNKNOWN or _being_charged(booking, money):
        return CancelMoney(
            Outcome.RELEASE_OR_REFUND,
            held=money.amount,
            fee=min(owed, money.amount),
            returned_anyway=anyway,
            **told,
        )
    if money.code == CustomerMoney.REFUND_FAILED:  # automation asks the card nothing more
        # Support settles the money, but the cancel still fixes the policy's fee, kept from what
        # was paid: the fee told (and the most a confirmed cancel may take) is that one.
        paid = money.paid
        return CancelMoney(
            Outcome.REFUND_WITH_SUPPORT,
            paid=paid,
            fee=min(owed, paid),
            refund_failed=money.refund_failed,
            **told,
        )
    if money.code in MONEY_HELD:
        # Never confirmed (a hold once confirmed is `_being_charged`): cancelling is free.
        return CancelMoney(
            Outcome.RELEASE, held=money.amount, released=money.amount, returned_anyway=anyway, **told
        )
    paid = money.paid if money.code in _PAID else ZERO
    if paid <= 0:
        # "refunded to your card, in full" only when it all went back to the card.
        to_card = money.code in _PAID and not money.refunded_outside
        refunded = money.refunded if to_card else ZERO
        return CancelMoney(Outcome.NOTHING_TO_REFUND, refunded=refunded, **told)
    if owed == 0:
        return CancelMoney(Outcome.FULL_REFUND, paid=paid, refund=paid, returned_anyway=anyway, **told)
    if paid > owed:
        return CancelMoney(Outcome.REFUND_LESS_FEE, paid=paid, fee=owed, refund=paid - owed, **told)
    return CancelMoney(Outcome.NOTHING_TO_REFUND, paid=paid, fee=paid, **told)


def fee_told(booking: Booking, *, at: datetime) -> Decimal:
    """The fee the customer is told cancelling at `at` takes (the cancel page's, the API's
    `if_cancelled.fee`): `fee_if_cancelled` as far as their money can pay it. What a cancel
    confirmed on a page must not exceed (`booking_request_cancel`'s `expected_fee`)."""
    return cancel_money(booking, at=at).fee


def release_or_refund(
    held: Decimal, fee: Decimal, currency: str, *, asked: bool, anyway: bool = False
) -> str:
    """What a cancel does to a hold whose charge's outcome is not known: whatever it was, all but
    the fee comes back; whether as a released hold or a refund, only that outcome will tell, and
    finding it out (the charge asked again under its key) may itself complete the charge. The
    same words before the cancel (the page, the API) and, once it is `asked`, in the mails; of a
    booking the partner took back (`anyway`), the money comes back whether or not it is cancelled."""

    def shown(value: Decimal) -> str:
        return amount_text(value, currency)

    now = asked or anyway
    making = "are making" if now else "make"
    if fee >= held:
        told = f"the {shown(held)} is all the cancellation fee: nothing comes back to your card."
    elif fee <= 0:
        because = ", as the partner no longer holds your booking, whether or not you cancel" if anyway else ""
        told = (
            f"we {making} sure the {shown(held)} comes back to your card in full{because}. We do not "
            "know yet whether it was charged, and finding out may complete the charge: if it is "
            "charged, we refund it in full; if not, we release the hold."
        )
    else:
        rest = shown(held - fee)
        told = (
            f"we keep the cancellation fee of {shown(fee)} and {making} sure the other {rest} "
            f"comes back to your card. We do not know yet whether the {shown(held)} was charged, "
            f"and finding out may complete the charge: if it is charged, we refund the {rest}; if "
            "not, we charge only the fee and release the rest of the hold."
        )
    return told[0].upper() + told[1:] if now else f"Once the cancellation is done, {told}"


def _ended(policy: StayPolicy) -> str:
    assert policy.cut_off is not None
    return f"free cancellation ended on {shown_at(policy.cut_off)} ({policy.hours} hours before the start)"


def _fixed_why(policy: StayPolicy, fee: Decimal) -> str:
    """Why a cancel asked again costs the fee the first one fixed: the cut-off it came before or
    after (`fee_if_cancelled`)."""
    if policy.cut_off is None:
        return "Cancelling this booking is free."
    if fee == 0:
        return f"You first asked to cancel before {_ended(policy)}: cancelling costs nothing."
    shown = amount_text(fee, policy.currency)
    if fee != policy.fee:
        return f"The cancellation fee of {shown} was fixed when you first asked to cancel."
    share = _percent(policy.fee_percent)
    return (
        f"You first asked to cancel after {_ended(policy)}: the fee of {share} of the price, "
        f"{shown}, was fixed then and stands."
    )


# --- once it is asked for: the mails that follow ----------------------------------------------
def _after_why(booking: Booking, fee: Decimal) -> str:
    """Why the cancel cost what it did, in the past: the cut-off it came before or after. Empty
    when the offer's policy no longer gives the fee the cancel fixed (changed since)."""
    policy = stay_policy(booking)
    if policy.cut_off is None:
        return "Cancelling this booking is free." if fee == 0 else ""
    ended = _ended(policy)
    if fee == 0:
        return f"Your booking was cancelled before {ended}: it cost nothing."
    if fee != policy.fee:
        return ""
    share = _percent(policy.fee_percent)
    return f"Your booking was cancelled after {ended}: the fee is {share} of the price."


def _after_words(money: Money, fee: Decimal) -> str:
    def shown(value: Decimal) -> str:
        return amount_text(value, money.currency)

    paid = money.charged - money.refunded
    if money.code == CustomerMoney.CHARGE_UNKNOWN and money.charge_asked < money.amount:
        # The capture of the fee alone (`payments.decisions.next_step`): at most it is taken, and
        # the rest of the hold is let go with it, never charged, so never refunded either.
        if money.charge_asked != fee:
            return ""  # not the fee: said as it is
        return (
            f"The {shown(fee)} is the cancellation fee, all we charge: we are releasing the other "
            f"{shown(money.amount - fee)} we hold on your card."
        )
    if money.code == CustomerMoney.CHARGE_UNKNOWN:
        return release_or_refund(money.amount, fee, money.currency, asked=True)
    if money.code in MONEY_HELD:
        if fee == 0:
            return (
                f"We are releasing the {shown(money.amount)} we hold on your card: you will not be charged."
            )
        if fee == money.amount:  # nothing is left to release
            return f"We are charging the {shown(fee)} we hold on your card: it is all the cancellation fee."
        if fee < money.amount:
            return (
                f"We are charging the cancellation fee of {shown(fee)} from the {shown(money.amount)} "
                f"we hold on your card and releasing the other {shown(money.amount - fee)}."
            )
        return ""
    if money.code == CustomerMoney.CHARGED:
        if paid == fee and money.amount > money.charged:  # the fee taken from the hold
            return (
                f"The {shown(fee)} charged is the cancellation fee; the other "
                f"{shown(money.amount - money.charged)} we were holding on your card is released."
            )
        if paid == fee:
            return f"We keep the {shown(paid)} you paid as the cancellation fee: there is nothing to refund."
    if money.code in (CustomerMoney.CHARGED, CustomerMoney.PARTLY_REFUNDED):
        # What was paid beyond the fee is refunded (`refund_due`), whatever support refunded before.
        if paid > fee == 0:
            return f"We are refunding the {shown(paid)} you paid to your card, in full."
        if paid > fee:
            return (
                f"We keep the cancellation fee of {shown(fee)} and are refunding the other "
                f"{shown(paid - fee)} to your card."
            )
    if money.code == CustomerMoney.PARTLY_REFUNDED and paid == fee:
        return f"The {shown(paid)} you paid is the cancellation fee we keep."
    if (
        money.code
        in (
            CustomerMoney.REFUNDED,
            CustomerMoney.RELEASED,
            CustomerMoney.LAPSED,
            CustomerMoney.RELEASE_REFUSED,
        )
        and fee == 0
    ):
        return "No cancellation fee is kept."
    return ""  # money that no longer follows the policy alone (support's refund): said as it is


def free_cancel_words(booking: Booking, money: Money | None) -> str:
    """A booking cancelled before the partner confirmed (free, no fee fixed) while the bank is
    asked for a hold, or holds it: the money words alone ("We are asking your bank to hold…") do
    not say it is let go. The page and the mails say it beside them; and so while a cancel that did
    not complete is with our support team (`Booking.cancel_with_support`): still asked, not done."""
    cancelled = (
        booking.effective_state in (BookingState.CANCEL_REQUESTED, BookingState.CANCELLED)
        or booking.cancel_with_support
    )
    if money is None or booking.cancellation_fee is not None or not cancelled:
        return ""
    amount = amount_text(money.amount, money.currency)
    # Asked, not done: the money waits for the cancellation (`payments.decisions.owed`), which the
    # partner may yet refuse (or has, and support takes it up: the hold waits for what they settle).
    done = booking.effective_state == BookingState.CANCELLED
    if money.code == CustomerMoney.AUTHORIZING:
        when = "" if done else " once the cancellation is done"
        return f"Cancelling is free: whatever your bank answers, any hold of {amount} is released{when}."
    if money.code in MONEY_HELD and done:
        return f"Cancelling is free: we are releasing the {amount} we hold on your card."
    if money.code in MONEY_HELD:
        return (
            f"Cancelling is free: once the cancellation is done, we release the {amount} we hold on "
            "your card."
        )
    return ""


def not_going_ahead_words(booking: Booking, money: Money | None) -> str:
    """A booking that ended without ever being confirmed (rejected, failed, expired) owes nothing
    (`payments.decisions.owed`) and was never charged (a capture follows a confirmation only), so
    a hold asked for or held is let go at once: said beside the money, whose own words ("you are
    not charged yet") alone would leave a charge to come. Not for one confirmed first (the
    partner took it back): its capture may be out, and the hold charged, then refunded. Charged,
    a confirmed booking that will not go ahead after all (the partner took it back, or it ended
    with support) owes nothing either: the refund on its way is said beside "We charged", from
    the move that decided it until the provider answers (`refund_due`)."""
    if money is None:
        return ""
    refund = refund_due(booking, money)
    if refund > 0:
        return _not_going_ahead_refund(money, refund)
    end = booking.effective_state  # an end support took up for a stray is that end still
    ended = end in TERMINAL_STATES and end != BookingState.CANCELLED
    if not ended or booking.confirmed_shown_at is not None:
        return ""
    amount = amount_text(money.amount, money.currency)
    if money.code == CustomerMoney.AUTHORIZING:
        return (
            f"As your booking is not going ahead, any hold of {amount} is released, whatever your "
            "bank answers."
        )
    if money.code in MONEY_HELD:
        return "As your booking is not going ahead, we are releasing the hold: you will not be charged."
    return ""


def _not_going_ahead_refund(money: Money, refund: Decimal) -> str:
    def shown(value: Decimal) -> str:
        return amount_text(value, money.currency)

    if refund >= money.paid:
        return (
            f"As your booking is not going ahead, we are refunding the {shown(refund)} you paid to "
            "your card, in full."
        )
    return f"As your booking is not going ahead, we are refunding {shown(refund)} to your card."


def after_cancel(booking: Booking, money: Money | None) -> str:
    """For a mail or page about a booking whose cancellation was asked for, beside what its money
    was told (`money`, the words at that version): the fee kept, what is being refunded or
    released, and the cut-off that decided the fee. With no fee fixed (not confirmed: cancelling
    was free), only that a hold asked for or held is let go. Empty when the booking takes no
    payment, was not cancelled, or its money no longer follows the fee alone (a support refund).
    Reads the fee the cancel fixed on the booking (`booking_request_cancel`, by
    `fee_if_cancelled`): no query."""
    fee = booking.cancellation_fee
    if money is None:
        return ""
    if fee is None:
        if refund_due(booking, money) > 0:
            # Charged (support may have refunded part), then cancelled with nothing owed
            # (confirmed, then a problem with it).
            return _after_words(money, ZERO)
        return free_cancel_words(booking, money)
    words = _after_words(money, fee)
    if not words:
        return ""
    why = _after_why(booking, fee)
    return f"{words} {why}" if why else words


def money_words(booking: Booking, money: Money) -> str:
    """What the booking's page and the API's `money.message` tell the customer of their money:
    its words (`Money.text`) and, once the booking is cancelled, what the cancel does with it as
    its mails say it (`after_cancel`), so that "We charged 360.00 EUR" is never all a booking says
    while its refund is on its way (`refund_due`: from the move that decided it, not from the
    provider's answer): a cancelled one's, or one that will not go ahead after all
    (`not_going_ahead_words`). While the cancel is asked and the partner has not confirmed it,
    nothing is refunded, charged or released yet: only that a free cancel lets a hold go."""
    if booking.effective_state == BookingState.CANCELLED:
        more = after_cancel(booking, money)
    else:
        more = free_cancel_words(booking, money) or not_going_ahead_words(booking, money)
    return f"{money.text} {more}" if more else money.text
