"""The honest-status contract (docs/design.md): what a customer is shown about a booking.

`derive` is the rule, a pure function of the booking's state and a few facts. The rest of this
module is the one writer of what is stored: it numbers each change (`status_version`), keeps the
memory that makes "never backwards" hold (`confirmed_shown_at`), records the change on the
timeline with the notification it owes, and publishes it after commit (`bookings.live`).

What the customer is told about their money (`Money`, worded by `bookings.customer_money`) is
part of the view: it changes only when the payment side says so, so a transition pays no query
for it.

`apply_transition` folds a change into the transition's own UPDATE and timeline row (`stage`,
then `save_row`); anything else that can change a fact calls `refresh` on the locked booking.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.utils import timezone

from bookings import live, notifications, ports
from bookings.cancelling import money_words
from bookings.customer_money import MONEY_HELD, Money, PaymentFacts, money_of, money_shown, refund_due
from bookings.models import Actor, Booking, BookingEvent, Notification, NotificationKind, NotificationState
from bookings.states import (
    BookingState,
    CustomerMessage,
    CustomerMoney,
    CustomerStatus,
)
from bookings.timeline import new_event
from config.db import insert_together

S = BookingState
M = CustomerMessage
MONEY = CustomerMoney

# The booking's fields this module writes, and only this module.
VIEW_FIELDS = (
    "customer_status",
    "customer_message",
    "status_version",
    "confirmed_shown_at",
    "customer_money",
)


# --- the rule -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Facts:
    """What the state alone does not say."""

    # Something can still be live at the partner: an unanswered create, or a reservation that
    # is live or whose cancellation we asked for and have not verified.
    partner_may_hold: bool = False
    confirmed_shown: bool = False
    attention_reason: str = ""
    # Awaiting the partner for longer than CUSTOMER_SLOW_AFTER since the booking was made.
    slow: bool = False
    # What the customer is told about their money; None for a booking without a payment.
    money: Money | None = None
    # The booking was sent to the partner at least once (`Booking.sent_to_partner`): a cancel before
    # that has nothing to cancel with them, and is told so.
    submitted: bool = True
    # A cancel the customer (or support for them) asked for stands (`Booking.cancel_asked_at`): in
    # needs_attention, it did not complete and support has it.
    cancel_asked: bool = False
    # The end a booking with support had reached when support got it (`Booking.ended_with_support`:
    # `attention_from`, one of the ended states), for what the partner still holds of it: the
    # customer's booking has ended all the same, and is shown as that end. "" otherwise.
    ended_as: str = ""


@dataclass(frozen=True)
class View:
    status: str
    message: str
    money: Money | None = None


# States whose view no fact changes.
_FIXED_VIEW = {
    S.CONFIRMED: View(CustomerStatus.CONFIRMED, M.CONFIRMED),
    S.CANCEL_REQUESTED: View(CustomerStatus.CANCELLING, M.CANCELLING),
    S.CANCELLED: View(CustomerStatus.CANCELLED, M.CANCELLED),
}
_AWAITING_MESSAGE = {
    S.REQUESTED: M.RECEIVED,
    S.SUBMITTING: M.SUBMITTING,
    S.PENDING_PARTNER: M.PARTNER_CONFIRMING,
    S.UNKNOWN: M.CHECKING,
}
# A cancel of a booking never sent to the partner: nobody there holds or is asked anything.
_UNSENT_VIEW = {
    S.CANCEL_REQUESTED: View(CustomerStatus.CANCELLING, M.CANCELLING_UNSENT),
    S.CANCELLED: View(CustomerStatus.CANCELLED, M.CANCELLED_UNSENT),
}
# A cancel of a booking the partner never confirmed that did not complete: support has it.
_CANCEL_WITH_SUPPORT = View(CustomerStatus.CANCELLING, M.CANCEL_WITH_SUPPORT)
# The unconfirmed ends: `failed` with these words once nothing may be held, `releasing` before.
_ENDED_MESSAGE = {
    S.REJECTED: M.DECLINED,
    S.FAILED: M.NOT_COMPLETED,
    S.EXPIRED: M.NOT_CONFIRMED_IN_TIME,
}
# Why a confirmed booking went to support, in the customer's words; any other reason: DISRUPTED.
_DISRUPTED_MESSAGE = {
    "partner_cancelled_confirmed": M.DISRUPTED_PARTNER_CANCELLED,
    "partner_lost_reservation": M.DISRUPTED_PARTNER_LOST,
    "partner_mismatch": M.DISRUPTED_PARTNER_CHANGED,
}


def derive(state: str, facts: Facts) -> View:
    """The contract: `confirmed` only in CONFIRMED; `failed` only when nothing may be held at
    the partner; once `confirmed` was shown, never `pending` again (`disrupted` instead); a
    booking support took up after it had ended is shown as that end (`Facts.ended_as`). The
    money is told as the payment side states it, whatever the state."""
    return replace(_derive_status(state, facts), money=facts.money)


def _derive_status(state: str, facts: Facts) -> View:
    if state == S.NEEDS_ATTENTION and facts.ended_as:
        # Support took up what the partner still holds of an ended booking (a stray reservation
        # it would not release): shown as that end, exactly as just before (the same facts, and
        # no reason of its own: an end carries none), so the move is no news to the customer.
        state, facts = facts.ended_as, replace(facts, attention_reason="")
    if state in _UNSENT_VIEW and not facts.submitted:
        return _UNSENT_VIEW[state]
    if state in _FIXED_VIEW:
        return _FIXED_VIEW[state]
    if state == S.NEEDS_ATTENTION and facts.cancel_asked and not facts.confirmed_shown:
        # Asked, not done: still `cancelling`, never `pending` again (support has the cancel).
        return _UNSENT_VIEW[S.CANCEL_REQUESTED] if not facts.submitted else _CANCEL_WITH_SUPPORT
    ended = state in _ENDED_MESSAGE
    if facts.confirmed_shown:
        if ended and not facts.partner_may_hold:
            return View(CustomerStatus.DISRUPTED, M.DISRUPTED_ENDED)
        return View(CustomerStatus.DISRUPTED, _disrupted_message(state, facts))
    if ended:
        if facts.partner_may_hold:
            return View(CustomerStatus.PENDING, M.RELEASING)
        return View(CustomerStatus.FAILED, _ended_message(state, facts))
    if state == S.NEEDS_ATTENTION:
        return View(CustomerStatus.PENDING, M.WITH_SUPPORT)
    if state == S.AWAITING_PAYMENT:
        return View(CustomerStatus.PENDING, M.CHECKING_PAYMENT)
    if facts.slow:
        return View(CustomerStatus.PENDING, M.TAKING_LONGER)
    return View(CustomerStatus.PENDING, _AWAITING_MESSAGE[state])


def _disrupted_message(state: str, facts: Facts) -> str:
    """Why a booking shown confirmed is with support: what the partner did, else the customer's
    cancel that did not complete (asked, the partner holding it still), else a problem of ours."""
    if facts.attention_reason in _DISRUPTED_MESSAGE:
        return _DISRUPTED_MESSAGE[facts.attention_reason]
    if state == S.NEEDS_ATTENTION and facts.cancel_asked:
        return M.DISRUPTED_CANCEL_NOT_DONE
    return M.DISRUPTED


# A payment that ended a booking before the partner heard of it, by why it did.
_PAYMENT_ENDED = {
    MONEY.DECLINED: M.PAYMENT_DECLINED,
    MONEY.METHOD_REFUSED: M.PAYMENT_METHOD_REFUSED,
    MONEY.NEEDS_ACTION: M.PAYMENT_METHOD_REFUSED,
}


def _ended_message(state: str, facts: Facts) -> str:
    """Why it did not go ahead: a booking that never reached the partner ended on its payment."""
    if facts.money is not None and facts.money.code in _PAYMENT_ENDED and state == S.FAILED:
        return _PAYMENT_ENDED[facts.money.code]
    if facts.money is not None and not facts.submitted and state == S.EXPIRED:
        return M.PAYMENT_NOT_CONFIRMED_IN_TIME
    return _ENDED_MESSAGE[state]


def facts_of(booking: Booking) -> Facts:
    """The facts of a booking as it is now; the partner side is asked only where its answer can
    change the view (the unconfirmed ends, with support or not), so the common path pays no query
    for it. The money is what the customer is told already: only the payment side's news changes
    it (`stage`)."""
    ended_as = booking.ended_as
    shown_as = booking.effective_state
    return Facts(
        partner_may_hold=shown_as in _ENDED_MESSAGE and ports.partner_may_hold(booking.pk),
        confirmed_shown=booking.confirmed_shown_at is not None,
        attention_reason=booking.attention_reason,
        slow=booking.status in _AWAITING_MESSAGE
        and timezone.now() - booking.created_at >= settings.CUSTOMER_SLOW_AFTER,
        money=money_shown(booking),
        submitted=booking.sent_to_partner,
        cancel_asked=booking.cancel_asked_at is not None,
        ended_as=ended_as,
    )


def shown(booking: Booking) -> View:
    return View(booking.customer_status, booking.customer_message, money_shown(booking))


def initial(booking: Booking, *, payment: PaymentFacts | None) -> None:
    """Set the view of a new, unsaved booking (its insert stays one statement): the columns'
    defaults say `pending`/`received`; a booking awaiting its payment says so, with its money."""
    if payment is None:
        return
    view = derive(booking.status, Facts(money=money_of(payment), submitted=False))
    booking.customer_status, booking.customer_message = view.status, view.message
    booking.customer_money = view.money.as_json() if view.money else {}


def created(booking: Booking) -> None:
    """Publish a new booking's first view once its insert commits, as `save_row` does a change:
    the customer's "my bookings" learns of it at once, not at a worker's first move of it."""
    live.publish_after_commit(booking)


# Views that automation may still change without the customer doing anything.
_UNSETTLED = frozenset({CustomerStatus.PENDING, CustomerStatus.CANCELLING, CustomerStatus.DISRUPTED})
# Money the provider still holds undecided: it will be charged or released (or, a charge's outcome
# unknown, turn out charged or not); or held when it would not release it, until the hold lapses.
_MONEY_UNSETTLED = frozenset({MONEY.AUTHORIZING, *MONEY_HELD, MONEY.CHARGE_UNKNOWN, MONEY.RELEASE_REFUSED})
# The messages that say our support team has the booking (beside every `disrupted` one).
_SUPPORT_HAS_IT = frozenset({M.WITH_SUPPORT, M.CANCEL_WITH_SUPPORT})
# Money owed back that the card refused: support gives it back, whatever the booking shows.
_MONEY_WITH_SUPPORT = frozenset({MONEY.REFUND_FAILED})


class Awaited(StrEnum):
    """Who the news of a booking still awaits, as the customer is told it."""

    PARTNER = "partner"
    # Our support team: the booking, or money owed back that the card refused.
    SUPPORT = "support"
    # Our own cancel of a booking the partner never heard of: nobody else is asked.
    CANCELLATION = "cancellation"
    # The payment provider: a hold asked for, or money held that is still to be taken or let go
    # (a confirmed booking's capture, a cancelled one's release, a capture whose outcome is not
    # known yet), or a refund still to be made (`refund_due`), whatever the booking shows.
    PAYMENT = "payment"


def awaited(booking: Booking) -> Awaited | None:
    """What the booking waits for, from what the customer is shown; None once nothing is."""
    money_code = booking.customer_money.get("code")
    unsettled_money = money_code in _MONEY_UNSETTLED
    if booking.customer_status in _UNSETTLED and booking.customer_message != M.DISRUPTED_ENDED:
        if booking.customer_status == CustomerStatus.DISRUPTED or booking.customer_message in _SUPPORT_HAS_IT:
            return Awaited.SUPPORT
        if booking.customer_message == M.CHECKING_PAYMENT:
            return Awaited.PAYMENT
        if booking.customer_message == M.CANCELLING_UNSENT:
            return Awaited.PAYMENT if unsettled_money else Awaited.CANCELLATION
        return Awaited.PARTNER
    if unsettled_money or _refund_to_come(booking):
        return Awaited.PAYMENT
    return Awaited.SUPPORT if money_code in _MONEY_WITH_SUPPORT else None


def _refund_to_come(booking: Booking) -> bool:
    """Charged beyond what the booking owes (cancelled, beyond the fee its cancel fixed; not going
    ahead, all of it): the refund is the provider's to make (`refund_due`), so the page keeps
    following it rather than saying nothing is awaited."""
    return refund_due(booking, money_shown(booking)) > 0


def awaiting_news(booking: Booking) -> bool:
    """Whether the customer should keep following the booking (poll, stream) for news."""
    return awaited(booking) is not None


def awaits_partner_confirmation(booking: Booking) -> bool:
    """Whether the customer waits for the partner to confirm: only then do the partner's deadline
    and usual confirmation time tell them what to expect. Not once the partner confirmed (nothing
    is left to meet), nor once our support team has the booking (`with_support`: support settles
    it, and no deadline expires it), nor while a booking that did not go ahead is released, nor
    while its payment is confirmed (the partner is not asked before the money is held)."""
    return (
        booking.customer_status == CustomerStatus.PENDING
        and booking.customer_message != M.RELEASING
        and awaited(booking) == Awaited.PARTNER
    )


def partner_deadline(booking: Booking) -> datetime | None:
    """The partner's deadline to confirm, as the customer is told it (the progress page, the
    API's `deadline`): while they wait for the partner to confirm; None when it does not apply."""
    return booking.deadline if awaits_partner_confirmation(booking) else None


