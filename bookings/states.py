"""Booking states (docs/design.md), the named sets of them, and the customer's vocabulary.

What a customer is told about a booking is decided in `bookings/customer_view.py` alone; this
module holds only its words: the statuses and the catalogue of messages.
"""

from __future__ import annotations

from django.db import models


class BookingState(models.TextChoices):
    AWAITING_PAYMENT = "awaiting_payment", "Awaiting payment"
    REQUESTED = "requested", "Requested"
    SUBMITTING = "submitting", "Submitting"
    PENDING_PARTNER = "pending_partner", "Pending at partner"
    UNKNOWN = "unknown", "Outcome unknown"
    CONFIRMED = "confirmed", "Confirmed"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"
    EXPIRED = "expired", "Expired"
    CANCEL_REQUESTED = "cancel_requested", "Cancel requested"
    CANCELLED = "cancelled", "Cancelled"
    NEEDS_ATTENTION = "needs_attention", "Needs attention"


class CustomerStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    CONFIRMED = "confirmed", "Confirmed"
    FAILED = "failed", "Failed"
    CANCELLING = "cancelling", "Cancelling"
    CANCELLED = "cancelled", "Cancelled"
    DISRUPTED = "disrupted", "Disrupted"


class CustomerMessage(models.TextChoices):
    """The one catalogue of what a customer is told: a stable code, and its words (the API,
    the pages and the mail all render these). What happened to the customer's money is told
    apart, in `CustomerMoney`: these words never speak of charges."""

    CHECKING_PAYMENT = (
        "checking_payment",
        "We are confirming your payment before we send your booking to the partner.",
    )
    RECEIVED = "received", "We received your booking and are sending it to the partner."
    SUBMITTING = "submitting", "We are placing your booking with the partner."
    PARTNER_CONFIRMING = "partner_confirming", "The partner is confirming your booking."
    CHECKING = "checking", "We are checking your booking with the partner."
    TAKING_LONGER = (
        "taking_longer",
        "This is taking longer than usual. We are still waiting for the partner and will tell "
        "you as soon as it answers.",
    )
    WITH_SUPPORT = (
        "with_support",
        "Our support team is reviewing your booking with the partner; we will tell you when it is settled.",
    )
    RELEASING = (
        "releasing",
        "We could not confirm your booking and are making sure the partner releases it. We will "
        "tell you when this is settled.",
    )
    CONFIRMED = "confirmed", "Your booking is confirmed."
    PAYMENT_DECLINED = (
        "payment_declined",
        "Your payment was declined, so we did not send your booking to the partner. Nothing is booked.",
    )
    # The provider refused our request (a payment method it does not know), or the payment awaited
    # a step from the customer we never ask for (the money says which: `method_refused`,
    # `needs_action`).
    PAYMENT_METHOD_REFUSED = (
        "payment_method_refused",
        "Your payment method could not be used, so we did not send your booking to the partner. "
        "Nothing is booked.",
    )
    PAYMENT_NOT_CONFIRMED_IN_TIME = (
        "payment_not_confirmed_in_time",
        "We could not confirm your payment in time, so we did not send your booking to the partner. "
        "Nothing is booked.",
    )
    DECLINED = "declined", "The partner could not accept this booking. Nothing is booked."
    NOT_COMPLETED = "not_completed", "We could not complete this booking. Nothing is booked."
    NOT_CONFIRMED_IN_TIME = (
        "not_confirmed_in_time",
        "The partner did not confirm in time. Nothing is booked.",
    )
    CANCELLING = "cancelling", "We are cancelling your booking with the partner."
    # Cancelled before it was ever sent to the partner: there is nothing to cancel with them.
    CANCELLING_UNSENT = (
        "cancelling_unsent",
        "We are cancelling your booking. It was never sent to the partner, so there is nothing to "
        "cancel with them.",
    )
    # The customer's cancel did not complete (the partner would not cancel it, or our work on it
    # kept failing) before the partner ever confirmed the booking: support has it. Still
    # `cancelling`: asked, not done (`Booking.cancel_with_support`).
    CANCEL_WITH_SUPPORT = (
        "cancel_with_support",
        "The partner has not confirmed your cancellation, so our support team is taking it up with "
        "them. We will tell you when it is settled.",
    )
    CANCELLED = "cancelled", "Your booking is cancelled."
    CANCELLED_UNSENT = (
        "cancelled_unsent",
        "Your booking is cancelled. It was never sent to the partner.",
    )
    DISRUPTED_PARTNER_CANCELLED = (
        "disrupted_partner_cancelled",
        "The partner cancelled your booking after confirming it. Our support team is working "
        "on it; we will tell you what happens next.",
    )
    DISRUPTED_PARTNER_LOST = (
        "disrupted_partner_lost",
        "The partner no longer shows your confirmed booking. Our support team is working on "
        "it; we will tell you what happens next.",
    )
    DISRUPTED_PARTNER_CHANGED = (
        "disrupted_partner_changed",
        "The partner changed your booking after confirming it. Our support team is checking "
        "the change; we will tell you what happens next.",
    )
    # A confirmed booking whose customer's cancel did not complete (`Booking.cancel_asked_at`):
    # support has it; the partner holds it still, as far as we know.
    DISRUPTED_CANCEL_NOT_DONE = (
        "disrupted_cancel_not_done",
        "The partner has not confirmed the cancellation of your confirmed booking, so our support "
        "team is taking it up with them. We will tell you what happens next.",
    )
    DISRUPTED = (
        "disrupted",
        "There is a problem with your confirmed booking that our support team is sorting out. "
        "We will tell you what happens next.",
    )
    DISRUPTED_ENDED = (
        "disrupted_ended",
        "The partner no longer holds your booking after confirming it, so it will not go ahead. "
        "You can choose other dates or another offer.",
    )


