"""The declared ports from the booking core to the partner side and to the payment side.

The core never imports the partner app: it asks this port, after commit, to queue work for a
booking, asks it the one partner fact the customer's view depends on (whether anything may
still be held at the partner), and tells it of every move of a booking (`partner_follows`), in
the move's transaction. `settings.BOOKINGS_PARTNER_PORT` names the implementation (the
partner app's).

Nor does it import the payments app: a booking that pays gets its payment row from the payment
port (inserted with the booking), and every move that decides what a paying booking owes marks
its payment due in the same transaction and asks, after commit, for the money to follow
(`money_follows`). What the customer is told about their money comes the other way: the
payments app hands `customer_view` its facts. `settings.BOOKINGS_PAYMENT_PORT` names it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Protocol
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Model
from django.utils.module_loading import import_string

from bookings.states import OPEN_STATES
from config.redis_client import send_hint

if TYPE_CHECKING:
    from bookings.models import Actor, Booking
    from bookings.payment_facts import PaymentFacts

logger = logging.getLogger(__name__)


class PartnerPort(Protocol):
    """`partner_code` routes the work (one queue per partner) without another database read."""

    def queue_submission(self, booking_id: UUID, partner_code: str) -> None: ...

    def submit_now(self, booking_id: UUID) -> None:
        """Run the booking's submission in this thread, queueing whatever it asks for next."""
        ...

    def queue_cancellation(self, booking_id: UUID, partner_code: str) -> None: ...

    def may_hold(self, booking_id: UUID) -> bool:
        """Whether something can still be live at the partner for the booking: a create whose
        outcome is unknown, or a reservation live or being cancelled and not verified so."""
        ...

    def booking_moved(self, booking: Booking, *, actor: Actor | str, actor_label: str) -> None:
        """In the caller's transaction, on a locked booking just moved: what the partner side keeps
        beside the booking follows the move."""
        ...


class PaymentPort(Protocol):
    def payment_for(self, booking: Booking, *, payment_method: str) -> tuple[Model, PaymentFacts]:
        """A new booking's payment row, unsaved (the caller inserts it with the booking), and
        what the customer is told about it."""
        ...

    def mark_due(self, booking_id: UUID) -> None:
        """In the caller's transaction: the booking's payment must be looked at now (the
        database says so even if the message below is lost)."""
        ...

    def queue_run(self, booking_id: UUID) -> None:
        """Queue a run that brings the booking's money in line with what it owes."""
        ...

    def run_now(self, booking_id: UUID) -> None:
        """That run in this thread, queueing its follow-up if it asks for one."""
        ...

    def owed(self, booking: Booking) -> Decimal | None:
        """What the booking owes now, by the payment side's rule; None while that is not decided.
        No query: it is read from the booking alone."""
        ...

    def money_at_cancel(
        self, booking: Booking, *, ending: str, actor: Actor | str, actor_label: str
    ) -> PaymentFacts | None:
        """In the caller's transaction, on a locked booking about to be cancelled (`ending`): what
        the customer is told of their money with the cancel. Abandoned when no authorization was
        ever opened (none was made or can be in flight, as its run would decide); a charge not
        known yet when a capture is asked and unanswered. None when what they were told stays."""
        ...


@cache
def _port() -> PartnerPort:
    return import_string(settings.BOOKINGS_PARTNER_PORT)()


@cache
def _payments() -> PaymentPort:
    return import_string(settings.BOOKINGS_PAYMENT_PORT)()


def payment_for(booking: Booking, *, payment_method: str) -> tuple[Model, PaymentFacts]:
    return _payments().payment_for(booking, payment_method=payment_method)


def pays(booking: Booking) -> bool:
    """Whether the booking has a payment: the customer is told about its money (no query)."""
    return bool(booking.customer_money)


def payment_run_on_commit(booking_id: UUID) -> None:
    """Queue the booking's payment run once its row is committed (run it then, in a worker
    following next steps inline)."""
    if _inline_here():
        _inline_after_commit(
            lambda: _payments().run_now(booking_id),
            lambda: _payments().queue_run(booking_id),
            "payment run",
            booking_id,
        )
        return
    _after_commit(lambda: _payments().queue_run(booking_id), "payment run", booking_id)


def money_owed(booking: Booking) -> Decimal | None:
    """What the booking owes now (`PaymentPort.owed`): the one rule the payment run follows, so
    that what the customer is told of a refund to come is what that run will refund. No query."""
    return _payments().owed(booking)


def payment_at_cancel(
    booking: Booking, *, ending: str, actor: Actor | str, actor_label: str = ""
) -> PaymentFacts | None:
    """Call on the locked booking, in the transaction that cancels it (`PaymentPort.money_at_cancel`)."""
    return _payments().money_at_cancel(booking, ending=ending, actor=actor, actor_label=actor_label)