# --- the one writer -------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewChange:
    before: View
    after: View
    status_version: int
    notification: NotificationKind | None

    def as_data(self) -> dict[str, Any]:
        data = {
            "from": self.before.status,
            "to": self.after.status,
            "message": self.after.message,
            "status_version": self.status_version,
        }
        if self.after.money != self.before.money and self.after.money is not None:
            data["money"] = self.after.money.as_json()
        return data

    @property
    def summary(self) -> str:
        money = f", money {self.after.money.code}" if self.after.money else ""
        return (
            f"Customer sees {self.after.status} ({self.after.message}{money}), version {self.status_version}"
        )


# What each status the customer did not just cause is announced as, by mail.
_ANNOUNCED = {
    CustomerStatus.CONFIRMED: NotificationKind.CONFIRMED,
    CustomerStatus.FAILED: NotificationKind.NOT_CONFIRMED,
    CustomerStatus.CANCELLED: NotificationKind.CANCELLED,
    CustomerStatus.DISRUPTED: NotificationKind.DISRUPTED,
}


# Messages announced by mail whenever they are new, whatever the status: the wait has grown long,
# and a cancel did not complete (still `cancelling`, now support's).
_ANNOUNCED_MESSAGES = {
    M.TAKING_LONGER: NotificationKind.TAKING_LONGER,
    M.CANCEL_WITH_SUPPORT: NotificationKind.CANCEL_NOT_DONE,
}


