"""May a support action run on a booking as it is now? The preview and the action's own locked
re-check ask the same questions: first the state machine's, about the transition the action would
run (`can_proceed`), then the few it cannot answer: an unresolved create's fence, what is live at
the partner, the deadline. Each answer is '' (it may run) or why not, in words for support.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from django.utils import timezone
from django_fsm import can_proceed

from bookings.models import Booking
from bookings.states import CANCEL_ACCEPTED, CREATE_UNANSWERED, TERMINAL_STATES, BookingState
from partners.models import LIVE_RESERVATION_STATUSES, Capability, PartnerReservation, ReservationStatus
from partners.services.observations import is_fenced
from payments.models import BEFORE_AUTHORIZATION, Payment, PaymentStatus
from reconciliation.services.support.permissions import CANCEL, COMPENSATE, RESOLVE, RETRY, SYNC

# Outcomes support may resolve a needs_attention booking to, with the transition each runs: the
# state machine's own transitions from needs_attention to an outcome of its choosing. A booking
# support took up after it had ended (`Booking.ended_with_support`) has no choice: it resolves only
# to that end, by `return_to_end` (`resolution`).
RESOLUTIONS = {
    transition.target: transition.name
    for transition in Booking._meta.get_field("status").get_all_transitions(Booking)
    if transition.source == BookingState.NEEDS_ATTENTION
    and isinstance(transition.target, str)
    and (transition.target == BookingState.CONFIRMED or transition.target in TERMINAL_STATES)
}
RETURN_TO_END = "return_to_end"


def all_outcomes() -> list[str]:
    """Every outcome a resolve may name (the console's form, the command's choices): the ones
    above, and any end an ended booking returns to."""
    return [*RESOLUTIONS, *sorted(TERMINAL_STATES - set(RESOLUTIONS))]


class Situation:
    """A booking as a support action finds it: the reservations we hold at its partner (oldest
    first) and whether an earlier create's outcome is still unknown (the fence), each read from
    the database the first time a check asks."""

    def __init__(self, booking: Booking) -> None:
        self.booking = booking

    @cached_property
    def held(self) -> list[PartnerReservation]:
        return list(self.booking.partner_reservations.order_by("first_seen_at", "id"))

    @cached_property
    def fenced(self) -> bool:
        return is_fenced(self.booking)

    @cached_property
    def payment(self) -> Payment | None:
        return Payment.objects.filter(booking_id=self.booking.pk).first()

    @property
    def live(self) -> list[PartnerReservation]:
        return [r for r in self.held if r.status in LIVE_RESERVATION_STATUSES]

    @property
    def uncompensated_live(self) -> list[PartnerReservation]:
        return [r for r in self.live if r.compensation_requested_at is None]

    @property
    def stalled_compensations(self) -> list[PartnerReservation]:
        """Live reservations we decided to cancel earlier whose cancel was never verified."""
        return [r for r in self.live if r.compensation_requested_at is not None and r.compensated_at is None]

    @property
    def unverified_compensations(self) -> list[PartnerReservation]:
        """Reservations we decided to cancel whose cancel was never verified, live or not: of an
        ended booking support has, each is what still holds it up (`observations.may_hold`)."""
        return [r for r in self.held if r.compensation_requested_at is not None and r.compensated_at is None]

    @property
    def live_refs(self) -> str:
        return ", ".join(r.partner_ref for r in self.live)

    @property
    def spent_key(self) -> list[PartnerReservation]:
        """Reservations our one key already made that the partner still knows, dead: a partner that
        honours keys answers a create under it with one of them again, never a new reservation.
        Our creates are the only ones that carry the booking's reference; one the partner lost
        is not among them, since a partner that loses a reservation forgets its key too
        (docs/partner-protocols.md, `vanish_rate`), so the same key creates anew."""
        if not self.booking.partner.has(Capability.IDEMPOTENCY_KEYS):
            return []  # no key is sent: every create makes a new reservation
        dead = (ReservationStatus.CANCELLED, ReservationStatus.REJECTED)
        return [r for r in self.held if r.status in dead and r.client_reference == self.booking.reference]


def _sync(situation: Situation) -> str:
    return ""


def ended_before_support(situation: Situation) -> str:
    """The end the customer's booking had reached before support took it up for what the partner
    still held of it (`Booking.ended_as`), '' for any other booking. Such a booking is support's
    only for that stray: what it may do is cancel it at the partner and verify it, and the
    booking then returns to that end (`return_to_end`), never to another state. Its customer
    sees that end and its money is that end's all along (`Booking.effective_state`), so no
    action may change either."""
    return situation.booking.ended_as


def _ended_refusal(situation: Situation, what: str) -> str:
    end = ended_before_support(situation)
    return (
        f"The customer's booking had ended ({end}) before support took it up for what the partner "
        f"still holds of it: {what}. Compensate cancels what the partner holds; once it is "
        f"verified the booking returns to {end}."
    )


def _unpaid(situation: Situation) -> str:
    """Why a confirmation at the partner now would be a stay nobody paid for ('' when the booking
    takes no payment, or its payment holds money: a hold to capture, or money captured)."""
    payment = situation.payment
    if payment is None or payment.status == PaymentStatus.AUTHORIZED:
        return ""
    if payment.status == PaymentStatus.CAPTURED and payment.net_amount > 0:
        return ""
    if payment.status in BEFORE_AUTHORIZATION:
        return (
            f"Its payment is not held yet ({payment.status}): confirmed now, the stay might be unpaid. "
            "Wait until the hold is known, or cancel it."
        )
    return (
        f"Its payment holds no money ({payment.status}): confirmed now, the stay would be unpaid. "
        "Cancel it, or resolve it to another outcome."
    )


def _retry(situation: Situation) -> str:
    booking = situation.booking
    if ended_before_support(situation):
        return _ended_refusal(situation, "it is not sent to the partner again")
    if situation.fenced or booking.status in CREATE_UNANSWERED:
        return (
            "The outcome of an earlier create is not known yet: never a blind second create. "
            "Force a sync first."
        )
    if booking.status == BookingState.REQUESTED:
        return ""  # its submission message was lost: queue it again
    if not can_proceed(booking.requeue_submission):
        return f"Only a requested or needs-attention booking can be submitted again (it is {booking.status})."
    if situation.live:
        return (
            f"The partner holds {situation.live_refs} for it: a new create would duplicate it. "
            "Sync or resolve instead."
        )
    if booking.deadline <= timezone.now():
        return (
            f"Its confirmation deadline passed ({booking.deadline:%Y-%m-%d %H:%M} UTC); "
            "a worker would only expire it. Resolve or cancel it instead."
        )
    if situation.spent_key:
        # A retry is a create under the same key (Booking.partner_key, derived from the row:
        # there is no fresh one to send), so the partner would hand back this dead reservation,
        # and the booking would end failed after a round trip and two more mails.
        dead = ", ".join(f"{r.partner_ref} ({r.status})" for r in situation.spent_key)
        return (
            f"Our key {booking.partner_key} already made {dead} at the partner: a create with it "
            "would only hand that back, never a new reservation. Cancel it on the customer's "
            "behalf, or resolve it (failed or cancelled), instead."
        )
    return _unpaid(situation)


def _compensate(situation: Situation) -> str:
    booking = situation.booking
    if ended_before_support(situation):
        return ""  # it cancels what the partner holds, and the booking returns to its end
    if not can_proceed(booking.fail):
        hint = " Use cancel for a confirmed booking." if booking.status == BookingState.CONFIRMED else ""
        return f"A {booking.status} booking cannot be failed.{hint}"
    return ""


def _cancel(situation: Situation) -> str:
    booking = situation.booking
    if ended_before_support(situation):
        return _ended_refusal(situation, "there is nothing of the customer's left to cancel")
    if booking.status in CANCEL_ACCEPTED:
        return f"It is already {booking.status}."
    if not can_proceed(booking.request_cancel):
        return f"A {booking.status} booking can no longer be cancelled."
    return ""


def _resolve(situation: Situation) -> str:
    status = situation.booking.status
    if status != BookingState.NEEDS_ATTENTION:
        return f"Only a booking that needs attention can be resolved (it is {status})."
    return ""


_REFUSALS: dict[str, Callable[[Situation], str]] = {
    SYNC: _sync,
    RETRY: _retry,
    COMPENSATE: _compensate,
    CANCEL: _cancel,
    RESOLVE: _resolve,
}


def refusal(action: str, situation: Situation) -> str:
    """Why `action` cannot run on the booking as it is now ('' when it can)."""
    return _REFUSALS[action](situation)


def resolve_outcomes(situation: Situation) -> list[str]:
    """The outcomes a resolve of the booking offers (each with its refusal, if any): the usual
    ones; an ended booking's own end first (the others are there to say why not)."""
    end = ended_before_support(situation)
    return [*([end] if end else []), *(outcome for outcome in RESOLUTIONS if outcome != end)]