def money_follows(booking: Booking) -> None:
    """Call in the transaction that moved a locked booking: if it pays and its new state decides
    what it owes (any state automation no longer drives: confirmed, an end, support's hands),
    its payment is due now, and run after commit (a capture, a void, a refund)."""
    if not money_due(booking):
        return
    _payments().mark_due(booking.pk)
    payment_run_on_commit(booking.pk)


def partner_follows(booking: Booking, *, actor: Actor | str, actor_label: str = "") -> None:
    """Call in the transaction that moved a locked booking (`apply_transition` does, for every
    move): the partner side's records beside it follow, whoever moved it (a stray duplicate's
    case lasts only while its booking is going ahead)."""
    _port().booking_moved(booking, actor=actor, actor_label=actor_label)


def money_due(booking: Booking) -> bool:
    """Whether `money_follows` makes the booking's money due now (no query)."""
    return pays(booking) and booking.status not in OPEN_STATES


def partner_may_hold(booking_id: UUID) -> bool:
    """Read in the caller's transaction: call it on a locked booking."""
    return _port().may_hold(booking_id)


def submit_on_commit(booking_id: UUID, partner_code: str) -> None:
    """Queue the partner submission once the booking row is committed (never before; run it
    then, in a worker following next steps inline)."""
    if _inline_here():
        _inline_after_commit(
            lambda: _port().submit_now(booking_id),
            lambda: _port().queue_submission(booking_id, partner_code),
            "submission",
            booking_id,
        )
        return
    _after_commit(lambda: _port().queue_submission(booking_id, partner_code), "submission", booking_id)


def cancel_on_commit(booking_id: UUID, partner_code: str) -> None:
    _after_commit(lambda: _port().queue_cancellation(booking_id, partner_code), "cancellation", booking_id)


def _after_commit(queue: Callable[[], None], work: str, booking_id: UUID) -> None:
    """Run `queue` after commit without letting it fail the request.

    Committed, the booking is safe: its row is due for the sweeper, which queues the work when
    the broker answers again. Raising here would tell the customer that a stored request failed,
    and waiting on a broker that does not answer would hold the answer (`send_hint`).
    """

    def queue_or_leave_to_sweeper() -> None:
        try:
            send_hint(queue)
        except Exception:  # the broker's errors are the partner side's; any of them leaves it due
            logger.warning(
                "booking %s not queued; the sweeper will queue it",
                work,
                exc_info=True,
                extra={"booking_id": str(booking_id)},
            )

    transaction.on_commit(queue_or_leave_to_sweeper)


# --- next steps inline ---------------------------------------------------------------------------
# How many next steps deep this thread is running (0: it queues them).
_inline_depth: ContextVar[int | None] = ContextVar("bookings_inline_depth", default=None)
MAX_INLINE_DEPTH = 3  # a paying booking's chain: its hold, its submission, its capture


@contextmanager
def next_steps_inline() -> Iterator[None]:
    """Within, a paying booking's next step that this thread's work makes due (the submission
    once its money is held, the capture, void or refund once the partner has answered) runs in
    this thread right after the commit that made it due, instead of as a message for another
    thread: each such message cost a worker a Redis round trip, a claim and the actor's
    middleware, and the booking a wait in a queue. The actors that move bookings use it
    (`BOOKINGS_NEXT_STEPS_INLINE`); the step's row is marked due as before, so a worker that
    dies before or during it leaves it to the sweeper, and a step that fails is queued instead.
    """
    token = _inline_depth.set(0 if settings.BOOKINGS_NEXT_STEPS_INLINE else None)
    try:
        yield
    finally:
        _inline_depth.reset(token)


def _inline_here() -> bool:
    depth = _inline_depth.get()
    return depth is not None and depth < MAX_INLINE_DEPTH


def _inline_after_commit(
    run: Callable[[], None], queue: Callable[[], None], work: str, booking_id: UUID
) -> None:
    """Run `run` after commit, one level deeper; if it fails, queue the work as a message."""

    def run_or_queue() -> None:
        depth = _inline_depth.get() or 0
        token = _inline_depth.set(depth + 1)
        try:
            run()
        except Exception:  # the step is committed due: a message (or the sweeper) runs it again
            logger.warning(
                "booking %s failed inline; queued instead",
                work,
                exc_info=True,
                extra={"booking_id": str(booking_id)},
            )
            _after_commit(queue, work, booking_id)
        finally:
            _inline_depth.reset(token)

    transaction.on_commit(run_or_queue)