# What happened to the money, announced by mail when it is the only news: the provider took it,
# gave it back, let the hold go, or could not give it back after all (the card refused a refund;
# a hold comes with news of the booking itself), or would not let the hold go, or support paid it
# back another way. A decline, or a hold never asked for, is news of the booking as a rule; when it
# comes alone (the booking ended, or is being cancelled, while its bank was asked) it is mailed on
# its own, or the inbox would end on "We are asking your bank to hold".
_MONEY_ANNOUNCED = frozenset(
    {
        MONEY.CHARGED,
        MONEY.PARTLY_REFUNDED,
        MONEY.REFUNDED,
        MONEY.RELEASED,
        MONEY.LAPSED,
        MONEY.RELEASE_REFUSED,
        MONEY.REFUND_FAILED,
        MONEY.REFUNDED_OUTSIDE,
        MONEY.DECLINED,
        MONEY.METHOD_REFUSED,
        MONEY.NEEDS_ACTION,
        MONEY.NOT_CHARGED,
    }
)


def _announcement(before: View, after: View, actor: Actor | str) -> NotificationKind | None:
    if actor == Actor.CUSTOMER:
        return None  # they caused it, and their page or API answer already shows it
    if (after.status, after.message) == (before.status, before.message):
        money_news = after.money is not None and after.money.code in _MONEY_ANNOUNCED
        return NotificationKind.MONEY if money_news else None
    if after.message in _ANNOUNCED_MESSAGES:
        return _ANNOUNCED_MESSAGES[after.message]
    if after.status != before.status or after.status == CustomerStatus.DISRUPTED:
        return _ANNOUNCED.get(after.status)
    return None


