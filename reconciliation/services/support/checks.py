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
# state machine's own transitions from needs_attention to an outcome.
RESOLUTIONS = {
    transition.target: transition.name
    for transition in Booking._meta.get_field("status").get_all_transitions(Booking)
    if transition.source == BookingState.NEEDS_ATTENTION
    and (transition.target == BookingState.CONFIRMED or transition.target in TERMINAL_STATES)
}


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
    if not can_proceed(booking.fail):
        hint = " Use cancel for a confirmed booking." if booking.status == BookingState.CONFIRMED else ""
        return f"A {booking.status} booking cannot be failed.{hint}"
    return ""


def _cancel(situation: Situation) -> str:
    booking = situation.booking
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


def outcome_refusal(outcome: str, situation: Situation) -> str:
    """Why a needs_attention booking cannot be resolved to `outcome` ('' when it can)."""
    if outcome not in RESOLUTIONS:
        return f"Unknown outcome {outcome!r}; choose one of {', '.join(RESOLUTIONS)}."
    if outcome == BookingState.CONFIRMED:
        if not any(r.status == ReservationStatus.CONFIRMED for r in situation.uncompensated_live):
            return "We hold no confirmed reservation from the partner: sync first, or choose another outcome."
        return _unpaid(situation)
    if situation.fenced:
        return "An earlier create's outcome is unknown: the partner may hold a reservation. Sync first."
    if situation.live:
        refs = situation.live_refs
        return f"The partner still holds {refs}: compensate instead (cancel at the partner and fail)."
    return ""