class CustomerMoney(models.TextChoices):
    """What happened to the customer's money, as the payment provider's truth says it (the
    payments app tells `customer_view` through the payment facts). The words take the amounts
    the customer was shown with them: `{amount}` (asked for), `{charging}` (what a charge in doubt
    asked to take of it), `{charged}`, `{refunded}`,
    `{paid}` (charged less what went back: refunded, or paid back another way), `{lapses}` (when
    a hold the provider would not release lapses),
    `{refund_failed}` (a refund that could not be made: refused by the card after it was made, or
    by the provider every time it was asked; still owed) and `{refunded_outside}`
    (of that, what support paid back another way than to the card), each with its currency."""

    AUTHORIZING = "authorizing", "We are asking your bank to hold {amount}; you are not charged yet."
    HELD = "held", "We are holding {amount} on your card; you are not charged yet."
    # The provider placed the hold in its review queue (an elevated risk): the customer hears it
    # from us, not as a surprise. Nothing here waits on the review, so no more is promised.
    HELD_IN_REVIEW = (
        "held_in_review",
        "We are holding {amount} on your card, and our payment provider has placed the payment in "
        "review; you are not charged yet.",
    )
    # A charge of the hold was asked for and its answer was lost (a timeout): the provider may or
    # may not have taken the money, so neither "held" nor "charged" is true to say. Of the whole
    # hold: a charge of part of it (a cancel's fee) is `CHARGE_UNKNOWN_OF_PART`.
    CHARGE_UNKNOWN = (
        "charge_unknown",
        "We asked for the {amount} held on your card to be charged and do not know yet whether it was.",
    )
    CHARGED = "charged", "We charged {charged} to your card."
    PARTLY_REFUNDED = (
        "partly_refunded",
        "We charged {charged} and refunded {refunded} of it to your card: you paid {paid}.",
    )
    REFUNDED = "refunded", "We refunded the {charged} we charged to your card: you paid nothing."
    # A refund that could not be made (the provider made it and the card refused it, or it was
    # cancelled; or the provider refused it every time it was asked): owed to the customer still,
    # and support's to give back (automation never asks again).
    REFUND_FAILED = (
        "refund_failed",
        "A refund to your card could not be made. We still owe you "
        "{refund_failed}; our support team will be in touch to give it back to you.",
    )
    # The card refused a refund and support paid all it owed back another way (a bank transfer):
    # nothing is owed any more, and the money did not go to the card, so not `refunded`.
    REFUNDED_OUTSIDE = (
        "refunded_outside",
        "A refund to your card could not be made, so we paid the {refunded_outside} back to you "
        "another way instead: you paid {paid}.",
    )
    RELEASED = "released", "We released the {amount} we were holding on your card: you were not charged."
    # The hold ended at the provider (it lapsed): nobody released it, so not `released`.
    LAPSED = "lapsed", "The hold of {amount} on your card has ended: you were not charged."
    # Nothing is owed and the provider refused to release the hold every time we asked: nothing is
    # being released by us. The hold ends at the provider when it lapses (`{lapses}`: the
    # provider's `authorization_expires_at`), unless our support team releases it sooner.
    RELEASE_REFUSED = (
        "release_refused",
        "We could not release the {amount} held on your card: our payment provider refused it. The "
        "hold ends by {lapses} at the latest, and you will not be charged.",
    )
    DECLINED = "declined", "Your bank declined the payment of {amount}: you were not charged."
    # The provider refused the request itself (it does not know the payment method): the bank
    # was never asked, so it is not told as the bank's decline.
    METHOD_REFUSED = (
        "method_refused",
        "Your payment method could not be used for {amount}, so your bank was not asked: "
        "you were not charged.",
    )
    # The provider answered neither held nor declined: the payment awaited a step from the customer
    # (their bank's authentication, say) that we never ask for. The bank may have been asked.
    NEEDS_ACTION = (
        "needs_action",
        "Your payment of {amount} needed a further step from you that we could not ask for, so it "
        "was not made: you were not charged.",
    )
    NOT_CHARGED = "not_charged", "You were not charged."