def stage(booking: Booking, *, actor: Actor | str, payment: PaymentFacts | None = None) -> ViewChange | None:
    """Set the view fields of a locked booking to what its facts derive (with the payment side's
    news, when given); None if unchanged. The caller saves `VIEW_FIELDS` and passes the change to
    `save_row`."""
    facts = facts_of(booking)
    if payment is not None:
        facts = replace(facts, money=money_of(payment))
    before, after = shown(booking), derive(booking.status, facts)
    if after == before:
        return None
    booking.customer_status, booking.customer_message = after.status, after.message
    booking.customer_money = after.money.as_json() if after.money else {}
    booking.status_version += 1
    if after.status == CustomerStatus.CONFIRMED and booking.confirmed_shown_at is None:
        booking.confirmed_shown_at = timezone.now()
    return ViewChange(before, after, booking.status_version, _announcement(before, after, actor))


def save_row(
    booking: Booking, event: BookingEvent, change: ViewChange | None, *, money_follows: bool = False
) -> None:
    """Insert the timeline row that carries `change` (and, in the same statement, the
    notification it owes); publish the change and queue its notification after commit.
    `money_follows`: the booking's money is made due by the same move, its step run right after
    the commit (`ports.money_follows`): a status mail whose money that step changes waits
    NOTIFICATION_SETTLE_S (`_settles`)."""
    notification = _notification(booking, change) if change is not None else None
    if notification is None:
        event.save(force_insert=True)
    else:
        assert change is not None
        insert_together(event, notification, savepoint=False)
        settle = money_follows and _settles(booking, change)
        notifications.queue_after_commit(
            notification, delay_s=settings.NOTIFICATION_SETTLE_S if settle else None
        )
    if change is not None:
        live.publish_after_commit(booking)