def resolution(outcome: str, situation: Situation) -> str:
    """The transition that resolves the booking to `outcome` (allowed by `outcome_refusal`)."""
    return RETURN_TO_END if ended_before_support(situation) else RESOLUTIONS[outcome]


def outcome_refusal(outcome: str, situation: Situation) -> str:
    """Why a needs_attention booking cannot be resolved to `outcome` ('' when it can)."""
    end = ended_before_support(situation)
    if outcome not in all_outcomes():
        return f"Unknown outcome {outcome!r}; choose one of {', '.join(resolve_outcomes(situation))}."
    if end and outcome != end:
        return (
            f"The customer's booking had ended ({end}) before support took it up for what the "
            f"partner still holds of it: it returns to {end}, never to {outcome}."
        )
    if not end and outcome not in RESOLUTIONS:
        return (
            f"Only a booking that had ended {outcome} before support took it up returns to "
            f"{outcome}; choose one of {', '.join(RESOLUTIONS)}."
        )
    if outcome == BookingState.CONFIRMED:
        if not any(r.status == ReservationStatus.CONFIRMED for r in situation.uncompensated_live):
            return "We hold no confirmed reservation from the partner: sync first, or choose another outcome."
        return _unpaid(situation)
    if situation.fenced:
        return "An earlier create's outcome is unknown: the partner may hold a reservation. Sync first."
    if situation.live:
        refs = situation.live_refs
        if end:
            return f"The partner still holds {refs}: compensate instead (cancel it at the partner)."
        return f"The partner still holds {refs}: compensate instead (cancel at the partner and fail)."
    return ""