# `release_refused` when the provider did not say when the hold lapses.
RELEASE_REFUSED_NO_LAPSE = (
    "We could not release the {amount} held on your card: our payment provider refused it. The "
    "hold ends when it lapses, and you will not be charged."
)


# `charge_unknown` of a charge asked for part of the hold (a cancel's fee): no more than that part
# can be taken, and the rest of the hold is not charged whatever the answer (a capture of part of
# a hold lets the rest go), so never "the {amount} held ... to be charged".
CHARGE_UNKNOWN_OF_PART = (
    "We asked for {charging} of the {amount} held on your card to be charged and do not know yet "
    "whether it was; the rest of the hold is not charged."
)


# `refund_failed` once support paid part of it back another way: what was paid, and what is owed
# still (the code stays `refund_failed`: money is owed, support's to settle).
REFUND_FAILED_PARTLY_PAID_BACK = (
    "A refund to your card could not be made. We paid {refunded_outside} of it back to you another "
    "way and still owe you {refund_failed}; our support team will be in touch to give it back to you."
)


def did_not_go_ahead(*, customer_status: str, customer_message: str) -> bool:
    """Whether what the customer is shown says their booking did not go ahead, nothing booked:
    `failed`, or confirmed once and let go by the partner since (`disrupted_ended`). The pages
    then offer the stay again, and a quote whose booking it was is told so (it books once)."""
    return customer_status == CustomerStatus.FAILED or customer_message == CustomerMessage.DISRUPTED_ENDED


# The named state sets: the transitions in bookings/models.py take their sources from these, and
# every other module asks for a set by name (or asks the machine, `can_proceed`), never spells
# one out. tests/bookings/test_state_graph.py checks each against the graph.

# Partner truth can still settle these: the partner confirms or refuses, or the deadline passes.
AWAITING_PARTNER = frozenset(
    {BookingState.REQUESTED, BookingState.SUBMITTING, BookingState.UNKNOWN, BookingState.PENDING_PARTNER}
)
# Not settled yet: the deadline expires these (a booking whose payment is still being held, too).
EXPIRABLE = AWAITING_PARTNER | {BookingState.AWAITING_PAYMENT}
# Going ahead as booked: confirmed, or still on its way (a booking awaiting its payment holds
# nothing at the partner yet). One of these keeps a reservation of its own whatever becomes of a
# duplicate of it (partners.decisions.stray_left_to_a_case).
GOING_AHEAD = EXPIRABLE | {BookingState.CONFIRMED}
# Not acknowledged by the partner yet: a pending reservation moves these to pending_partner.
UNACKNOWLEDGED = AWAITING_PARTNER - {BookingState.PENDING_PARTNER}
# A create may be out with no answer: a worker holds the submission, or its outcome is unknown.
CREATE_UNANSWERED = frozenset({BookingState.SUBMITTING, BookingState.UNKNOWN})
# Settled by the partner's truth or by support: confirmed or failed from here.
SETTLEABLE = AWAITING_PARTNER | {BookingState.NEEDS_ATTENTION}
# States from which the customer's cancel is accepted.
CANCELLABLE_STATES = SETTLEABLE | {BookingState.CONFIRMED, BookingState.AWAITING_PAYMENT}
# The disrupted views of a booking the partner took away after confirming it (cancelled it, or no
# longer shows it): nothing is left to cancel with them.
PARTNER_LET_GO = frozenset(
    {CustomerMessage.DISRUPTED_PARTNER_CANCELLED, CustomerMessage.DISRUPTED_PARTNER_LOST}
)
# A cancel was accepted: under way, or done.
CANCEL_ACCEPTED = frozenset({BookingState.CANCEL_REQUESTED, BookingState.CANCELLED})
# Automation still owes these an outcome (the sweeper watches them).
OPEN_STATES = EXPIRABLE | {BookingState.CANCEL_REQUESTED}
# Outcomes: only support moves a booking out of these again.
TERMINAL_STATES = frozenset(
    {BookingState.REJECTED, BookingState.FAILED, BookingState.EXPIRED, BookingState.CANCELLED}
)