# Money the step made due by a move still changes: a hold to take or let go, a charge not known yet.
_MONEY_MOVES_NEXT = frozenset({MONEY.AUTHORIZING, *MONEY_HELD, MONEY.CHARGE_UNKNOWN})


def _settles(booking: Booking, change: ViewChange) -> bool:
    """Whether the status mail a change owes waits a moment for the money step made due with it
    (a confirmation's capture; a cancel's release or refund; the refund of a confirmed booking
    that will not go ahead after all): the money change that step makes
    then usually exists when the mail is composed, and is told in it (`notifications.compose`,
    its own mail included) rather than a moment later in a mail of its own that contradicts the
    first one's "holding" or "refunding"."""
    money = change.after.money
    if change.notification in (None, NotificationKind.MONEY) or money is None:
        return False
    return money.code in _MONEY_MOVES_NEXT or refund_due(booking, money) > 0


def _notification(booking: Booking, change: ViewChange) -> Notification | None:
    """The mail a change owes: none if its kind owes none, or if it would tell the customer
    nothing their last mail did not (`_told_already`)."""
    if change.notification is None:
        return None
    money = change.after.money
    notification = Notification(
        booking=booking,
        status_version=change.status_version,
        kind=change.notification,
        message=change.after.message,
        money=money.as_json() if money else {},
        money_words=money_words(booking, money) if money else "",
    )
    return None if _told_already(booking, notification) else notification


def _told_already(booking: Booking, notification: Notification) -> bool:
    """Whether the booking's last mail said everything this one would: the same kind (its
    subject), message and money words. A view shown again after changes that were not mailed
    (`failed`, then `releasing` when a late listing showed a reservation at the partner, then
    `failed` again once it is released; `cancelled`, then with support, then resolved `cancelled`)
    is no news to an inbox whose last word it is already; every change is still mailed at most
    once. A confirmation is never its booking's last mail again (a booking shown confirmed leaves
    it only by news that is mailed, `disrupted` or `cancelled`, or by the customer's own cancel),
    so the hot path's first confirmation asks nothing; any other mail reads the last one (the
    booking is locked: nothing is staged meanwhile)."""
    if notification.kind == NotificationKind.CONFIRMED:
        return False
    last = (
        Notification.objects.filter(booking_id=booking.pk)
        .exclude(state=NotificationState.FAILED)  # never sent: it told the customer nothing
        .order_by("-status_version")
        .values_list("kind", "message", "money_words")
        .first()
    )
    return last == (notification.kind, notification.message, notification.money_words)


def refresh(
    booking: Booking, *, actor: Actor | str, actor_label: str = "", payment: PaymentFacts | None = None
) -> bool:
    """Bring what the customer is shown in line with a locked booking's facts, inside the
    caller's transaction, for a change of facts without a transition (a fence resolved, a
    cancellation verified, the wait grown long, the payment side's news). True if the view
    changed."""
    change = stage(booking, actor=actor, payment=payment)
    if change is None:
        return False
    booking.save(update_fields=[*VIEW_FIELDS, "updated_at"])
    event = new_event(
        booking,
        "customer.view_changed",
        actor=actor,
        actor_label=actor_label,
        summary=change.summary,
        data={"customer_view": change.as_data()},
    )
    save_row(booking, event, change)
    return True
