"""The messages support actions owe workers, and what the operator is told about them.

An action that queues partner work (a sync, a submission) writes an `OwedMessage` in its own
transaction and sends the message after commit as a hint (`send_hint`, as `bookings.ports` does
for the customer's bookings): while our Redis is down the hint fails, the action stays committed
and its message owed, and the sweeper sends it once the broker answers again
(`sweeper._send_owed_messages`). So the action is never a 500 after its commit, nothing it asked
for is lost, and the operator is told that it is not queued yet, never that it is.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar
from uuid import UUID

import dramatiq
import redis
from django.db import DatabaseError, transaction
from django.utils import timezone

from bookings.models import Booking
from config.redis_client import send_hint
from partners import messages
from reconciliation.models import OwedMessage

logger = logging.getLogger(__name__)

# Said after "<what> requested", when the message is not on the queue (yet).
NOT_QUEUED = "not queued yet: our queue (Redis) is not answering; it is sent once it answers again."
# How the operator is told of each message an action may owe.
WORDS = {messages.SYNC_BOOKING: "sync", messages.SUBMIT_BOOKING: "submission"}


@dataclass
class Owed:
    """One owed message and whether its hint put it on the queue (None: not tried yet, the
    caller's transaction is still open)."""

    row_id: int
    sent: bool | None = None


def owe(booking: Booking, actor_name: str, *, token: str, hint: bool = True) -> Owed:
    """In the action's transaction: owe `actor_name` for `booking`; with `hint`, send it after
    commit and mark it sent (without, the caller runs the work itself and calls `mark_sent`)."""
    row = OwedMessage.objects.create(booking=booking, actor_name=actor_name, action_token=token)
    owed = Owed(row.pk)
    if hint:
        transaction.on_commit(lambda: _send(owed, actor_name, booking.pk))
    return owed


def _send(owed: Owed, actor_name: str, booking_id: UUID) -> None:
    owed.sent = _hinted(
        lambda: messages.send_for_booking(actor_name, booking_id),
        "support message not queued; the sweeper sends it",
        {"booking_id": str(booking_id), "actor": actor_name},
    )
    if owed.sent:
        mark_sent(owed.row_id)


def _hinted(send: Callable[[], object], not_queued: str, extra: dict[str, str]) -> bool:
    """Whether the broker took `send`'s message. Its errors, whichever, are logged and answered
    False: the rows already say the work is due, and the sweeper queues it."""
    try:
        send_hint(send)
    except Exception:
        logger.warning(not_queued, exc_info=True, extra=extra)
        return False
    return True


def mark_sent(*row_ids: int) -> None:
    """On the queue (or done in this process): no longer owed. A failure here only costs a second
    copy from the sweeper, which the actors take as they take any repeated message. In a savepoint
    of its own: a caller's open transaction goes on whatever became of the mark."""
    try:
        with transaction.atomic():
            OwedMessage.objects.filter(pk__in=row_ids, sent_at__isnull=True).update(sent_at=timezone.now())
    except DatabaseError:
        logger.warning("owed support message sent but not marked so", exc_info=True)


def queue_answers() -> bool:
    """Whether the broker answers now: only for the words (what is owed is sent either way)."""
    try:
        return bool(send_hint(lambda: dramatiq.get_broker().client.ping()))
    except redis.RedisError:
        return False


def waiting(owed: Iterable[Owed | messages.Hint]) -> bool:
    """Whether any of `owed` (or of the hints of work the sweeper owns) is not on the queue: its
    hint failed or, not tried yet (an outer transaction is still open), the broker does not
    answer now."""
    owed = list(owed)
    if any(o.sent is False for o in owed):
        return True
    return any(o.sent is None for o in owed) and not queue_answers()


def hint_on_commit(send: Callable[[], object], *, work: str, booking_id: UUID) -> messages.Hint:
    """After the caller's transaction commits, queue work its rows already mark due (the sweeper
    queues it when our Redis does not take it), as a hint that says whether the broker took it."""
    hint = messages.Hint()

    def send_or_leave_to_sweeper() -> None:
        hint.sent = _hinted(
            send,
            "support work committed but not queued; the sweeper queues it",
            {"booking_id": str(booking_id), "work": work},
        )

    transaction.on_commit(send_or_leave_to_sweeper)
    return hint


class Told(Protocol):
    """An action's result (a dataclass): what it says, and what it says instead when not queued."""

    @property
    def if_not_queued(self) -> str: ...


R = TypeVar("R", bound=Told)


def told(result: R, hints: Iterable[Owed | messages.Hint]) -> R:
    """The result as the operator is told it (every support action's one rule): `if_not_queued`
    instead of its message when work it asked for is not on the queue (`waiting`): the action is
    committed, and the sweeper sends that work once our Redis answers again."""
    if not result.if_not_queued or not waiting(hints):
        return result
    return dataclasses.replace(result, message=result.if_not_queued, queued=False)


def unsent(booking_id: UUID, token: str) -> str:
    """For a double submit: what `token` still owes the booking's queue, in words ('' if nothing)."""
    names = (
        OwedMessage.objects.filter(booking_id=booking_id, action_token=token, sent_at__isnull=True)
        .order_by("id")
        .values_list("actor_name", flat=True)
    )
    what = " and ".join(dict.fromkeys(WORDS.get(name, name) for name in names))
    return f"its {what} is {NOT_QUEUED}" if what else ""
